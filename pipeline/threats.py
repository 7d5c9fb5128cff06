"""`pipeline threats`: a threat library of transmission layers, cut from the boxed threats of positive scans.

A collection `<out>/<name>/` holds one layer per usable box (`layers/<scan id>-<k>.png`, k the box's
place in the XML) and `index.parquet` (LIBRARY_SCHEMA, sorted by threat id). A layer is a threat on an
empty belt as the scanner would see it: an 8-bit RGB image whose channels are transmissions (255: the
ray passes untouched), so compositing it multiplies it into a scan (physics.composite) and a layer
over white is the layer itself.

Cutting one box (`extract_layer`): the box and a ring of surroundings around it (RING of the box's
longer side, at least MIN_RING pixels) are taken to the log domain (-ln T per channel); the bag behind
the threat is a quadratic surface fitted to the ring (least squares, refitted without the ring pixels
that are off by more than 2.5 robust sigmas: other objects, or the threat overrunning its box); the
layer is the box divided by that surface (physics.divide_out), with what is left within the ring's
noise (1-2 sigma, a soft knee) set to transparent, so the old bag's clutter is not pasted again. A crop
is dropped, and counted by reason, when its ring is too cluttered to predict the bag behind the threat
(robust sigma over MAX_CLUTTER, or more than MAX_OUTLIERS of the ring off the surface), when the box is
smaller than MIN_SIDE, when too little ring lies inside the image, or when the layer absorbs almost
nothing (the threat did not separate from the bag).

Which scans: every id with an `Annotation/<id>.xml` under `--raw`, except TIP scans (ids starting with
TIP_PREFIX). `split='train'` (the default) or `'test'` keeps the ids of that split in the raw folder's
manifest (ingest's, with our split) and skips the rest; `'all'` keeps every one (a folder of a user's
threat scans on an empty belt, with no labels), and records each id's split where a manifest gives one.
`pipeline tip` never uses a layer whose split is 'test'.

The collection's format is pipeline/library.py's; pipeline/xray/alone.py writes the same format from
the generator (`pipeline synth --threats`).

Resumable like every stage: ids are cut in chunks, one task per chunk; a chunk's marker JSON (its
rows and drop counts, keyed by a hash of its ids and the settings) is written last, so a rerun skips
finished chunks; the index and `summary.json` are rebuilt from the markers at the end.
"""

import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from base.atomic import writes_folder
from base.distribute import Chunk, mark_done, run_chunks
from base.errors import MissingInputError, UsageError
from base.hashing import content_key
from base.vocabulary import ALL_CLASSES
from pipeline.layout import ANNOTATION_DIR, IMAGE_DIR, TIP_PREFIX, read_annotation
from pipeline.library import (
    claim_collection,
    finish_collection,
    library_row,
    marker_path,
    threat_id,
    write_layer,
)
from pipeline.schema import MANIFEST_SCHEMA, SUBSET_SCHEMA, USABLE_STATUSES, check_manifest
from pipeline.xray import physics

FORMAT = 1
"""Bump when a layer's pixels change for the same input: chunk keys hold it."""
RING = 0.25
MIN_RING = 6
MIN_SIDE = 8
MIN_RING_PIXELS = 200
MAX_CLUTTER = 0.2
"""Robust sigma of the ring around the fitted bag, in -ln T units (about 20% in transmission)."""
MAX_OUTLIERS = 0.35
MIN_SIGNAL = 0.15
"""A layer's 99th-percentile attenuation (-ln T, mean of channels) must reach this."""
OUTLIER_SIGMAS = 2.5
SPLIT_CHOICES = ("train", "test", "all")



# ---------------------------------------------------------------- one crop


def _log(pixels: np.ndarray) -> np.ndarray:
    """-ln T per channel of 8-bit pixels (0 is read as half a grey level: a finite attenuation)."""
    return -np.log(np.maximum(pixels.astype(np.float32), 0.5) * np.float32(1 / 255))


def _design(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys], axis=1)


def estimate_background(window: np.ndarray, inner: tuple[int, int, int, int]):
    """The bag behind the box `inner` (x0, y0, x1, y1 in window pixels) of an 8-bit (h, w, 3) window, from
    the window's pixels outside the box: (background as -ln T over the whole window (h, w, 3), robust
    sigma of the ring around it, share of ring pixels off the fit, ring pixel count)."""
    h, w = window.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = np.float32(1 / max(h, w))
    xs, ys = (xs - w / 2) * scale, (ys - h / 2) * scale
    x0, y0, x1, y1 = inner
    ring = np.ones((h, w), dtype=bool)
    ring[y0:y1, x0:x1] = False
    a = _log(window)
    design = _design(xs[ring], ys[ring])
    target = a[ring]  # (n, 3)
    keep = np.ones(len(target), dtype=bool)
    for _ in range(3):  # fit, drop what lies far off (other objects, threat overrunning its box), refit
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        residual = (target - design @ coef).mean(axis=1)
        sigma = 1.4826 * float(np.median(np.abs(residual[keep] - np.median(residual[keep])))) + 1e-3
        new_keep = np.abs(residual) <= OUTLIER_SIGMAS * max(sigma, 0.02)
        if new_keep.sum() < design.shape[1] * 4 or (new_keep == keep).all():
            break
        keep = new_keep
    full = _design(xs.ravel(), ys.ravel()) @ coef
    background = np.maximum(full.reshape(h, w, 3), 0.0)
    return background, sigma, 1.0 - float(keep.mean()), int(ring.sum())


def extract_layer(scan: np.ndarray, box) -> tuple[np.ndarray | None, dict]:
    """The transmission layer (8-bit (h, w, 3), 255 = transparent) of the threat in `box` (xmin, ymin,
    xmax, ymax floats) of an 8-bit RGB scan, and facts: {'clutter', 'outliers', 'signal'}; or None and
    {'drop': reason} when the crop cannot be separated (see the module doc)."""
    H, W = scan.shape[:2]
    x0, y0 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
    x1, y1 = min(math.ceil(box[2]), W), min(math.ceil(box[3]), H)
    if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
        return None, {"drop": "small"}
    ring = max(MIN_RING, round(RING * max(x1 - x0, y1 - y0)))
    wx0, wy0, wx1, wy1 = max(x0 - ring, 0), max(y0 - ring, 0), min(x1 + ring, W), min(y1 + ring, H)
    window = scan[wy0:wy1, wx0:wx1]
    inner = (x0 - wx0, y0 - wy0, x1 - wx0, y1 - wy0)
    needed = max(MIN_RING_PIXELS, 0.5 * ((x1 - x0 + 2 * ring) * (y1 - y0 + 2 * ring) - (x1 - x0) * (y1 - y0)))
    if window.shape[0] * window.shape[1] - (x1 - x0) * (y1 - y0) < needed:
        return None, {"drop": "edge"}
    background, sigma, outliers, _ = estimate_background(window, inner)
    facts = {"clutter": round(sigma, 4), "outliers": round(outliers, 3)}
    if sigma > MAX_CLUTTER or outliers > MAX_OUTLIERS:
        return None, {"drop": "cluttered", **facts}
    crop = window[inner[1] : inner[3], inner[0] : inner[2]]
    behind = background[inner[1] : inner[3], inner[0] : inner[2]]
    layer = -np.log(np.maximum(physics.divide_out(crop, np.exp(-behind)), 1e-4))  # -ln of the layer
    knee = max(sigma, 0.02)
    layer *= np.clip((layer.mean(axis=2, keepdims=True) - knee) / knee, 0.0, 1.0)
    signal = float(np.quantile(layer.mean(axis=2), 0.99))
    facts["signal"] = round(signal, 3)
    if signal < MIN_SIGNAL:
        return None, {"drop": "faint", **facts}
    return physics.to_pixels(np.exp(-layer)), facts


# ---------------------------------------------------------------- chunks


@dataclass(frozen=True)
class CutChunk(Chunk):
    raw: str
    out: str
    scans: tuple[tuple[str, str, str | None], ...]  # (id, XML name, split)

    def __len__(self) -> int:
        return len(self.scans)


def cut_chunk(chunk: CutChunk) -> dict:
    """Cut every box of a chunk of scans into layers; the marker (rows, drops) is written last."""
    raw, out = Path(chunk.raw), Path(chunk.out)
    rows, drops = [], Counter()
    for scan_id, xml, split in chunk.scans:
        boxes, _ = read_annotation(raw / ANNOTATION_DIR / xml, raw)
        boxes = [b for b in boxes if b["cls"] in ALL_CLASSES]
        if not boxes:
            continue
        path = _image_path(raw, scan_id)
        if path is None:
            drops["no_image"] += len(boxes)
            continue
        with Image.open(path) as im:
            scan = np.asarray(im.convert("RGB"))
        for k, b in enumerate(boxes):
            coords = (b["xmin"], b["ymin"], b["xmax"], b["ymax"])
            layer, facts = extract_layer(scan, coords)
            if layer is None:
                drops[facts["drop"]] += 1
                continue
            tid = threat_id(scan_id, k)
            write_layer(out / "layers" / f"{tid}.png", layer)
            rows.append(library_row(tid, b["cls"], layer, scan_id, scan.shape, coords, split,
                                    facts["clutter"], "scan"))
    mark_done(chunk, {"count": len(chunk.scans), "rows": rows, "drops": dict(drops)})
    return {"count": len(chunk.scans), "layers": len(rows), "drops": dict(drops)}


def _image_path(raw: Path, scan_id: str) -> Path | None:
    for suffix in (".jpg", ".jpeg", ".JPG", ".JPEG"):
        path = raw / IMAGE_DIR / f"{scan_id}{suffix}"
        if path.exists():
            return path
    return None


# ---------------------------------------------------------------- which scans


def manifest_splits(manifests: Path, raw: Path, subset: Path | None = None) -> dict[str, str] | None:
    """id -> our split of the usable rows of `manifests/manifest.parquet` (or of the subset manifest
    `subset`, e.g. manifests/sixray1000.parquet: its rows only), if it was made from `raw`."""
    path = Path(subset) if subset else Path(manifests) / "manifest.parquet"
    if not path.exists():
        if subset:
            raise MissingInputError(f"{path}: no subset manifest; run `pipeline build-shards` first")
        return None
    check_manifest(path, SUBSET_SCHEMA if subset else MANIFEST_SCHEMA)
    meta = pq.read_schema(path).metadata or {}
    if meta.get(b"raw_root", b"").decode() != str(Path(raw).resolve()):
        return None
    table = pq.read_table(path, columns=["id", "status", "split"])
    ids, statuses, splits = (table[c].to_pylist() for c in ("id", "status", "split"))
    return {i: s for i, st, s in zip(ids, statuses, splits, strict=True) if st in USABLE_STATUSES and s}


def list_boxed_scans(raw: Path, split: str, splits: dict | None,
                     only_listed: bool = False) -> list[tuple[str, str, str | None]]:
    """(id, XML name, split) of every scan to cut, sorted by id (TIP scans left out; with only_listed,
    the ids `splits` does not list too)."""
    folder = Path(raw) / ANNOTATION_DIR
    names = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(".xml")) \
        if folder.is_dir() else []
    scans = []
    for name in names:
        scan_id = name[:-4]
        if scan_id.startswith(TIP_PREFIX):
            continue
        own = splits.get(scan_id) if splits is not None else None
        if (split != "all" and own != split) or (only_listed and scan_id not in splits):
            continue
        scans.append((scan_id, name, own))
    return scans


# ---------------------------------------------------------------- the stage


@writes_folder(lambda a: Path(a["out"]) / (a["name"] or Path(a["raw"]).resolve().name), "pipeline threats",
               ours=(".threats",))
def build_threats(raw, out, *, name: str | None = None, split: str = "train", manifests="manifests",
                  subset=None, chunk_size: int = 200, workers: int | None = None, scheduler=None) -> dict:
    """Cut the boxed threats of `raw` into the collection `out/<name>/` (name: the raw folder's name);
    return a summary (layers, drops by reason, scans, skipped chunks). `subset`: a subset manifest whose
    rows (of `split`) are the only scans cut, e.g. SIXray1000's few train positives."""
    if split not in SPLIT_CHOICES:
        raise UsageError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    raw = Path(raw).resolve()
    if not (raw / IMAGE_DIR).is_dir():
        raise MissingInputError(f"{raw}: no JPEGImage/ folder; is this a SIXray raw root?")
    splits = manifest_splits(Path(manifests), raw, subset)
    if subset and splits is None:
        raise UsageError(f"{subset} is not a subset of a manifest of {raw}")
    if split != "all" and splits is None:
        raise UsageError(f"{Path(manifests) / 'manifest.parquet'} is not a manifest of {raw}: run "
                         f"`pipeline ingest --raw {raw} --out {manifests}` first (our split decides which "
                         "threats are train), or pass --split all")
    name = name or raw.name
    collection = Path(out) / name
    claim_collection(collection, {"raw": str(raw), "split": split, "origin": "scan",
                        **({"subset": str(Path(subset).resolve())} if subset else {})})
    scans = list_boxed_scans(raw, split, splits, only_listed=subset is not None)
    chunks = []
    for start in range(0, len(scans), chunk_size):
        part = tuple(scans[start : start + chunk_size])
        key = content_key([FORMAT, str(raw), part], 12)
        chunks.append(CutChunk(key, str(marker_path(collection, key)), str(raw), str(collection), part))
    started = time.perf_counter()
    _, skipped = run_chunks(cut_chunk, chunks, desc=f"threats {name}", unit="scan", workers=workers,
                            scheduler=scheduler)
    summary = finish_collection(collection, [c.key for c in chunks])
    return {**summary, "collection": str(collection), "scans": len(scans), "skipped_chunks": skipped,
            "seconds": round(time.perf_counter() - started, 2)}
