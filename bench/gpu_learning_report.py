"""bench/gpu_learning.sh's summary: one row per trained variant, printed and written as JSON.

Training images/s is the mean of the epochs after the first (the first includes start-up). A SIXray1000
epoch's time at that rate: full = the issue's 1,059,231 images (the goal: under 4 minutes on one
H100/H200); balanced = 2 x 3,177 images, SIXray1000's train positives (our generator at the real count,
per-class quotas of 1,000 rarest class first) and as many negatives.
"""

import argparse
import csv
import json
import os
from pathlib import Path

import torch

FULL_EPOCH_IMAGES = 1_059_231
BALANCED_EPOCH_IMAGES = 2 * 3_177
FULL_EPOCH_GOAL_S = 240


def variant_row(run: Path) -> dict:
    epochs = list(csv.DictReader(open(run / "metrics.csv")))
    rates = [float(e["images_per_s"]) for e in epochs[1:]] or [float(epochs[0]["images_per_s"])]
    rate = sum(rates) / len(rates)
    test = json.loads((run / "test.json").read_text())
    alarms = (test.get("alarms") or {}).get("test", {}).get("any", {})
    return {
        "variant": json.loads((run / "config.json").read_text())["model"]["variant"],
        "epochs": len(epochs),
        "images_per_s": round(rate, 1),
        "sixray1000_full_epoch_s": round(FULL_EPOCH_IMAGES / rate, 1),
        "sixray1000_balanced_epoch_s": round(BALANCED_EPOCH_IMAGES / rate, 1),
        "map": test["map"]["fused"],
        "ap": test["ap"]["fused"],
        "map_among_positives": test.get("separation", {}).get("map"),
        "false_alarms_per_1000": alarms.get("false_alarms_per_1000"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--data-seconds", type=float, required=True)
    parser.add_argument("--loader", required=True)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    rows = [variant_row(args.work / f"run-{v}") for v in ("baseline", "chr")]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    doc = {"gpu": gpu, "cpu_count": os.cpu_count(), "loader": args.loader, "data_seconds": args.data_seconds,
           "rows": rows,
           "full_epoch_goal_met": None if gpu is None else all(
               r["sixray1000_full_epoch_s"] < FULL_EPOCH_GOAL_S for r in rows)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"device: {gpu or 'CPU (small mode)'}; loader {args.loader}; data made in "
          f"{args.data_seconds:.0f} s on {os.cpu_count()} cores")
    print(f"{'variant':<10}{'img/s':>9}{'1000 full':>11}{'balanced':>10}{'mAP':>8}{'among pos':>11}"
          f"{'FA/1000':>9}")
    for r in rows:
        among = "-" if r["map_among_positives"] is None else f"{100 * r['map_among_positives']:.1f}"
        fa = "-" if r["false_alarms_per_1000"] is None else f"{r['false_alarms_per_1000']:.0f}"
        print(f"{r['variant']:<10}{r['images_per_s']:>9.0f}{r['sixray1000_full_epoch_s'] / 60:>10.1f}m"
              f"{r['sixray1000_balanced_epoch_s']:>9.0f}s{100 * (r['map'] or 0):>8.1f}{among:>11}{fa:>9}")


if __name__ == "__main__":
    main()
