"""`model` command line: thin click wrappers over model.train, model.evaluate, model.ablate, model.predict and
model.export."""

import inspect
import os
from dataclasses import fields

import click
from click.core import ParameterSource

from base.errors import Commands, UsageError
from model.backbones import BACKBONES
from model.config import (
    LOSS_RULES,
    NORMALISATIONS,
    POINTING_FUSE,
    PRESETS,
    REFINEMENTS,
    SELECT_BY,
    SELECT_ON,
    VARIANTS,
    ModelConfig,
    TrainConfig,
)
from model.evaluate import evaluate_checkpoint
from model.predict import predict_command


def signature_defaults(fn) -> dict:
    """A function's keyword defaults: the command's flags show and pass the function's own."""
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()}


EVAL = signature_defaults(evaluate_checkpoint)
PREDICT = signature_defaults(predict_command)


@click.group(cls=Commands)
def main():
    """CHR training, evaluation, the paper's ablation, prediction on new scans and ONNX export."""


def _options(*decorators):
    """Several click options as one decorator, applied in the order listed."""
    def apply(f):
        for decorator in reversed(decorators):
            f = decorator(f)
        return f
    return apply


_model, _train = ModelConfig(), TrainConfig()

RECIPE = _options(
    click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
                 help="official: the authors' code (their refinement, loss rule logit < -20, batch 320, best "
                      "epoch on test); paper: the paper's text (its literal loss rule, epsilon 0.5). Flags "
                      "you type override it"),
    click.option("--refinement", type=click.Choice(REFINEMENTS), default=_model.refinement, show_default=True,
                 help="official: the authors' block at each stage's width; light: a narrower 1x1+3x3 block"),
    click.option("--refine-channels", type=int, default=None,
                 help="light refinement width (default min(128, C))"),
    click.option("--loss-rule", type=click.Choice(LOSS_RULES), default=_model.loss_rule, show_default=True,
                 help="negatives the class-balanced loss counts (ch/chr variants; README)"),
    click.option("--loss-normalisation", type=click.Choice(NORMALISATIONS), default=_model.loss_normalisation,
                 show_default=True, help="each stage's loss over all terms (mean) or over the counted ones"),
    click.option("--epsilon", type=float, default=_model.epsilon, show_default=True,
                 help="threshold of the loss rule on the sigmoid probability"),
    click.option("--epochs", type=int, default=_train.epochs, show_default=True),
    click.option("--batch-size", type=int, default=_train.batch_size, show_default=True, help="per process"),
    click.option("--lr", type=float, default=_train.lr, show_default=True),
    click.option("--momentum", type=float, default=_train.momentum, show_default=True),
    click.option("--weight-decay", type=float, default=_train.weight_decay, show_default=True),
    click.option("--lr-steps", default=",".join(map(str, _train.lr_steps)), show_default=True,
                 help="comma-separated epochs where the learning rate is multiplied by 0.1"),
    click.option("--resize", type=int, default=None, help="train resize (default: 256; inception_v3 342)"),
    click.option("--crop", type=int, default=None, help="train crop (default: 224; inception_v3 299)"),
    click.option("--test-size", type=int, default=None,
                 help="test input side (default: 224; inception_v3 299)"),
    click.option("--negatives-per-positive", type=click.FloatRange(min=0), default=None,
                 help="balanced epochs: every train positive and K negatives per positive, a fresh sample "
                      "each epoch rotating through all negatives (default: every negative, every epoch)"),
    click.option("--repeat-threshold", type=click.FloatRange(0, 1), default=_train.repeat_threshold,
                 show_default=True,
                 help="repeat-factor sampling (LVIS): a positive holding a class that fewer than this share "
                      "of the train positives hold comes sqrt(threshold / share) times per epoch on average "
                      "(0: off)"),
    click.option("--workers", type=int, default=_train.workers, show_default=True),
    click.option("--loader", type=click.Choice(["cpu", "dali"]), default=_train.loader, show_default=True),
    click.option("--device", default=_train.device, show_default=True, help="auto | cpu | cuda | cuda:N"),
    click.option("--amp/--no-amp", default=None, help="mixed precision (default: on for CUDA)"),
    click.option("--channels-last/--no-channels-last", default=None, help="(default: on for CUDA)"),
    click.option("--weights", type=click.Path(exists=True, dir_okay=False), default=None,
                 help="local ImageNet state dict for the backbone, as torchvision publishes it"),
    click.option("--select-on", type=click.Choice(SELECT_ON), default=_train.select_on, show_default=True,
                 help="split the best epoch is chosen on; test is the authors' (optimistic) choice"),
    click.option("--select-by", type=click.Choice(SELECT_BY), default=_train.select_by, show_default=True,
                 help="the output whose mAP picks the best epoch: fused, or the top stage's (the authors')"),
    click.option("--val-fraction", type=float, default=_train.val_fraction, show_default=True,
                 help="share of the train split held out (by id hash) as the val split"),
    click.option("--pointing-fuse", type=click.Choice(POINTING_FUSE), default=_train.pointing_fuse,
                 show_default=True,
                 help="the fused CAM's peak: max across scales (the paper) or of their mean"),
    click.option("--pointing-tolerance", type=float, default=_train.pointing_tolerance, show_default=True,
                 help="also count a peak within this many pixels of a box as a hit (Zhang et al.: 15)"),
)
"""Flags shared by `train` and `ablate`: everything of a training run but its data, variant and seed."""

_MODEL_FIELDS = {f.name for f in fields(ModelConfig)}


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """A comma-separated list of integers ("20" or "6,8"; empty: none)."""
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r}: comma-separated whole numbers expected, e.g. 20,27") from None


def parse_epsilons(text: str) -> list[float]:
    """--epsilons: comma-separated probability thresholds, each in [0, 1)."""
    try:
        values = [float(e) for e in text.split(",") if e.strip()]
    except ValueError:
        values = []
    if not values or not all(0 <= e < 1 for e in values):
        raise UsageError(f"--epsilons {text!r}: comma-separated thresholds in [0, 1) expected, "
                         "e.g. 0,0.01,0.1")
    return values


def recipe(ctx: click.Context, kw: dict) -> tuple[dict, dict]:
    """(ModelConfig fields, TrainConfig fields) from the flags, the preset filling the untyped ones."""
    kw = {**kw, "lr_steps": parse_ints(kw["lr_steps"], "--lr-steps")}
    preset = dict(PRESETS.get(kw.pop("preset"), {}))
    if "global_batch" in preset:  # the authors' batch is over all their GPUs: split it over the ranks
        preset["batch_size"] = max(1, preset.pop("global_batch") // int(os.environ.get("WORLD_SIZE", 1)))
    for name, value in preset.items():
        if name in kw and ctx.get_parameter_source(name) == ParameterSource.DEFAULT:
            kw[name] = value
    model = {k: kw.pop(k) for k in list(kw) if k in _MODEL_FIELDS}
    return model, kw


@main.command("train")
@click.option("--shards", default=_train.shards, show_default=True, help="build-shards output folder")
@click.option("--out", default=_train.out, show_default=True, help="run folder")
@click.option("--backbone", type=click.Choice(list(BACKBONES)), default=_model.backbone, show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default=_model.variant, show_default=True)
@RECIPE
@click.option("--seed", type=int, default=_train.seed, show_default=True)
@click.option("--resume", is_flag=True, help="continue from <out>/last.pt")
@click.pass_context
def train_command(ctx, resume, **kw):
    """Train CHR on webdataset shards; picks the best epoch on the val (or test) split, then prints that
    epoch's test Tables 2-3."""
    from model.report import format_tables
    from model.train import train

    model, rest = recipe(ctx, kw)
    summary = train(TrainConfig(model=ModelConfig(**model), **rest), resume=resume)
    if int(os.environ.get("RANK", 0)) == 0:  # under torchrun: print once
        click.echo(format_tables(summary))


@main.command("eval")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--shards", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default=None, help="report folder (default: <checkpoint folder>/eval)")
@click.option("--batch-size", type=click.IntRange(min=1), default=EVAL["batch_size"], show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=EVAL["workers"], show_default=True)
@click.option("--loader", type=click.Choice(["cpu", "dali"]), default=EVAL["loader"], show_default=True)
@click.option("--device", default=EVAL["device"], show_default=True)
@click.option("--test-size", type=click.IntRange(min=1), default=None,
              help="input side (default: the checkpoint's)")
@click.option("--pointing-fuse", type=click.Choice(POINTING_FUSE), default=None,
              help="the fused CAM's peak: max across scales or of their mean (default: the checkpoint's)")
@click.option("--pointing-tolerance", type=click.FloatRange(min=0), default=None,
              help="also count a peak within this many pixels of a box as a hit (default: the checkpoint's)")
@click.option("--overlays", type=click.IntRange(min=0), default=EVAL["overlays"], show_default=True,
              help="CAM overlay PNGs to write")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON instead of tables")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=EVAL["target_recall"],
              show_default=True,
              help="per class, the alarm threshold reaching this recall on the val split (thresholds.json)")
@click.option("--trust-checkpoint", is_flag=True,
              help="load a checkpoint that needs a full unpickle (it can run code): only one you trust")
def eval_command(checkpoint, out, as_json, **kw):
    """Per-class AP, mAP and pointing accuracy per stage and fused (paper Tables 2-3), with plots and every
    image's scores in predictions.parquet."""
    import json
    from pathlib import Path

    from model.evaluate import evaluate_checkpoint
    from model.report import format_tables

    out = out or str(Path(checkpoint).parent / "eval")
    summary = evaluate_checkpoint(checkpoint, out=out, **kw)
    click.echo(json.dumps(summary, indent=1) if as_json else format_tables(summary))
    click.echo(f"report written to {out}", err=True)


@main.command("ablate")
@click.option("--shards", "shard_dirs", required=True, multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="a subset's build-shards folder; repeat for several (sixray10, sixray100, ...)")
@click.option("--out", default="runs/ablation", show_default=True,
              help="the tables, and one run folder per training")
@click.option("--backbone", type=click.Choice(list(BACKBONES)), default="resnet34", show_default=True,
              help="the paper's Table 4 uses ResNet34")
@click.option("--variants", default=",".join(VARIANTS), show_default=True, help="comma-separated")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="seeds 0..N-1 per variant and subset")
@click.option("--epsilons", default=None,
              help="comma-separated; several: the ch/chr runs try each and keep the best on --select-on "
                   "(default: --epsilon alone)")
@RECIPE
@click.pass_context
def ablate_command(ctx, shard_dirs, out, variants, seeds, epsilons, **kw):
    """The paper's Table 4: every variant on every subset for every seed (finished runs are reused,
    unfinished ones resume), as Markdown, CSV and a PNG chart under --out."""
    from model.ablate import run_ablation

    model, rest = recipe(ctx, kw)
    base = TrainConfig(model=ModelConfig(**model), **rest)
    eps = parse_epsilons(epsilons) if epsilons else [base.model.epsilon]
    names = [v.strip() for v in variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise click.BadParameter(f"unknown {unknown}; valid: {', '.join(VARIANTS)}", param_hint="--variants")
    paths = run_ablation(list(shard_dirs), names, seeds, eps, base, out)
    click.echo(paths[0].read_text())
    click.echo("written: " + ", ".join(map(str, paths)), err=True)


@main.command("predict")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a `model train` checkpoint (or pass --onnx)")
@click.option("--onnx", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a `model export` file instead: scored by onnxruntime, no torch math")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True),
              help="a folder of JPEGs (or a raw download's root), a build-shards folder or a manifest")
@click.option("--out", required=True, help="folder for predictions.parquet and the cam_*.png overlays")
@click.option("--thresholds", type=click.Path(exists=True, dir_okay=False), default=None,
              help="alarm thresholds (thresholds.json, or {\"gun\": 0.4, ...}); default: the ones `model "
                   "eval` or `model train` wrote for this checkpoint, or the ONNX file's")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default=PREDICT["split"],
              show_default=True,
              help="shards and manifests only: which split to score")
@click.option("--raw", type=click.Path(exists=True, file_okay=False), default=None,
              help="a manifest's raw root (default: the one the manifest records)")
@click.option("--cams", type=click.IntRange(min=0), default=PREDICT["cams"], show_default=True,
              help="heatmap overlays for the N highest-scoring scans")
@click.option("--batch-size", type=click.IntRange(min=1), default=PREDICT["batch_size"], show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="decoding processes (default: every core)")
@click.option("--device", default=PREDICT["device"], show_default=True,
              help="auto | cpu | cuda | cuda:N (torch only)")
@click.option("--trust-checkpoint", is_flag=True,
              help="load a checkpoint that needs a full unpickle (it can run code): only one you trust")
def predict_cli(**kw):
    """Score new scans: per-class fused scores, the alarm decision per class, and each file's status (an
    unreadable file is a row, not a crash) in predictions.parquet; same decode and scores as `model eval`."""
    from model.predict import format_summary, predict_command

    click.echo(format_summary(predict_command(**kw)))


@main.command("export")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--onnx", "onnx_path", required=True, help="the ONNX file to write")
@click.option("--cams", is_flag=True, help="also output the stages' CAMs (for `model predict --onnx --cams`)")
@click.option("--thresholds", type=click.Path(exists=True, dir_okay=False), default=None,
              help="alarm thresholds to embed (default: the ones found for the checkpoint, if any)")
@click.option("--trust-checkpoint", is_flag=True,
              help="load a checkpoint that needs a full unpickle (it can run code): only one you trust")
def export_cli(checkpoint, onnx_path, cams, thresholds, trust_checkpoint):
    """The fused-score model as ONNX: uint8 RGB [batch, 3, S, S] in (S: the checkpoint's test size), fused
    scores [batch, 5] (and the CAMs) out, dynamic batch axis; checked against PyTorch on the CPU."""
    from model.export import export_onnx

    info = export_onnx(checkpoint, onnx_path, cams=cams, thresholds=thresholds,
                       trust_checkpoint=trust_checkpoint)
    size = info["test_size"]
    click.echo(f"{onnx_path}: input uint8 [batch, 3, {size}, {size}], outputs {', '.join(info['outputs'])}; "
               f"thresholds: {info['thresholds_from'] or 'none found'}; max |ONNX - PyTorch| "
               f"{info['max_abs_diff']:.1e}")


if __name__ == "__main__":  # torchrun -m model.cli train ...
    main()
