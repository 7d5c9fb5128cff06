"""Sweep of the class-balanced loss's easy-negative threshold epsilon (model.loss) on synthetic shards.

Trains the same small CHR (tiny backbone, small inputs) once per (epsilon, seed) and prints the fused
test mAP of the last epoch and the best epoch. epsilon = 0 switches no negative off, so it is the
unbalanced reference (the `hr` variant). The data are shards built by the pipeline, e.g.:

    pipeline synth --out /tmp/sweep/raw --positives 800 --negatives 8000 --size-factor 0.5 --seed 1
    pipeline ingest --raw /tmp/sweep/raw --out /tmp/sweep/manifests
    pipeline build-shards --ratio 10 --manifests /tmp/sweep/manifests --out /tmp/sweep/shards
    python3 bench/sweep_epsilon.py --shards /tmp/sweep/shards/sixray10 --out /tmp/sweep/runs
"""

import csv
import statistics
from pathlib import Path

import click

from model.config import ModelConfig, TrainConfig
from model.train import train


def run_once(shards: str, out: Path, epsilon: float, seed: int, epochs: int) -> list[float]:
    """Train one configuration (or reuse a finished run) and return its per-epoch fused mAP."""
    metrics = out / "metrics.csv"
    if not metrics.exists() or len(metrics.read_text().splitlines()) <= epochs:
        cfg = TrainConfig(shards=shards, out=str(out), epochs=epochs, batch_size=32, lr=0.05,
                          lr_steps=(epochs - 2,), resize=144, crop=128, test_size=128, workers=2,
                          device="cpu", seed=seed,
                          model=ModelConfig(backbone="tiny", variant="chr", epsilon=epsilon))
        train(cfg, resume=True)
    with metrics.open() as f:
        return [float(row["map"]) for row in csv.DictReader(f)]


@click.command()
@click.option("--shards", required=True)
@click.option("--out", default="runs/sweep_epsilon", show_default=True)
@click.option("--epsilons", default="0,0.01,0.05,0.1,0.2", show_default=True)
@click.option("--seeds", default="0,1", show_default=True)
@click.option("--epochs", type=int, default=8, show_default=True)
def main(shards, out, epsilons, seeds, epochs):
    eps_list = [float(e) for e in epsilons.split(",")]
    seed_list = [int(s) for s in seeds.split(",")]
    rows = []
    for eps in eps_list:
        finals, bests = [], []
        for seed in seed_list:
            maps = run_once(shards, Path(out) / f"eps{eps:g}-seed{seed}", eps, seed, epochs)
            finals.append(100 * maps[-1])
            bests.append(100 * max(maps))
        rows.append((eps, finals, bests))
    print(f"\nfused test mAP (%) after {epochs} epochs, seeds {seed_list}")
    print(f"{'epsilon':>8} {'last (per seed)':>24} {'mean last':>10} {'mean best':>10}")
    for eps, finals, bests in rows:
        per_seed = " ".join(f"{m:6.2f}" for m in finals)
        print(f"{eps:>8g} {per_seed:>24} {statistics.mean(finals):>10.2f} {statistics.mean(bests):>10.2f}")


if __name__ == "__main__":
    main()
