"""`model ablate`: the paper's Table 4 (variants x SIXray subsets, mAP and pointing) by one command.

Every (subset, variant, epsilon, seed) is one `model train` run in
<out>/<subset>/<variant>[-eps<e>]/seed<k>. A run whose test.json (written last) covers the asked number
of epochs is reused; an unfinished one resumes from its last.pt, so a killed ablation loses at most an
epoch. The class-balanced variants (ch, chr), given several epsilons, train each and keep the one whose
selection-split mAP (the val split by default), averaged over seeds, is highest: epsilon is chosen
without looking at the test split. Results, mean and sample standard deviation over seeds of the
selected epoch's fused test mAP and pointing accuracy, go to table4.md, table4.csv and table4.png.
"""

import csv
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

from base.atomic import atomic_path, write_bytes, writes_folder
from model.config import TrainConfig
from model.inference import FUSED

TABLE4_ORDER = ("baseline", "h", "ch", "hr", "chr")
"""The rows of the paper's Table 4, top to bottom."""

BACKBONE_NAMES = {"resnet34": "ResNet34", "resnet50": "ResNet50", "resnet101": "ResNet101",
                  "inception_v3": "Inception-v3", "densenet121": "DenseNet121", "tiny": "Tiny"}


def run_once(cfg: TrainConfig) -> dict:
    """The test summary of one training run: reused when finished, else trained (resuming)."""
    from model.train import train

    done = Path(cfg.out) / "test.json"
    if done.exists():
        summary = json.loads(done.read_text())
        if summary["selected"]["of_epochs"] == cfg.epochs:
            print(f"reusing {cfg.out}", flush=True)
            return summary
    print(f"training {cfg.out}", flush=True)
    return train(cfg, resume=(Path(cfg.out) / "last.pt").exists())


def pointing_key(cfg: TrainConfig) -> str:
    """The pointing row the table shows: with the tolerance asked for, if any."""
    return FUSED if cfg.pointing_tolerance <= 0 else f"{FUSED}@{cfg.pointing_tolerance:g}px"


def percent(value: float | None) -> float:
    """A summary's fraction in %; nan where it has none (no class with a positive, or with a box)."""
    return math.nan if value is None else 100 * value


def run_variant(shards: str, variant: str, seeds: int, epsilons: list[float], base: TrainConfig,
                out: Path) -> dict:
    """Train one variant on one subset for every seed (and epsilon, if balanced); return its table cell
    data: the chosen epsilon and, per seed, the test mAP and pointing accuracy in %."""
    model = replace(base.model, variant=variant)
    tried = epsilons if model.balanced else [model.epsilon]
    by_epsilon = {}
    for eps in tried:
        folder = out / Path(shards).name / (f"{variant}-eps{eps:g}" if model.balanced else variant)
        by_epsilon[eps] = [run_once(replace(base, shards=shards, out=str(folder / f"seed{seed}"), seed=seed,
                                            model=replace(model, epsilon=eps))) for seed in range(seeds)]
    chosen = max(tried, key=lambda e: statistics.mean(s["selected"]["map"] for s in by_epsilon[e]))
    runs = by_epsilon[chosen]
    key = pointing_key(base)
    return {"subset": Path(shards).name, "variant": variant, "epsilon": chosen if model.balanced else None,
            "epsilons_tried": len(tried),
            "map": [percent(s["map"][FUSED]) for s in runs],
            "pointing": [percent(s["pointing"][key]["mean"]) for s in runs]}


@writes_folder("out", "model ablate", ours=("table4.md",))
def run_ablation(shards: list[str], variants: list[str], seeds: int, epsilons: list[float],
                 base: TrainConfig, out: str | Path) -> list[Path]:
    """Every variant on every subset; writes and returns [table4.md, table4.csv, table4.png]."""
    out = Path(out)
    ordered = [v for v in TABLE4_ORDER if v in variants]
    cells = [run_variant(s, v, seeds, epsilons, base, out) for s in shards for v in ordered]
    return [write_markdown(cells, base, seeds, out / "table4.md"), write_csv(cells, out / "table4.csv"),
            plot_table(cells, out / "table4.png")]


def spread(values: list[float]) -> tuple[float, float | None]:
    """(mean, sample standard deviation; None for a single seed)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def cell_text(values: list[float]) -> str:
    mean, std = spread(values)
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def method_name(backbone: str, variant: str) -> str:
    name = BACKBONE_NAMES.get(backbone, backbone)
    return name if variant == "baseline" else f"{name}+{variant.upper()}"


def write_markdown(cells: list[dict], base: TrainConfig, seeds: int, path: Path) -> Path:
    subsets = list(dict.fromkeys(c["subset"] for c in cells))
    variants = list(dict.fromkeys(c["variant"] for c in cells))
    at = {(c["subset"], c["variant"]): c for c in cells}
    tolerance = f", within {base.pointing_tolerance:g} px" if base.pointing_tolerance > 0 else ""
    lines = [f"Table 4 layout: fused test mAP and pointing accuracy (%, peak = max across scales{tolerance}) "
             f"of the epoch chosen on {base.select_on}; mean ± sample std over {seeds} seed(s), "
             f"{base.epochs} epochs.", "",
             "| Method | " + " | ".join(f"{s} mAP | {s} pointing" for s in subsets) + " |",
             "|---|" + "---:|---:|" * len(subsets)]
    for v in variants:
        row = [f"{cell_text(at[s, v]['map'])} | {cell_text(at[s, v]['pointing'])}" for s in subsets]
        lines.append(f"| {method_name(base.model.backbone, v)} | " + " | ".join(row) + " |")
    if "baseline" in variants:
        lines += ["", "Gain over the baseline (mAP points, means):", "",
                  "| Method | " + " | ".join(subsets) + " |", "|---|" + "---:|" * len(subsets)]
        for v in variants[1:]:
            gains = [spread(at[s, v]["map"])[0] - spread(at[s, "baseline"]["map"])[0] for s in subsets]
            lines.append(f"| {method_name(base.model.backbone, v)} | "
                         + " | ".join(f"{g:+.2f}" for g in gains) + " |")
    chosen = [f"{c['subset']} {c['variant']}: {c['epsilon']:g}" for c in cells if c["epsilons_tried"] > 1]
    if chosen:
        lines += ["", f"Epsilon kept (best mean {base.select_on} mAP): " + ", ".join(chosen)]
    write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def write_csv(cells: list[dict], path: Path) -> Path:
    """Long format: one row per subset, variant and metric, with each seed's value."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subset", "variant", "epsilon", "metric", "mean", "std", "seeds", "values"])
        for c in cells:
            for metric in ("map", "pointing"):
                mean, std = spread(c[metric])
                w.writerow([c["subset"], c["variant"], "" if c["epsilon"] is None else c["epsilon"], metric,
                            round(mean, 4), "" if std is None else round(std, 4), len(c[metric]),
                            " ".join(f"{x:.4f}" for x in c[metric])])
    return path


def plot_table(cells: list[dict], path: Path) -> Path:
    """Two panels (mAP, pointing): per subset a group of bars, one per variant, with the seed spread."""
    from model.report import pyplot, save_figure

    plt = pyplot()
    subsets = list(dict.fromkeys(c["subset"] for c in cells))
    variants = list(dict.fromkeys(c["variant"] for c in cells))
    at = {(c["subset"], c["variant"]): c for c in cells}
    width = 0.8 / len(variants)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, title in zip(axes, ("map", "pointing"), ("fused test mAP (%)", "pointing accuracy (%)"),
                                 strict=True):
        for k, v in enumerate(variants):
            stats = [spread(at[s, v][metric]) for s in subsets]
            xs = [i + (k - (len(variants) - 1) / 2) * width for i in range(len(subsets))]
            ax.bar(xs, [m for m, _ in stats], width, yerr=[sd or 0 for _, sd in stats], capsize=3, label=v)
        ax.set_xticks(range(len(subsets)), subsets)
        ax.set(title=title, ylim=(0, 100))
    axes[0].legend(loc="upper right", fontsize="small")
    save_figure(fig, path)
    return path
