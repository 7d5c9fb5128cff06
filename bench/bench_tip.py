"""The gain of threat image projection, measured: the same model trained on a SIXray1000-like synthetic
subset without and with N TIP positives, both evaluated on the same untouched test split, over seeds.

Steps (each resumes; a finished training is reused):
1. `pipeline synth` a raw folder, `pipeline ingest` it (our split);
2. `pipeline build-shards --ratio 1000 --positives-per-class K --exclude-source tip`: the baseline's
   subset, few positives per class against every negative;
3. `pipeline threats --subset manifests/sixray1000.parquet`: threats cut from that subset's train
   positives only (the baseline sees the same positives; no other scan lends a threat);
4. `pipeline tip --count N` into the raw folder (train-split negatives only), `pipeline ingest` again:
   TIP rows are train, the real rows' split does not move;
5. `pipeline build-shards` again without the exclusion: the same real selection plus the N TIP scans;
6. the evaluation set: every usable test row of the manifest (all test positives and negatives; TIP
   scans are never test), built from a copy of the manifest so the two training subsets stay apart;
7. `model train --preset reference` per arm and seed (the reference recipe: small CHR, 128-pixel inputs,
   balanced epochs, best epoch on the val part of train; `--epochs` overrides its 30), then `model eval`
   of that epoch on the evaluation set: fused AP per class and mAP.

Prints the Markdown table (per class mean AP, mAP mean ± sample std over seeds, gain) and writes
`bench/results/tip_synthetic.csv` and the TIP contact sheet `bench/results/tip_preview.png`.
`--speed` then times `pipeline tip --workers 1` at the real size (synthetic negatives of the real size
distribution, the library above): TIP scans per second on one core.

    nice python3 -m bench.bench_tip --work /tmp/bench_tip [--speed]
"""

import csv
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

from base.vocabulary import CLASSES

ROOT = Path(__file__).resolve().parents[1]


def run(group: str, *args) -> str:
    """`pipeline ...` or `model ...` in a child process (the same code the console scripts run)."""
    code = f"import sys; sys.argv[0] = {group!r}; from {group}.cli import main; main()"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        command = " ".join(map(str, args))
        sys.exit(f"{group} {command} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    first = (proc.stdout.strip().splitlines() or [""])[0]
    print(f"[{time.perf_counter() - started:6.1f} s] {group} {args[0]}: {first}", flush=True)
    return proc.stdout


@click.command()
@click.option("--work", type=click.Path(file_okay=False), default="/tmp/bench_tip", show_default=True)
@click.option("--positives", type=int, default=500, show_default=True)
@click.option("--negatives", type=int, default=5000, show_default=True)
@click.option("--size-factor", type=float, default=0.5, show_default=True)
@click.option("--positives-per-class", type=int, default=30, show_default=True,
              help="SIXray1000's 1,000 scaled down: the subset's positives per class (80% train).")
@click.option("--tip", "tip_count", type=int, default=1000, show_default=True, help="TIP scans (N).")
@click.option("--seeds", default="0,1", show_default=True)
@click.option("--epochs", type=int, default=None, help="instead of the reference recipe's")
@click.option("--data-seed", type=int, default=11, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--speed", is_flag=True, help="Also time TIP on one core at the real size.")
def main(work, positives, negatives, size_factor, positives_per_class, tip_count, seeds, epochs, data_seed,
         workers, speed):
    w = Path(work)
    raw, manifests, started = w / "raw", w / "manifests", time.perf_counter()
    wk = ("--workers", workers)
    run("pipeline", "synth", "--out", raw, "--positives", positives, "--negatives", negatives,
        "--size-factor", size_factor, "--seed", data_seed, *wk)
    run("pipeline", "ingest", "--raw", raw, "--out", manifests, *wk)
    subset = ("--ratio", 1000, "--positives-per-class", positives_per_class, "--manifests", manifests)
    base_out = run("pipeline", "build-shards", *subset, "--out", w / "shards_base", "--exclude-source", "tip",
                   *wk)
    threats = run("pipeline", "threats", "--raw", raw, "--out", w / "threats", "--manifests", manifests,
                  "--subset", manifests / "sixray1000.parquet", *wk)
    preview = ROOT / "bench/results/tip_preview.png"
    tip = run("pipeline", "tip", "--raw", raw, "--threats", w / "threats", "--count", tip_count, "--out", raw,
              "--manifests", manifests, "--seed", data_seed, "--preview", preview, *wk)
    run("pipeline", "ingest", "--raw", raw, "--out", manifests, *wk)
    tip_out = run("pipeline", "build-shards", *subset, "--out", w / "shards_tip", *wk)
    (w / "manifests_eval").mkdir(parents=True, exist_ok=True)
    shutil.copy2(manifests / "manifest.parquet", w / "manifests_eval" / "manifest.parquet")
    eval_out = run("pipeline", "build-shards", "--ratio", 1000, "--positives-per-class", 10**6, "--manifests",
                   w / "manifests_eval", "--out", w / "shards_eval", "--exclude-source", "tip", *wk)
    data_s = time.perf_counter() - started
    print("\n".join(["", base_out, tip_out, eval_out, threats, tip]))

    recipe = ("--preset", "reference", "--workers", workers, "--device", "cpu")
    if epochs:
        recipe += ("--epochs", epochs, "--lr-steps", f"{round(epochs * 2 / 3)},{round(epochs * 9 / 10)}")
    results = []
    for seed in (int(s) for s in seeds.split(",")):
        for arm in ("base", "tip"):
            out = w / "runs" / f"{arm}-seed{seed}"
            metrics = out / "eval_all" / "metrics.json"
            if not metrics.exists():
                if not (out / "test.json").exists():
                    resume = ["--resume"] if (out / "last.pt").exists() else []
                    run("model", "train", "--shards", w / f"shards_{arm}" / "sixray1000", "--out", out,
                        *recipe, "--seed", seed, *resume)
                run("model", "eval", "--checkpoint", out / "best.pt", "--shards",
                    w / "shards_eval" / "sixray1000", "--out", out / "eval_all", "--workers", workers,
                    "--device", "cpu", "--overlays", 0)
            summary = json.loads(metrics.read_text())
            fused = "fused" if "fused" in summary["ap"] else next(iter(summary["ap"]))
            ap = summary["ap"][fused]
            per_class = {c: 100 * (ap[k] or 0) for k, c in enumerate(CLASSES)}  # ap: a list, class order
            results.append({"arm": arm, "seed": seed, **per_class, "map": 100 * summary["map"][fused],
                            "test_images": summary["count"]})
    total_s = time.perf_counter() - started

    path = ROOT / "bench/results/tip_synthetic.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    print(f"\ndata {data_s / 60:.1f} min, total {total_s / 60:.1f} min; per run: {path}\n")
    print(table(results))
    if speed:
        time_tip(w, data_seed)


def time_tip(w: Path, seed: int, negatives: int = 200, count: int = 2000) -> None:
    """`pipeline tip --workers 1` into a fresh folder, over negatives of the real size distribution."""
    raw, manifests = w / "speed" / "raw", w / "speed" / "manifests"
    run("pipeline", "synth", "--out", raw, "--positives", 10, "--negatives", negatives, "--size-factor", 1.0,
        "--seed", seed)  # a few positives: label files with rows in every subset
    run("pipeline", "ingest", "--raw", raw, "--out", manifests)
    shutil.rmtree(w / "speed" / "tip", ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = run("pipeline", "tip", "--raw", raw, "--threats", w / "threats", "--count", count, "--out",
              w / "speed" / "tip", "--manifests", manifests, "--workers", 1, "--chunk-size", count)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(out)
    print(f"CPU time of the whole command (start-up, manifest and library reads included): {cpu:.2f} s, "
          f"{count / cpu:.1f} TIP scans per CPU second (the wall-clock rate above counts time other "
          "processes took from the core)")


def table(results: list[dict]) -> str:
    """Markdown: per arm the mean fused AP per class and mAP (mean ± sample std over seeds), then the gain."""
    def stats(arm, key):
        values = [r[key] for r in results if r["arm"] == arm]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    head = " | ".join(c.capitalize() for c in CLASSES)
    lines = [f"| training set | {head} | mAP (mean ± std) | mAP per seed |",
             "|---|" + "---:|" * (len(CLASSES) + 2)]
    for arm, name in (("base", "SIXray1000-like"), ("tip", "+ TIP")):
        cells = " | ".join(f"{stats(arm, c)[0]:.2f}" for c in CLASSES)
        mean, std = stats(arm, "map")
        per_seed = " / ".join(f"{r['map']:.2f}" for r in results if r["arm"] == arm)
        lines.append(f"| {name} | {cells} | {mean:.2f} ± {std:.2f} | {per_seed} |")
    gains = " | ".join(f"{stats('tip', c)[0] - stats('base', c)[0]:+.2f}" for c in CLASSES)
    diff = stats("tip", "map")[0] - stats("base", "map")[0]
    lines.append(f"| gain | {gains} | {diff:+.2f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
