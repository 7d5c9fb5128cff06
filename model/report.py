"""The reports of `model eval`, `model predict` and `model ablate`: the paper's Tables 2-3 and the alarm
table as text (`format_tables`), the report files (`write_report`: metrics.json, ap.csv, pointing.csv,
predictions.parquet with every image's scores, so anyone can recompute the tables with their own tools,
PR curves and CAM overlays) and the matplotlib helpers.
Pointing rows: `fused` combines the stages' CAMs by the chosen rule (max across scales by default),
`fused-mean` / `fused-max` by the other one, `stageN` each stage alone; with a pixel tolerance, every row
is repeated as `<row>@<N>px`.
"""

import csv
import io
from pathlib import Path

import numpy as np
import torch

from base.atomic import atomic_path, write_bytes, write_json, write_parquet
from base.vocabulary import CLASSES
from model.alarms import ANY
from model.inference import FUSED
from model.metrics import box_class, mean_ap


def _pct(x) -> str:
    return "   -  " if x is None else f"{100 * x:6.2f}"


def format_tables(summary: dict) -> str:
    """Text tables laid out like the paper's Table 2 (AP %, per class + mAP) and Table 3 (pointing %)."""
    head = "".join(f"{c.capitalize():>9}" for c in CLASSES)
    lines = [f"Table 2 - average precision (%) on {summary['count']} test images",
             f"{'output':<10}{head}{'mAP':>9}"]
    for name, aps in summary["ap"].items():
        lines.append(_row(name, aps, summary["map"][name]))
    sep = summary.get("separation")
    if sep and sep["count"]:
        rho = "-" if sep["spearman"] is None else f"{sep['spearman']:.2f}"
        chance = mean_ap(np.array(sep["chance"], dtype=float))
        lines += ["", f"Class separation - fused AP (%) among the {sep['count']} positive test images only; "
                      f"mean Spearman between two classes' scores {rho} (1: one score for every class)",
                  _row("among pos", sep["ap"], sep["map"]), _row("chance", sep["chance"], chance)]
    if summary["pointing"]:
        lines += ["", "Table 3 - pointing localization accuracy (%)", f"{'output':<10}{head}{'mean':>9}"]
        for name, p in summary["pointing"].items():
            lines.append(_row(name, p["accuracy"], p["mean"]))
    if "alarms" in summary:
        lines += format_alarms(summary["alarms"])
    return "\n".join(lines)


def format_alarms(alarms: dict | None) -> list[str]:
    """The operator's table: per class the val threshold, then recall, precision and false alarms per 1,000
    negative bags on the test split at it; `any` is the bag (any class alarms; negatives: no threat)."""
    if alarms is None:
        return ["", "Alarms: no val split (the checkpoint's --val-fraction is 0), so no thresholds"]
    trained_on = "held out of training" if alarms["held_out"] else "which the model was trained on"
    target, val, bags = 100 * alarms["target_recall"], alarms["val_count"], alarms["test"][ANY]
    lines = ["", f"Alarms - thresholds for {target:g}% recall on {val} val images ({trained_on});",
             f"on {bags['positives'] + bags['negatives']} test images: recall, precision (%), false alarms "
             "per 1000 negative bags (any: a bag alarms on any class)",
             f"{'class':<10}{'threshold':>10}{'val pos':>9}{'recall':>9}{'precision':>10}{'FA/1000':>9}"]
    for name in (*CLASSES, ANY):
        test, fit = alarms["test"][name], alarms["classes"].get(name, {})
        if name != ANY and fit["threshold"] is None:
            lines.append(f"{name:<10}{'-':>10}{fit['positives']:>9}   {fit['note']}")
            continue
        threshold = "" if name == ANY else f"{fit['threshold']:.4f}"
        positives = "" if name == ANY else fit["positives"]
        fa = "-" if test["false_alarms_per_1000"] is None else f"{test['false_alarms_per_1000']:.1f}"
        lines.append(f"{name:<10}{threshold:>10}{positives:>9}{_pct(test['recall']):>9}"
                     f"{_pct(test['precision']):>10}{fa:>9}")
    return lines


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
