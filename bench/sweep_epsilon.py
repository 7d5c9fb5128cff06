"""Sweep of the class-balanced loss's threshold epsilon (model.loss) on synthetic shards.

Trains the same small CHR (tiny backbone, small inputs) once per (epsilon, seed), choosing each run's
best epoch on the validation split (held out of train by id hash), and prints per epsilon the mean over
seeds of that epoch's val mAP, which is what a choice of epsilon may look at, and its test mAP, which it
may not. Under `drop-easy`, epsilon = 0 switches no negative off: the unbalanced reference. Finished runs
are reused (model/ablate.py's rule). The data are shards built by the pipeline, e.g.:

    pipeline synth --out /tmp/sweep/raw --positives 800 --negatives 8000 --size-factor 0.5 --seed 1
    pipeline ingest --raw /tmp/sweep/raw --out /tmp/sweep/manifests
    pipeline build-shards --ratio 10 --manifests /tmp/sweep/manifests --out /tmp/sweep/shards
    python3 -m bench.sweep_epsilon --shards /tmp/sweep/shards/sixray10 --out /tmp/sweep/runs

`model ablate --variants chr --epsilons ...` makes the same choice inside the Table 4 ablation.
"""

import statistics
from pathlib import Path

import click

from model.ablate import run_once
from model.config import LOSS_RULES, NORMALISATIONS, ModelConfig, TrainConfig


@click.command()
@click.option("--shards", required=True)
@click.option("--out", default="runs/sweep_epsilon", show_default=True)
@click.option("--epsilons", default="0,0.01,0.05,0.1,0.2", show_default=True)
@click.option("--seeds", default="0,1", show_default=True)
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--rule", type=click.Choice(LOSS_RULES), default=ModelConfig.loss_rule, show_default=True)
@click.option("--normalisation", type=click.Choice(NORMALISATIONS), default=ModelConfig.loss_normalisation,
              show_default=True)
def main(shards, out, epsilons, seeds, epochs, rule, normalisation):
    seed_list = [int(s) for s in seeds.split(",")]
    print(f"\nfused mAP (%) of the epoch chosen on val, {epochs} epochs, rule {rule}, {normalisation} "
          f"normalisation, mean over seeds {seed_list}")
    print(f"{'epsilon':>8} {'val':>7} {'test':>7} {'test per seed':>20}")
    for eps in (float(e) for e in epsilons.split(",")):
        model = ModelConfig(backbone="tiny", variant="chr", epsilon=eps, loss_rule=rule,
                            loss_normalisation=normalisation)
        folder = Path(out) / f"{rule}-{normalisation}-eps{eps:g}"
        runs = [run_once(run_config(shards, folder / f"seed{s}", epochs, s, model)) for s in seed_list]
        val = statistics.mean(100 * r["selected"]["map"] for r in runs)
        test = [100 * (r["map"]["fused"] or 0) for r in runs]
        per_seed = " ".join(f"{t:6.2f}" for t in test)
        print(f"{eps:>8g} {val:>7.2f} {statistics.mean(test):>7.2f} {per_seed:>20}")


def run_config(shards: str, out: Path, epochs: int, seed: int, model: ModelConfig) -> TrainConfig:
    """The demo's CPU recipe: batch 32, lr 0.05 (x0.1 two epochs before the end), 128-pixel crops."""
    return TrainConfig(shards=shards, out=str(out), epochs=epochs, batch_size=32, lr=0.05,
                       lr_steps=(epochs - 2,), resize=144, crop=128, test_size=128, workers=2, device="cpu",
                       seed=seed, model=model)

if __name__ == "__main__":
    main()
