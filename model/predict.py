"""`model predict`: a checkpoint (or its ONNX export) over new scans, with the alarm decision per class.

Input: a folder of JPEGs (any names and sizes; a raw download's root is read through its JPEGImage/),
a `pipeline build-shards` folder, or a manifest (.parquet; images under its raw_root or --raw). Each scan
is decoded by the shard loaders' own function (`model.pixels.load_pixels`: Pillow draft decoding, square
resize to the checkpoint's test size) and normalised by theirs, and the torch path scores it through
`model.inference.forward`, so predict and `model eval` give the same scores for the same image.
Workers decode in parallel (every core by default) while the main process scores on the GPU or the CPU;
a scan that cannot be read or decoded becomes a row with its status (`unreadable`, `empty`, `not_jpeg`,
`truncated`, `corrupt`, `too_large`) and null scores, never a crash.
predictions.parquet: id (a file's name without its extension, or the shard's sample id), file, status,
error, score_<class> (fused), alarm_<class> (score >= the class's threshold; null without one).
Row order: the input's (files sorted by name, manifest rows in order); for shards, the order the workers
take turns in (deterministic for the same --workers).
"""

import functools
import heapq
import itertools
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from base.atomic import writes_folder
from base.distribute import die_with_parent
from base.errors import MissingInputError, UsageError
from base.vocabulary import CLASSES
from model.alarms import alarms, checkpoint_thresholds, read_thresholds
from model.data import read_shards, sample_filter, split_info
from model.inference import FUSED, forward, load_model, progress_bar, resolve_device
from model.pixels import DECODE_ERRORS, load_pixels
from pipeline.layout import IMAGE_DIR, JPEG_SUFFIXES
from pipeline.schema import check_manifest
from pipeline.validate import inspect_bytes, printable

SPLITS = ("all", "train", "val", "test")
ROW_GROUP = 8192


class ScanFile(NamedTuple):
    id: str
    path: str


class ShardFile(NamedTuple):
    url: str
    stored: int  # samples the tar holds (read_shards checks it)
    keep: object  # sample-key filter of the split, or None


# --- what to read ---


def scan_units(path: str | Path, *, split: str = "all", val_fraction: float = 0.0, raw=None
               ) -> tuple[list, int]:
    """(units the workers share: one per file or shard tar, number of scans) for any accepted input."""
    path = Path(path)
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if (path / "_info.json").is_file():
        return shard_units(path, split, val_fraction)
    if path.is_file() and path.suffix == ".parquet":
        units = manifest_units(path, split, val_fraction, raw)
        return units, len(units)
    if path.is_dir():
        if split != "all":
            raise UsageError(f"{path}: a folder of JPEGs has no splits; --split is for shards and manifests")
        units = folder_units(path / IMAGE_DIR if (path / IMAGE_DIR).is_dir() else path)
        return units, len(units)
    raise MissingInputError(f"{path}: not a folder of JPEGs, a build-shards folder or a manifest .parquet")


def _is_folder(entry: os.DirEntry) -> bool:
    """A folder; a name we cannot stat (a symlink loop) is not, so it becomes an `unreadable` row."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def folder_units(folder: Path) -> list[ScanFile]:
    names = sorted(e.name for e in os.scandir(folder) if e.name.lower().endswith(JPEG_SUFFIXES)
                   and not _is_folder(e))
    if not names:
        raise UsageError(f"{folder}: no .jpg / .jpeg file in it")
    return [ScanFile(printable(Path(n).stem), str(folder / n)) for n in names]


def shard_units(shards: Path, split: str, val_fraction: float) -> tuple[list[ShardFile], int]:
    units, total = [], 0
    for part in (("train", "test") if split == "all" else (split,)):
        info = split_info(shards, part, val_fraction)
        keep = sample_filter(part, val_fraction)
        for name, stored, count in zip(info["shards"], info["stored"], info["counts"], strict=True):
            if count:
                units.append(ShardFile(str(shards / name), stored, keep))
                total += count
    return units, total


def manifest_units(manifest: Path, split: str, val_fraction: float, raw) -> list[ScanFile]:
    import pyarrow.parquet as pq

    from model.data import in_validation
    from pipeline.shards import manifest_raw_root

    check_manifest(manifest)
    root = Path(raw) if raw else manifest_raw_root(manifest)
    table = pq.read_table(manifest, columns=["id", "path", "split"]).to_pydict()
    rows = zip(table["id"], table["path"], table["split"], strict=True)
    if split == "val":
        rows = ((i, p, s) for i, p, s in rows if s == "train" and in_validation(i, val_fraction))
    elif split != "all":
        rows = ((i, p, s) for i, p, s in rows if s == split
                and not (split == "train" and in_validation(i, val_fraction)))
    return [ScanFile(i, str(root / p)) for i, p, _ in rows if p]  # a label row without a file: no scan


# --- decoding, in the workers ---


def scan_status(data: bytes) -> str:
    """The status of bytes the decoder refused, as `pipeline ingest` would record it (one classifier:
    pipeline.validate.inspect_bytes); 'corrupt' where only the full-size decode fails."""
    status = inspect_bytes(data)["status"]
    return "corrupt" if status == "ok" else status


def load_scan(image_id: str, file: str, data: bytes | None, size: int, read_error=None) -> dict:
    """One scan as the test transform sees it (uint8 [3, size, size]), or its status and error."""
    scan = {"id": image_id, "file": file, "status": "ok", "error": None, "image": None}
    if data is None:
        return {**scan, "status": "unreadable", "error": f"{file}: {read_error}"}
    try:
        pixels = load_pixels(data, size)
    except DECODE_ERRORS as exc:
        message = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)) or type(exc).__name__
        return {**scan, "status": scan_status(data), "error": f"{file}: {message}"}
    return {**scan, "image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))}


def read_unit(unit):
    """(id, file, bytes or None, read error) of each scan of a unit."""
    if isinstance(unit, ScanFile):
        try:
            yield unit.id, printable(unit.path), Path(unit.path).read_bytes(), None
        except OSError as exc:
            yield unit.id, printable(unit.path), None, exc.strerror or exc
        return
    name = Path(unit.url).name
    for sample in read_shards([(unit.url, unit.stored)], unit.keep):
        yield sample["__key__"], f"{name}:{sample['__key__']}", sample.get("jpg", b""), None


class ScanStream(torch.utils.data.IterableDataset):
    """Units dealt to the workers in blocks of `block` (worker w takes blocks w, w + n, ...), each yielding
    its scans decoded (or with their status). With one scan per unit and block = the batch size, the
    DataLoader, which takes a batch from each worker in turn, returns the scans in input order."""

    def __init__(self, units: list, size: int, block: int = 1):
        self.units, self.size, self.block = units, size, block

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        wid, n = (worker.id, worker.num_workers) if worker else (0, 1)
        mine = (u for k, u in enumerate(self.units) if (k // self.block) % n == wid)
        for unit in mine:
            for image_id, file, data, error in read_unit(unit):
                yield load_scan(image_id, file, data, self.size, error)


class ScanBatch(NamedTuple):
    rows: list[dict]  # id, file, status, error of every scan
    images: torch.Tensor  # uint8 [k, 3, S, S] of the k decoded ones
    decoded: list[int]  # their positions in rows


def collate_scans(scans: list[dict]) -> ScanBatch:
    decoded = [i for i, s in enumerate(scans) if s["image"] is not None]
    images = torch.stack([scans[i]["image"] for i in decoded]) if decoded else torch.zeros(0, 3, 1, 1)
    rows = [{k: s[k] for k in ("id", "file", "status", "error")} for s in scans]
    return ScanBatch(rows, images.to(torch.uint8), decoded)


# --- scoring ---


class TorchScorer:
    """A checkpoint's model: uint8 images -> (fused scores, the stages' CAMs), through inference.forward."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.has_cams = True

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
        scores, cams = forward(self.model, images, self.device, amp=self.device.type == "cuda")
        return scores[FUSED].numpy(), [c.numpy() for c in cams]


@dataclass
class TopScans:
    """The `limit` highest-scoring scans (by their top class's score) with their input and CAMs."""

    limit: int
    heap: list = field(default_factory=list)
    order: itertools.count = field(default_factory=itertools.count)

    def offer(self, batch: ScanBatch, scores: np.ndarray, cams: list[np.ndarray] | None) -> None:
        for j, i in enumerate(batch.decoded):
            best = float(scores[j].max())
            if self.limit and (len(self.heap) < self.limit or best > self.heap[0][0]):
                scan = {"id": batch.rows[i]["id"], "scores": scores[j], "image": batch.images[j].numpy(),
                        "cams": [c[j] for c in cams]}
                item = (best, -next(self.order), scan)
                (heapq.heappush if len(self.heap) < self.limit else heapq.heapreplace)(self.heap, item)

    def ranked(self) -> list[dict]:
        return [scan for *_, scan in sorted(self.heap, key=lambda t: (-t[0], -t[1]))]


class PredictionWriter:
    """predictions.parquet, written as it streams (row groups of ROW_GROUP scans), atomically."""

    def __init__(self, path: Path, thresholds: dict | None):
        import pyarrow as pa

        self.path, self.thresholds, self.pending, self.counts = path, thresholds or {}, [], {}
        self.schema = pa.schema([("id", pa.string()), ("file", pa.string()), ("status", pa.string()),
                                 ("error", pa.string()), *[(f"score_{c}", pa.float32()) for c in CLASSES],
                                 *[(f"alarm_{c}", pa.bool_()) for c in CLASSES]])
        self.alarm_counts = dict.fromkeys(CLASSES, 0)

    def add(self, batch: ScanBatch, scores: np.ndarray) -> None:
        fired = alarms(scores, self.thresholds)
        rows = [{**r, **{f"score_{c}": None for c in CLASSES}, **{f"alarm_{c}": None for c in CLASSES}}
                for r in batch.rows]
        for j, i in enumerate(batch.decoded):
            rows[i].update({f"score_{c}": float(scores[j, k]) for k, c in enumerate(CLASSES)})
            rows[i].update({f"alarm_{c}": bool(fired[j, k]) for k, c in enumerate(CLASSES)
                            if self.thresholds.get(c) is not None})
        for k, c in enumerate(CLASSES):
            self.alarm_counts[c] += int(fired[:, k].sum())
        for r in batch.rows:
            self.counts[r["status"]] = self.counts.get(r["status"], 0) + 1
        self.pending += rows

    def flush(self, writer, final: bool = False) -> None:
        import pyarrow as pa

        while len(self.pending) >= ROW_GROUP or (final and self.pending):
            chunk, self.pending = self.pending[:ROW_GROUP], self.pending[ROW_GROUP:]
            writer.write_table(pa.Table.from_pylist(chunk, schema=self.schema))


@writes_folder("out", "model predict", ours=("predictions.parquet",))
def predict_scans(units: list, total: int, scorer, size: int, out: str | Path, *, thresholds: dict | None,
                  batch_size: int = 32, workers: int | None = None, cams: int = 0) -> dict:
    """Score every scan of `units` into <out>/predictions.parquet (and cam_*.png for the `cams` highest);
    returns counts per status, alarms per class, images per second and the files written."""
    import pyarrow.parquet as pq

    from base.atomic import atomic_path

    out = Path(out)
    workers = min(os.cpu_count() or 1, len(units)) if workers is None else min(workers, len(units))
    block = batch_size if units and isinstance(units[0], ScanFile) else 1
    loader = torch.utils.data.DataLoader(ScanStream(units, size, block), batch_size=batch_size,
                                         num_workers=workers, collate_fn=collate_scans,
                                         prefetch_factor=4 if workers else None,
                                         worker_init_fn=functools.partial(die_with_parent, os.getpid()))
    results, top = PredictionWriter(out / "predictions.parquet", thresholds), TopScans(cams)
    start = time.perf_counter()
    with (atomic_path(results.path) as tmp, pq.ParquetWriter(tmp, results.schema) as writer,
          progress_bar(total=total, desc="predict", unit="img") as bar):
        for batch in loader:
            scores, maps = scorer(batch.images) if batch.decoded else (np.zeros((0, len(CLASSES))), None)
            results.add(batch, scores)
            results.flush(writer)
            top.offer(batch, scores, maps)
            bar.update(len(batch.rows))
        results.flush(writer, final=True)
    seconds = time.perf_counter() - start
    scans = sum(results.counts.values())
    files = [results.path] + [plot_heatmap(s, out / f"cam_{k:02d}_{s['id']}.png", thresholds or {})
                              for k, s in enumerate(top.ranked())]
    return {"scans": scans, "status": results.counts, "alarms": results.alarm_counts,
            "thresholds": thresholds, "seconds": seconds, "images_per_s": scans / max(seconds, 1e-9),
            "files": [str(f) for f in files]}


def plot_heatmap(scan: dict, path: Path, thresholds: dict) -> Path:
    """The scan as the network saw it, with its top class's CAM (the stages' mean, upsampled) over it."""
    import torch.nn.functional as F

    from model.report import pyplot, save_figure

    plt = pyplot()
    image = scan["image"].transpose(1, 2, 0)
    c = int(np.argmax(scan["scores"]))
    h, w = image.shape[:2]
    maps = [F.interpolate(torch.from_numpy(np.asarray(m[c], np.float32))[None, None], size=(h, w),
                          mode="bilinear") for m in scan["cams"]]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image)
    ax.imshow(torch.stack(maps).mean(0)[0, 0].numpy(), cmap="jet", alpha=0.45)
    limit = thresholds.get(CLASSES[c])
    alarm = "" if limit is None else (" ALARM" if scan["scores"][c] >= limit else " below threshold")
    ax.set_title(f"{scan['id']}: {CLASSES[c]} {scan['scores'][c]:.3f}{alarm}")
    ax.axis("off")
    save_figure(fig, path)
    return path


# --- the command ---


def predict_command(input_path, out, *, checkpoint=None, onnx=None, thresholds=None, split: str = "all",
                    raw=None, cams: int = 0, batch_size: int = 32, workers: int | None = None,
                    device: str = "auto", trust_checkpoint: bool = False) -> dict:
    """`model predict`: a checkpoint (torch) or an ONNX export (onnxruntime) over `input_path`; thresholds
    from --thresholds, else the ones found for the checkpoint (model/alarms.py) or held by the ONNX file."""
    if (checkpoint is None) == (onnx is None):
        raise UsageError("pass exactly one of --checkpoint and --onnx")
    scorer, size, val_fraction, (found, source) = load_scorer(checkpoint, onnx, device, trust_checkpoint,
                                                              thresholds)
    if cams and not scorer.has_cams:
        raise UsageError(f"{onnx}: exported without CAMs; rerun `model export --cams` for --cams")
    units, total = scan_units(input_path, split=split, val_fraction=val_fraction, raw=raw)
    summary = predict_scans(units, total, scorer, size, out, thresholds=found, batch_size=batch_size,
                            workers=workers, cams=cams)
    return {**summary, "thresholds_from": source}


def load_scorer(checkpoint, onnx, device: str, trust: bool, thresholds=None) -> tuple:
    """(scorer, input size, the run's val fraction, (thresholds or None, where they come from))."""
    if onnx is not None:
        from model.export import OnnxScorer

        scorer = OnnxScorer(onnx)
        held = (scorer.thresholds, f"{onnx} (metadata)") if scorer.thresholds else (None, None)
        found = (read_thresholds(thresholds), str(thresholds)) if thresholds else held
        return scorer, scorer.size, scorer.val_fraction, found
    device = resolve_device(device)
    model, tcfg, ckpt = load_model(checkpoint, device, trust=trust)
    found = checkpoint_thresholds(checkpoint, ckpt["epoch"], thresholds)
    return TorchScorer(model, device), tcfg.test_size, tcfg.val_fraction, found  # eval's val split


def format_summary(summary: dict) -> str:
    """What `model predict` prints: scans per status, alarms per class, where the thresholds come from."""
    status = ", ".join(f"{n} {k}" for k, n in sorted(summary["status"].items()))
    lines = [f"predict: {summary['scans']} scans ({status}) at {summary['images_per_s']:.0f} img/s"]
    if summary["thresholds"] is None:
        lines.append("no alarm thresholds for this model: alarm_* columns are empty; run `model eval` "
                     "(thresholds.json beside its report) or pass --thresholds FILE")
    else:
        per_class = ", ".join(f"{c} {'-' if summary['thresholds'].get(c) is None else summary['alarms'][c]}"
                              for c in CLASSES)
        lines.append(f"alarms: {per_class} (thresholds: {summary['thresholds_from']}; -: none for the class)")
    return "\n".join(lines + ["written: " + ", ".join(summary["files"])])
