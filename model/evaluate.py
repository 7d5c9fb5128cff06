"""Evaluation: predict over the exact test epoch, AP / mAP and pointing per stage and fused, reports.

`predict` runs one rank's share of the test split; `gather` merges every rank's share (DDP) so the
metrics are computed over the full test set and agree on every rank. `summarise` turns predictions into
the numbers of the paper's Tables 2-3; `write_report` saves them (JSON, CSV, PNG) with every image's
scores (predictions.parquet), so anyone can recompute the tables with their own tools.
Pointing rows: `fused` combines the stages' CAMs by the chosen rule (max across scales by default),
`fused-mean` / `fused-max` by the other one, `stageN` each stage alone; with a pixel tolerance, every row
is repeated as `<row>@<N>px`.
"""

import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from model.checkpoint import load_checkpoint
from model.chr import STAGE_NAMES
from model.metrics import box_class, mean_ap, per_class_ap, pointing_accuracy, pointing_counts
from pipeline.atomic import atomic_path, write_bytes, write_json, write_parquet
from pipeline.classes import CLASSES

FUSED = "fused"
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def output_names(n_stages: int) -> list[str]:
    return [FUSED, *STAGE_NAMES[:n_stages]]


def progress_bar(iterable=None, *, total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A bar by the pipeline's rule (pipeline/distribute.py): live on a terminal, off when stderr is a
    file or a pipe, where thousands of redraws would bury the log; off everywhere unless `enabled`
    (only rank 0 prints). `bar.disable` tells a caller to print its one summary line instead."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                disable=None if enabled else True)


def pointing_outputs(cams: list[torch.Tensor], fuse: str) -> dict[str, tuple[list[torch.Tensor], str]]:
    """The pointing table's rows: name -> (the CAMs pointed with, how several are fused)."""
    other = "mean" if fuse == "max" else "max"
    rows = {FUSED: (cams, fuse), f"{FUSED}-{other}": (cams, other)}
    rows.update({name: ([c], fuse) for name, c in zip(STAGE_NAMES, cams, strict=False)})
    return rows


def add_pointing(counts: dict, cams, batch, fuse: str, tolerance: float) -> None:
    """Add one batch's pointing hits and misses per row (at 0 px, and at `tolerance` px when > 0)."""
    tolerances = (0.0, tolerance) if tolerance > 0 else (0.0,)
    for name, (maps, rule) in pointing_outputs(cams, fuse).items():
        per_tolerance = pointing_counts(maps, batch.labels, batch.meta, fuse=rule, tolerances=tolerances)
        for tol, batch_counts in zip(tolerances, per_tolerance, strict=True):
            key = name if tol == 0 else f"{name}@{tol:g}px"
            counts[key] = counts.get(key, 0) + batch_counts


@torch.no_grad()
def predict(model, loader, device, *, amp: bool = False, channels_last: bool = False, pointing: bool = False,
            fuse: str = "max", tolerance: float = 0.0, keep_examples: int = 0, progress=None) -> dict:
    """Scores per output for every sample this rank sees; pointing counts (CAMs fused by `fuse`, hits
    within `tolerance` pixels besides exact ones) and a few CAM examples if asked."""
    model.eval()
    ids, labels, difficult, scores = [], [], [], {}
    counts, examples = {}, []
    for batch in loader:
        images = batch.images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp):
            out = model(images)
        cams = [c.float().cpu() for c in out.cams]
        per_output = {FUSED: out.scores().float().cpu()}
        stages = zip(STAGE_NAMES, out.logits, strict=False)
        per_output.update({n: torch.sigmoid(x.float()).cpu() for n, x in stages})
        for name, s in per_output.items():
            scores.setdefault(name, []).append(s.numpy())
        ids += list(batch.ids)
        labels.append(batch.labels.cpu().numpy())
        difficult.append(batch.difficult.cpu().numpy())
        if pointing:
            add_pointing(counts, cams, batch, fuse, tolerance)
        if len(examples) < keep_examples:
            examples += _examples(batch, cams, keep_examples - len(examples))
        if progress is not None:
            progress.update(len(batch.ids))
    n = len(CLASSES)
    return {
        "ids": ids,
        "labels": np.concatenate(labels) if labels else np.zeros((0, n)),
        "difficult": np.concatenate(difficult) if difficult else np.zeros((0, n), dtype=bool),
        "scores": {k: np.concatenate(v) for k, v in scores.items()},
        "pointing": counts,
        "examples": examples,
    }


def _examples(batch, cams, limit: int) -> list[dict]:
    """Positive test images with boxes, kept with their (un-normalised) input and fused CAMs for overlays."""
    keep = []
    for i, info in enumerate(batch.meta):
        if len(keep) == limit:
            break
        if batch.labels[i].sum() > 0 and info.get("boxes"):
            image = (batch.images[i].cpu().float() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)
            keep.append({"id": batch.ids[i], "image": image.permute(1, 2, 0).numpy(), "meta": info,
                         "labels": batch.labels[i].cpu().numpy(), "cams": [c[i].numpy() for c in cams]})
    return keep


def gather(pred: dict) -> dict:
    """Merge every rank's predictions (a no-op without torch.distributed); pointing counts are summed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return pred
    parts = [None] * dist.get_world_size()
    light = {k: v for k, v in pred.items() if k != "examples"}
    dist.all_gather_object(parts, light)
    parts = [p for p in parts if p["ids"]] or parts[:1]  # a rank may get no test sample (fewer shards)
    merged = {
        "ids": [i for p in parts for i in p["ids"]],
        "labels": np.concatenate([p["labels"] for p in parts]),
        "difficult": np.concatenate([p["difficult"] for p in parts]),
        "scores": {k: np.concatenate([p["scores"][k] for p in parts]) for k in parts[0]["scores"]},
        "pointing": {k: sum(p["pointing"][k] for p in parts) for k in parts[0]["pointing"]},
        "examples": pred["examples"],
    }
    return merged


def summarise(pred: dict) -> dict:
    """Per-class AP and mAP per output; pointing accuracy per class and mean per output (when counted)."""
    labels, difficult = pred["labels"], pred["difficult"].astype(bool)
    summary = {"count": len(pred["ids"]), "classes": list(CLASSES), "ap": {}, "map": {}, "pointing": {}}
    for name, scores in pred["scores"].items():
        aps = per_class_ap(scores, labels, difficult)
        summary["ap"][name] = _floats(aps)
        summary["map"][name] = _float(mean_ap(aps))
    for name, counts in pred["pointing"].items():
        acc = pointing_accuracy(counts)
        summary["pointing"][name] = {"accuracy": _floats(acc), "mean": _float(mean_ap(acc)),
                                     "hits": counts[:, 0].tolist(), "misses": counts[:, 1].tolist()}
    return summary


def _float(x) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def _floats(xs) -> list:
    return [_float(x) for x in xs]


def _pct(x) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def format_tables(summary: dict) -> str:
    """Text tables laid out like the paper's Table 2 (AP %, per class + mAP) and Table 3 (pointing %)."""
    head = "".join(f"{c.capitalize():>9}" for c in CLASSES)
    lines = [f"Table 2 - average precision (%) on {summary['count']} test images",
             f"{'output':<10}{head}{'mAP':>9}"]
    for name, aps in summary["ap"].items():
        lines.append(_row(name, aps, summary["map"][name]))
    if summary["pointing"]:
        lines += ["", "Table 3 - pointing localization accuracy (%)", f"{'output':<10}{head}{'mean':>9}"]
        for name, p in summary["pointing"].items():
            lines.append(_row(name, p["accuracy"], p["mean"]))
    return "\n".join(lines)


def _row(name: str, values: list, mean) -> str:
    return f"{name:<10}" + "".join(f"{_pct(v):>9}" for v in values) + f"{_pct(mean):>9}"


def write_report(summary: dict, pred: dict, out: str | Path, *, overlays: int = 6) -> list[Path]:
    """metrics.json, ap.csv, pointing.csv, predictions.parquet, pr_curves.png, cam_*.png under `out`;
    returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", summary)
    paths = [out / "metrics.json", _write_csv(out / "ap.csv", summary["ap"], summary["map"], "mAP"),
             write_predictions(pred, out / "predictions.parquet")]
    if summary["pointing"]:
        acc = {k: v["accuracy"] for k, v in summary["pointing"].items()}
        means = {k: v["mean"] for k, v in summary["pointing"].items()}
        paths.append(_write_csv(out / "pointing.csv", acc, means, "mean"))
    paths.append(plot_pr_curves(pred, out / "pr_curves.png"))
    for i, ex in enumerate(pred["examples"][:overlays]):
        paths.append(plot_cam_overlay(ex, out / f"cam_{i:02d}_{ex['id']}.png"))
    return paths


def _write_csv(path: Path, rows: dict, means: dict, mean_name: str) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["output", *CLASSES, mean_name])
        for name, values in rows.items():
            w.writerow(["" if v is None else v for v in (name, *values, means[name])])
    return path


def write_predictions(pred: dict, path: Path) -> Path:
    """One row per test image: id, label_<class> (1 present, difficult included), difficult_<class>,
    score_<output>_<class> for the fused output and every stage (the exact float32 scores AP ranks)."""
    import pyarrow as pa

    columns = {"id": pa.array(pred["ids"], pa.string())}
    labels, difficult = pred["labels"].astype(np.int8), pred["difficult"].astype(bool)
    columns.update({f"label_{c}": pa.array(labels[:, i]) for i, c in enumerate(CLASSES)})
    columns.update({f"difficult_{c}": pa.array(difficult[:, i]) for i, c in enumerate(CLASSES)})
    for output, scores in pred["scores"].items():
        columns.update({f"score_{output}_{c}": pa.array(scores[:, i]) for i, c in enumerate(CLASSES)})
    write_parquet(path, pa.table(columns))
    return path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(pred: dict, path: Path) -> Path:
    """Precision-recall curve per class of the fused output (difficult samples left out)."""
    from sklearn.metrics import precision_recall_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    scores = pred["scores"][FUSED]
    for c, name in enumerate(CLASSES):
        keep = ~pred["difficult"][:, c].astype(bool)
        y = pred["labels"][keep, c] > 0
        if y.any():
            p, r, _ = precision_recall_curve(y, scores[keep, c])
            ax.plot(r, p, label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="PR curves (fused)")
    ax.legend(loc="lower left")
    save_figure(fig, path)
    return path


def plot_cam_overlay(example: dict, path: Path) -> Path:
    """The test input with each present class's fused CAM over it and that class's boxes."""
    import torch.nn.functional as F

    plt = pyplot()
    image, meta = example["image"], example["meta"]
    h, w = image.shape[:2]
    sx, sy = w / meta["width"], h / meta["height"]
    present = [c for c in range(len(CLASSES)) if example["labels"][c] > 0]
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 4), squeeze=False)
    for ax, c in zip(axes[0], present, strict=True):
        maps = [F.interpolate(torch.from_numpy(m[c])[None, None], size=(h, w), mode="bilinear") for m in
                example["cams"]]
        cam = torch.stack(maps).mean(0)[0, 0].numpy()
        ax.imshow(image)
        ax.imshow(cam, cmap="jet", alpha=0.45)
        for b in meta["boxes"]:
            if box_class(b) == CLASSES[c]:
                ax.add_patch(plt.Rectangle((b["xmin"] * sx, b["ymin"] * sy), (b["xmax"] - b["xmin"]) * sx,
                                           (b["ymax"] - b["ymin"]) * sy, fill=False, color="white", lw=2))
        ax.set_title(f"{example['id']}: {CLASSES[c]}")
        ax.axis("off")
    save_figure(fig, path)
    return path


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    pyplot().close(fig)
    write_bytes(path, buf.getvalue())


def evaluate_checkpoint(checkpoint: str | Path, shards: str | Path, out: str | Path | None = None, *,
                        batch_size: int = 32, workers: int = 2, loader: str = "cpu", device: str = "auto",
                        test_size: int | None = None, pointing_fuse: str | None = None,
                        pointing_tolerance: float | None = None, overlays: int = 6, data=None,
                        trust_checkpoint: bool = False) -> dict:
    """Rebuild the model from the checkpoint alone, evaluate it on the test split, write the report.
    Unset sizes and pointing settings are the checkpoint's training config's."""
    from model.chr import build_model
    from model.config import train_config_from_dict
    from model.train import resolve_device

    if data is None:
        import model.data as data
    device = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, trust=trust_checkpoint)
    tcfg = train_config_from_dict(ckpt["config"])
    model = build_model(tcfg.model)
    model.load_state_dict(ckpt["model"])
    model.to(device)
    lcfg = data.LoaderConfig(backend=loader, batch_size=batch_size, workers=workers, resize=tcfg.resize,
                             crop=tcfg.crop, test_size=test_size or tcfg.test_size, device=str(device))
    total = data.split_info(shards, "test")["count"]
    start = time.perf_counter()
    with progress_bar(total=total, desc="eval", unit="img") as bar:
        live = not bar.disable  # read now: tqdm's close() sets disable
        tolerance = tcfg.pointing_tolerance if pointing_tolerance is None else pointing_tolerance
        pred = predict(model, data.make_loader(shards, "test", lcfg), device, amp=device.type == "cuda",
                       pointing=True, fuse=pointing_fuse or tcfg.pointing_fuse, tolerance=tolerance,
                       keep_examples=overlays, progress=bar)
    if not live:
        seconds = time.perf_counter() - start
        print(f"eval: {len(pred['ids'])} images in {seconds:.1f} s ({len(pred['ids']) / seconds:.0f} img/s)",
              file=sys.stderr)
    summary = summarise(pred)
    summary["checkpoint"] = {"path": str(checkpoint), "epoch": ckpt["epoch"], "config": ckpt["config"]}
    if out is not None:
        write_report(summary, pred, out, overlays=overlays)
    return summary
