"""Does the reference recipe learn the task? Synthetic SIXray10 at the real positive count, on the CPU.

    python3 -m bench.bench_learning --work /tmp/learning [--seed 0] [--train-args '--epochs 12']

Every step is a command a user types, run as a subprocess from this checkout:

    pipeline synth --positives 8929 --negatives 89290 --size-factor 0.5 --seed SEED   (the real class mix)
    pipeline ingest, pipeline build-shards --ratio 10
    model train --preset reference --device cpu      (model/config.py: the recipe, balanced epochs)
    model eval --json                                (Tables 2-3, class separation, the alarm table)

It prints, against the issue's goals: fused mAP on the synthetic SIXray10 test split, each class's AP
beside its chance level (the class's share of the test images), mAP among the positive test images (how
well the classes are told apart) and the false alarms per 1,000 negative bags at 90% recall with the
thresholds fitted on the val split, then the wall time of every step. A rerun with the same --work resumes
(synth, ingest, shards and a finished training are skipped); `--train-args` appends flags to the
recipe's (a probe: use another --work-run name with --run).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"map": 70.0, "class_ap": 50.0, "separation": 75.0, "false_alarms": 150.0}
TARGET_RECALL = 0.9
CLASSES = ("gun", "knife", "wrench", "pliers", "scissors")


def run(args: list[str], log: Path) -> float:
    """One command to completion, its output into `log`; returns its wall time in seconds."""
    started = time.perf_counter()
    print(f"$ {' '.join(args)}", flush=True)
    with open(log, "a") as f:
        subprocess.run(args, cwd=ROOT, check=True, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    print(f"  ({seconds:.0f} s)", flush=True)
    return seconds


def build_data(work: Path, seed: int, log: Path) -> dict:
    raw, manifests, shards = work / "raw", work / "manifests", work / "shards"
    return {
        "synth": run(["pipeline", "synth", "--out", str(raw), "--positives", "8929", "--negatives", "89290",
                      "--size-factor", "0.5", "--seed", str(seed)], log),
        "ingest": run(["pipeline", "ingest", "--raw", str(raw), "--out", str(manifests)], log),
        "build-shards": run(["pipeline", "build-shards", "--ratio", "10", "--manifests", str(manifests),
                             "--out", str(shards)], log),
    }


def train_and_eval(work: Path, run_name: str, extra: list[str], log: Path) -> dict:
    shards, out = work / "shards" / "sixray10", work / run_name
    resume = ["--resume"] if (out / "last.pt").exists() else []
    times = {}
    if not (out / "test.json").exists() or resume:
        times["train"] = run(["model", "train", "--shards", str(shards), "--out", str(out), "--preset",
                              "reference", "--device", "cpu", *extra, *resume], log)
    times["eval"] = run(["model", "eval", "--checkpoint", str(out / "best.pt"), "--shards", str(shards),
                         "--out", str(out / "eval"), "--device", "cpu", "--json", "--overlays", "0"], log)
    return times


def goals_table(metrics: dict) -> tuple[list[str], dict]:
    """The printed table and the figures in percent, each goal marked met or not."""
    aps, chance = metrics["ap"]["fused"], metrics["chance"]
    sep, alarms = metrics["separation"], metrics["alarms"]
    fused = 100 * metrics["map"]["fused"]
    among = 100 * sep["map"]
    false_alarms = alarms["test"]["any"]["false_alarms_per_1000"]
    figures = {"map": fused, "ap": [100 * a for a in aps], "chance": [100 * c for c in chance],
               "separation": among, "separation_ap": [100 * a for a in sep["ap"]],
               "spearman": sep["spearman"], "false_alarms_per_1000": false_alarms}

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = [
        f"{'':<26}" + "".join(f"{c:>9}" for c in CLASSES) + f"{'mean':>9}",
        f"{'AP (fused, test)':<26}" + "".join(f"{100 * a:>9.1f}" for a in aps) + f"{fused:>9.1f}",
        f"{'chance (share of images)':<26}" + "".join(f"{100 * c:>9.1f}" for c in chance),
        f"{'AP among positives':<26}" + "".join(f"{100 * a:>9.1f}" for a in sep["ap"]) + f"{among:>9.1f}",
        "",
        f"fused mAP {fused:.1f} (goal >= {GOALS['map']:g}: {mark(fused >= GOALS['map'])})",
        f"every class AP >= {GOALS['class_ap']:g}: {mark(min(aps) * 100 >= GOALS['class_ap'])} "
        f"(lowest {100 * min(aps):.1f})",
        f"mAP among positives {among:.1f} (goal >= {GOALS['separation']:g}: "
        f"{mark(among >= GOALS['separation'])}); mean Spearman between classes {sep['spearman']:.2f}",
        f"false alarms per 1,000 negative bags at {100 * TARGET_RECALL:g}% recall (val thresholds): "
        f"{false_alarms:.0f} (goal <= {GOALS['false_alarms']:g}: "
        f"{mark(false_alarms <= GOALS['false_alarms'])})",
    ]
    return lines, figures


def chance_levels(eval_dir: Path) -> list[float]:
    """The share of the (non-difficult) test images holding each class: the AP of a random ranking."""
    import pyarrow.parquet as pq

    pred = pq.read_table(eval_dir / "predictions.parquet").to_pydict()
    shares = []
    for c in CLASSES:
        pairs = zip(pred[f"label_{c}"], pred[f"difficult_{c}"], strict=True)
        kept = [label for label, hard in pairs if not hard]
        shares.append(sum(label > 0 for label in kept) / len(kept))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/learning"))
    parser.add_argument("--seed", type=int, default=0, help="the synthetic data's seed")
    parser.add_argument("--run", default="run", help="the run folder's name under --work")
    parser.add_argument("--train-args", default="", help="flags appended to the recipe's (a probe)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "bench_learning.log"
    started = time.perf_counter()
    times = build_data(args.work, args.seed, log)
    times.update(train_and_eval(args.work, args.run, shlex.split(args.train_args), log))
    eval_dir = args.work / args.run / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    metrics["chance"] = chance_levels(eval_dir)
    lines, figures = goals_table(metrics)
    config = json.loads((args.work / args.run / "config.json").read_text())
    total = time.perf_counter() - started
    lines += ["", "wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
              + f"; total {total / 60:.1f} min (budget 60)", f"cores: {os.cpu_count()}"]
    print("\n".join(lines))
    result = {"figures": figures, "times_s": times, "total_s": total, "config": config,
              "train_args": args.train_args, "seed": args.seed}
    (args.work / f"{args.run}-learning.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
