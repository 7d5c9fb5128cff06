"""Does a model trained only on `pipeline synth` output recognise the threats in real scans? (issues 12, 17)

The reference recipe on the reference data (bench/bench_learning.py's, the same commands and seed, so the
two benchmarks can share a --work folder and one training):

    pipeline synth --positives 8929 --negatives 89290 --size-factor 0.5 --seed SEED
    pipeline ingest, pipeline build-shards --ratio 10
    model train --preset reference --device cpu

then the best epoch's checkpoint is evaluated on the real scans of ../shared/sixray-real-dev through the
project's own code path: `pipeline ingest` of that folder and `pipeline build-shards --ratio 10 --split
official`, which puts every one of its images in the test split, then `model eval`'s evaluate_checkpoint.
Reference printed beside each class's AP: its chance level, the AP of a random ranking, i.e. the share of
the evaluated real images that hold the class (most of them are positives). The synthetic test split's
Table 2 is printed too (how hard the synthetic task itself is), and on both the class separation (AP
among the positives, the mean Spearman correlation between two classes' scores).

A contact sheet PNG is written for a person to judge: synthetic and real scans side by side, and crops of
each threat class from both (from their boxes). Real pixels go only into that sheet, never into data.

    python3 -m bench.bench_realism [--work /tmp/learning] [--seed 0] [--sheet bench/results/realism_sheet.png]
                                   [--train-args '--epochs 12']  (a recipe probe: use another --run)

Every step runs as a subprocess under `nice`, as a user types it; a rerun with the same --work resumes
(synth, ingest, shards and training skip what is done), so delete --work after changing the generator.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from base.vocabulary import CLASSES

ROOT = Path(__file__).resolve().parents[1]

SYNTH = ["--positives", "8929", "--negatives", "89290", "--size-factor", "0.5"]
TRAIN = ["--preset", "reference", "--device", "cpu"]
"""bench/bench_learning.py's data and recipe, unchanged: only the generator may move the figures."""

PIPELINE = "import sys; from pipeline.cli import main; sys.argv[0] = 'pipeline'; main()"
MODEL = "import sys; from model.cli import main; sys.argv[0] = 'model'; main()"


def run(kind: str, *args: str) -> None:
    """One CLI command as a subprocess under nice, from the repository root (the package need not be
    installed: the root is on PYTHONPATH)."""
    code = PIPELINE if kind == "pipeline" else MODEL
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    print(f"$ {kind} {' '.join(args)}", flush=True)
    subprocess.run(
        ["nice", "-n", "10", sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def chance_levels(labels: np.ndarray, difficult: np.ndarray) -> list[float]:
    """AP of a random ranking: the share of the (non-difficult) evaluated images holding the class."""
    keep = ~difficult.astype(bool)
    return [float(labels[keep[:, c], c].mean()) for c in range(labels.shape[1])]


def real_eval(checkpoint: Path, shards: Path, out: Path) -> tuple[dict, list[float]]:
    """evaluate_checkpoint (Tables 2-3, report under `out`) and the chance levels of the same images."""
    import pyarrow.parquet as pq

    from model.evaluate import evaluate_checkpoint

    summary = evaluate_checkpoint(checkpoint, shards, out, workers=2, device="cpu", overlays=6)
    pred = pq.read_table(out / "predictions.parquet").to_pydict()
    labels = np.array([pred[f"label_{c}"] for c in CLASSES], dtype=float).T
    difficult = np.array([pred[f"difficult_{c}"] for c in CLASSES], dtype=bool).T
    return summary, chance_levels(labels, difficult)


def format_separation(name: str, sep: dict) -> str:
    """One line from a summary's "separation" (model/metrics.py class_separation)."""
    pairs = zip(sep["ap"], sep["chance"], strict=True)
    aps = " ".join(f"{100 * (a or 0):.1f} ({100 * (c or 0):.1f})" for a, c in pairs)
    return (f"{name} ({sep['count']} positives): AP (chance) {aps}, mAP {100 * (sep['map'] or 0):.1f}; "
            f"mean Spearman between two classes' scores {sep['spearman']:.2f}")


def format_table(summary: dict, chance: list[float], synth_summary: dict | None) -> str:
    aps = summary["ap"]["fused"]
    lines = [
        f"real scans: {summary['count']} (AP % of the fused output; chance = share of images with the class)",
        f"{'':<10}" + "".join(f"{c:>10}" for c in CLASSES) + f"{'mAP':>10}",
        f"{'AP':<10}" + "".join(f"{100 * a:>10.1f}" for a in aps) + f"{100 * summary['map']['fused']:>10.1f}",
        f"{'chance':<10}" + "".join(f"{100 * c:>10.1f}" for c in chance) + f"{100 * np.mean(chance):>10.1f}",
        f"{'margin':<10}" + "".join(f"{100 * (a - c):>+10.1f}" for a, c in zip(aps, chance, strict=True)),
    ]
    if synth_summary is not None:
        syn = synth_summary["ap"]["fused"]
        lines.append(
            f"{'synth test':<10}"
            + "".join(f"{100 * a:>10.1f}" for a in syn)
            + f"{100 * synth_summary['map']['fused']:>10.1f}"
        )
    lines.append(
        "markdown row: | "
        + " | ".join(f"{100 * a:.1f} ({100 * c:.1f})" for a, c in zip(aps, chance, strict=True))
        + f" | {100 * summary['map']['fused']:.1f} | {100 * np.mean(chance):.1f} |"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------- contact sheet


def boxes_of(xml_path: Path) -> list[tuple[str, float, float, float, float]]:
    if not xml_path.exists():
        return []
    root = ET.parse(xml_path).getroot()
    return [
        (
            o.findtext("name").lower(),
            *(float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")),
        )
        for o in root.findall("object")
    ]


def tile(image: Image.Image, side: int) -> Image.Image:
    image = image.convert("RGB")
    image.thumbnail((side, side))
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def class_crops(raw: Path, ids: list[str], per_class: int) -> dict[str, list[Image.Image]]:
    crops: dict[str, list[Image.Image]] = {c: [] for c in CLASSES}
    for image_id in ids:
        boxes = boxes_of(raw / "Annotation" / f"{image_id}.xml")
        if not boxes:
            continue
        with Image.open(raw / "JPEGImage" / f"{image_id}.jpg") as im:
            im = im.convert("RGB")
            for cls, x0, y0, x1, y1 in boxes:
                if cls in crops and len(crops[cls]) < per_class:
                    pad = 0.1 * max(x1 - x0, y1 - y0)
                    crops[cls].append(im.crop((int(x0 - pad), int(y0 - pad), int(x1 + pad), int(y1 + pad))))
    return crops


def contact_sheet(
    synth_raw: Path, real_raw: Path, path: Path, *, scans: int = 8, per_class: int = 8, side: int = 160
) -> Path:
    """Rows: synthetic scans, real scans, then per class a row of synthetic crops and a row of real crops."""
    real_ids = sorted(p.stem for p in (real_raw / "JPEGImage").iterdir() if p.stem.startswith("P"))
    synth_ids = sorted(p.stem for p in (synth_raw / "JPEGImage").iterdir() if p.stem.startswith("P"))
    step = max(1, len(real_ids) // scans)
    rows = [
        ("synthetic scans", [Image.open(synth_raw / "JPEGImage" / f"{i}.jpg") for i in synth_ids[:scans]]),
        ("real scans", [Image.open(real_raw / "JPEGImage" / f"{i}.jpg") for i in real_ids[::step][:scans]]),
    ]
    synth_crops = class_crops(synth_raw, synth_ids[:200], per_class)
    real_crops = class_crops(real_raw, real_ids, per_class)
    for cls in CLASSES:
        rows += [(f"synthetic {cls}", synth_crops[cls]), (f"real {cls}", real_crops[cls])]
    label_w = 130
    sheet = Image.new("RGB", (label_w + side * max(scans, per_class), side * len(rows)), (255, 255, 255))
    pen = ImageDraw.Draw(sheet)
    for r, (name, images) in enumerate(rows):
        pen.text((4, r * side + side // 2 - 6), name, fill=(0, 0, 0))
        for c, im in enumerate(images):
            sheet.paste(tile(im, side - 4), (label_w + c * side + 2, r * side + 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/learning"))
    parser.add_argument("--run", default="run", help="the run folder's name under --work")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "sixray-real-dev")
    parser.add_argument("--seed", type=int, default=0, help="synth seed (the demo's is 0)")
    parser.add_argument(
        "--sheet", type=Path, default=None, help="contact sheet PNG (default: WORK/realism_sheet.png)"
    )
    parser.add_argument("--workers", type=int, default=2, help="pipeline stages' worker processes")
    parser.add_argument(
        "--train-args",
        default="",
        help="extra `model train` flags, appended to the recipe's so they win (e.g. '--epochs 12'): a probe "
        "of another recipe, not the benchmark; give it its own --run",
    )
    args = parser.parse_args()
    train = TRAIN + shlex.split(args.train_args)
    work, real = args.work.resolve(), args.real.resolve()
    w = ["--workers", str(args.workers)]
    started = time.perf_counter()

    raw, manifests, shards, runs = work / "raw", work / "manifests", work / "shards", work / args.run
    run("pipeline", "synth", "--out", str(raw), *SYNTH, "--seed", str(args.seed), *w)
    sheet = contact_sheet(raw, real, args.sheet or work / "realism_sheet.png")
    print(f"contact sheet: {sheet}", flush=True)
    run("pipeline", "ingest", "--raw", str(raw), "--out", str(manifests), *w)
    run("pipeline", "build-shards", "--ratio", "10", "--manifests", str(manifests), "--out", str(shards), *w)
    if not (runs / "test.json").exists():  # an interrupted run continues (train refuses to overwrite one)
        resume = ["--resume"] if (runs / "last.pt").exists() else []
        run("model", "train", "--shards", str(shards / "sixray10"), "--out", str(runs), *train, *resume)
    synth_summary = json.loads((runs / "test.json").read_text())

    real_manifests, real_shards = work / "real" / "manifests", work / "real" / "shards"
    run("pipeline", "ingest", "--raw", str(real), "--out", str(real_manifests), *w)
    run(
        "pipeline",
        "build-shards",
        "--ratio",
        "10",
        "--split",
        "official",
        "--manifests",
        str(real_manifests),
        "--out",
        str(real_shards),
        *w,
    )
    info = json.loads((real_shards / "sixray10" / "_info.json").read_text())
    if info["selection"]["train"]["positives"] + info["selection"]["train"]["negatives"]:
        raise SystemExit("some real scans landed in the train split: they would not be evaluated")
    real_out = work / f"{args.run}-real_eval"
    summary, chance = real_eval(runs / "best.pt", real_shards / "sixray10", real_out)
    separation = {"real": summary["separation"], "synth_positives": synth_summary["separation"]}
    print()
    print(format_table(summary, chance, synth_summary))
    print(format_separation("real scans", separation["real"]))
    print(format_separation("synthetic test positives", separation["synth_positives"]))
    print(
        f"\nseed {args.seed}{', recipe probe: ' + args.train_args if args.train_args else ''}, "
        f"{time.perf_counter() - started:.0f} s; contact sheet {sheet}; "
        f"report {real_out}"
    )
    (work / f"{args.run}-realism.json").write_text(
        json.dumps(
            {
                "seed": args.seed,
                "train_args": args.train_args,
                "real": summary,
                "chance": chance,
                "synth_test": synth_summary,
                "separation": separation,
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()
