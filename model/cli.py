"""`model` command line: thin click wrappers over model.train.train and model.evaluate."""

import os

import click

from model.backbones import BACKBONES
from model.config import DEFAULT_EPSILON, VARIANTS, ModelConfig, TrainConfig


@click.group()
def main():
    """CHR training and evaluation."""


# --- train / eval (model/train.py, model/evaluate.py) ---

_defaults = TrainConfig()


@main.command("train")
@click.option("--shards", default=_defaults.shards, show_default=True, help="build-shards output folder")
@click.option("--out", default=_defaults.out, show_default=True, help="run folder")
@click.option("--backbone", type=click.Choice(list(BACKBONES)), default=ModelConfig.backbone,
              show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default=ModelConfig.variant, show_default=True)
@click.option("--epsilon", type=float, default=DEFAULT_EPSILON, show_default=True,
              help="easy-negative probability threshold of the class-balanced loss")
@click.option("--refine-channels", type=int, default=None, help="refined feature width (default min(128, C))")
@click.option("--epochs", type=int, default=_defaults.epochs, show_default=True)
@click.option("--batch-size", type=int, default=_defaults.batch_size, show_default=True, help="per process")
@click.option("--lr", type=float, default=_defaults.lr, show_default=True)
@click.option("--momentum", type=float, default=_defaults.momentum, show_default=True)
@click.option("--weight-decay", type=float, default=_defaults.weight_decay, show_default=True)
@click.option("--lr-steps", default=",".join(map(str, _defaults.lr_steps)), show_default=True,
              help="comma-separated epochs where the learning rate is multiplied by 0.1")
@click.option("--resize", type=int, default=_defaults.resize, show_default=True)
@click.option("--crop", type=int, default=_defaults.crop, show_default=True)
@click.option("--test-size", type=int, default=_defaults.test_size, show_default=True)
@click.option("--shuffle-buffer", type=int, default=_defaults.shuffle_buffer, show_default=True)
@click.option("--workers", type=int, default=_defaults.workers, show_default=True)
@click.option("--loader", type=click.Choice(["cpu", "dali"]), default=_defaults.loader, show_default=True)
@click.option("--device", default=_defaults.device, show_default=True, help="auto | cpu | cuda | cuda:N")
@click.option("--amp/--no-amp", default=None, help="mixed precision (default: on for CUDA)")
@click.option("--channels-last/--no-channels-last", default=None, help="(default: on for CUDA)")
@click.option("--seed", type=int, default=_defaults.seed, show_default=True)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="local ImageNet state dict for the backbone (torchvision key names)")
@click.option("--resume", is_flag=True, help="continue from <out>/last.pt")
def train_command(backbone, variant, epsilon, refine_channels, lr_steps, resume, **kw):
    """Train CHR on webdataset shards; evaluates on the test split after every epoch."""
    from model.evaluate import format_tables
    from model.train import train

    model = ModelConfig(backbone=backbone, variant=variant, epsilon=epsilon, refine_channels=refine_channels)
    steps = tuple(int(s) for s in lr_steps.split(",") if s.strip())
    summary = train(TrainConfig(model=model, lr_steps=steps, **kw), resume=resume)
    if summary is not None and int(os.environ.get("RANK", 0)) == 0:  # under torchrun: print once
        click.echo(format_tables(summary))


@main.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--shards", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, help="report folder (default: <checkpoint folder>/eval)")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--loader", type=click.Choice(["cpu", "dali"]), default="cpu", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--test-size", type=int, default=None, help="input side (default: the checkpoint's)")
@click.option("--overlays", type=int, default=6, show_default=True, help="CAM overlay PNGs to write")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON instead of tables")
def eval_command(checkpoint, out, as_json, **kw):
    """Per-class AP, mAP and pointing accuracy per stage and fused (paper Tables 2-3), with plots."""
    import json
    from pathlib import Path

    from model.evaluate import evaluate_checkpoint, format_tables

    out = out or str(Path(checkpoint).parent / "eval")
    summary = evaluate_checkpoint(checkpoint, out=out, **kw)
    click.echo(json.dumps(summary, indent=1) if as_json else format_tables(summary))
    click.echo(f"report written to {out}", err=True)


if __name__ == "__main__":  # torchrun -m model.cli train ...
    main()
