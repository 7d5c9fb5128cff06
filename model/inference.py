"""Inference that `model train`, `model eval` and `model predict` share: one forward pass, one scoring loop.

`forward` is the only place a batch goes through the network; `predict` runs it over one rank's share of
a split (scores per output, pointing counts, CAM examples); `gather` merges every rank's share (DDP) so
metrics are computed over the full split and agree on every rank; `summarise` turns predictions into the
numbers of the paper's Tables 2-3. `load_model` rebuilds the network from a checkpoint alone.
"""

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from base.errors import UsageError
from base.vocabulary import CLASSES
from model.alarms import fit_thresholds, thresholds_document
from model.checkpoint import load_checkpoint
from model.chr import STAGE_NAMES, build_model
from model.config import TrainConfig, train_config_from_dict
from model.metrics import class_separation, mean_ap, per_class_ap, pointing_accuracy, pointing_counts
from model.pixels import as_picture, model_input

FUSED = "fused"


def resolve_device(name: str) -> torch.device:
    """The torch device for --device (auto: a CUDA GPU if there is one), checked before any work."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is visible here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: only cpu and cuda are supported")
    return device


def load_model(checkpoint: str | Path, device: torch.device, *, trust: bool = False
               ) -> tuple[torch.nn.Module, TrainConfig, dict]:
    """(model in eval mode on `device`, its training config, the checkpoint) from a checkpoint file alone."""
    ckpt = load_checkpoint(checkpoint, trust=trust)
    tcfg = train_config_from_dict(ckpt["config"])
    model = build_model(tcfg.model)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), tcfg, ckpt


def progress_bar(iterable=None, *, total: int, desc: str, unit: str, enabled: bool = True) -> tqdm:
    """A bar by the pipeline's rule (base/distribute.py): live on a terminal, off when stderr is a
    file or a pipe, where thousands of redraws would bury the log; off everywhere unless `enabled`
    (only rank 0 prints). `bar.disable` tells a caller to print its one summary line instead."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                disable=None if enabled else True)


@torch.no_grad()
def forward(model, images: torch.Tensor, device, *, amp: bool = False, channels_last: bool = False
            ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """Images [B, 3, H, W] (uint8, or normalised float: pixels.model_input) -> ({output: float32 scores [B, C]
    on the CPU}, the stages' CAMs on the CPU): the fused score (mean of the stages' sigmoids) and each
    stage's sigmoid."""
    images = model_input(images, device, channels_last)
    with torch.autocast(device.type, enabled=amp):
        out = model(images)
    scores = {FUSED: out.scores().float().cpu()}
    scores.update({n: torch.sigmoid(x.float()).cpu() for n, x in zip(STAGE_NAMES, out.logits, strict=False)})
    return scores, [c.float().cpu() for c in out.cams]


def pointing_outputs(cams: list[torch.Tensor], fuse: str) -> dict[str, tuple[list[torch.Tensor], str]]:
    """The pointing table's rows: name -> (the CAMs pointed with, how several are fused)."""
    other = "mean" if fuse == "max" else "max"
    rows = {FUSED: (cams, fuse), f"{FUSED}-{other}": (cams, other)}
    rows.update({name: ([c], fuse) for name, c in zip(STAGE_NAMES, cams, strict=False)})
    return rows


def add_pointing(counts: dict, cams, batch, fuse: str, tolerance: float) -> None:
    """Add one batch's pointing hits and misses per row (at 0 px, and at `tolerance` px when > 0)."""
    tolerances = (0.0, tolerance) if tolerance > 0 else (0.0,)
    for name, (maps, rule) in pointing_outputs(cams, fuse).items():
        per_tolerance = pointing_counts(maps, batch.labels, batch.meta, fuse=rule, tolerances=tolerances)
        for tol, batch_counts in zip(tolerances, per_tolerance, strict=True):
            key = name if tol == 0 else f"{name}@{tol:g}px"
            counts[key] = counts.get(key, 0) + batch_counts


@torch.no_grad()
def predict(model, loader, device, *, amp: bool = False, channels_last: bool = False, pointing: bool = False,
            fuse: str = "max", tolerance: float = 0.0, keep_examples: int = 0, progress=None) -> dict:
    """Scores per output for every sample this rank sees; pointing counts (CAMs fused by `fuse`, hits
    within `tolerance` pixels besides exact ones) and a few CAM examples if asked."""
    model.eval()
    ids, labels, difficult, scores = [], [], [], {}
    counts, examples = {}, []
    for batch in loader:
        per_output, cams = forward(model, batch.images, device, amp=amp, channels_last=channels_last)
        for name, s in per_output.items():
            scores.setdefault(name, []).append(s.numpy())
        ids += list(batch.ids)
        labels.append(batch.labels.cpu().numpy())
        difficult.append(batch.difficult.cpu().numpy())
        if pointing:
            add_pointing(counts, cams, batch, fuse, tolerance)
        if len(examples) < keep_examples:
            examples += _examples(batch, cams, keep_examples - len(examples))
        if progress is not None:
            progress.update(len(batch.ids))
    n = len(CLASSES)
    return {
        "ids": ids,
        "labels": np.concatenate(labels) if labels else np.zeros((0, n)),
        "difficult": np.concatenate(difficult) if difficult else np.zeros((0, n), dtype=bool),
        "scores": {k: np.concatenate(v) for k, v in scores.items()},
        "pointing": counts,
        "examples": examples,
    }


def _examples(batch, cams, limit: int) -> list[dict]:
    """Positive test images with boxes, kept with their (un-normalised) input and fused CAMs for overlays."""
    keep = []
    for i, info in enumerate(batch.meta):
        if len(keep) == limit:
            break
        if batch.labels[i].sum() > 0 and info.get("boxes"):
            keep.append({"id": batch.ids[i], "image": as_picture(batch.images[i]), "meta": info,
                         "labels": batch.labels[i].cpu().numpy(), "cams": [c[i].numpy() for c in cams]})
    return keep


def gather(pred: dict) -> dict:
    """Merge every rank's predictions (a no-op without torch.distributed); pointing counts are summed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return pred
    parts = [None] * dist.get_world_size()
    light = {k: v for k, v in pred.items() if k != "examples"}
    dist.all_gather_object(parts, light)
    parts = [p for p in parts if p["ids"]] or parts[:1]  # a rank may get no test sample (fewer shards)
    merged = {
        "ids": [i for p in parts for i in p["ids"]],
        "labels": np.concatenate([p["labels"] for p in parts]),
        "difficult": np.concatenate([p["difficult"] for p in parts]),
        "scores": {k: np.concatenate([p["scores"][k] for p in parts]) for k in parts[0]["scores"]},
        "pointing": {k: sum(p["pointing"][k] for p in parts) for k in parts[0]["pointing"]},
        "examples": pred["examples"],
    }
    return merged


def summarise(pred: dict) -> dict:
    """Per-class AP and mAP per output; the fused output's class separation (AP among the positive images);
    pointing accuracy per class and mean per output (when counted)."""
    labels, difficult = pred["labels"], pred["difficult"].astype(bool)
    summary = {"count": len(pred["ids"]), "classes": list(CLASSES), "ap": {}, "map": {}, "pointing": {}}
    for name, scores in pred["scores"].items():
        aps = per_class_ap(scores, labels, difficult)
        summary["ap"][name] = _floats(aps)
        summary["map"][name] = _float(mean_ap(aps))
    if FUSED in pred["scores"]:
        sep = class_separation(pred["scores"][FUSED], labels, difficult)
        summary["separation"] = {"count": sep["count"], "ap": _floats(sep["ap"]), "map": _float(sep["map"]),
                                 "chance": _floats(sep["chance"]), "spearman": _float(sep["spearman"])}
    for name, counts in pred["pointing"].items():
        acc = pointing_accuracy(counts)
        summary["pointing"][name] = {"accuracy": _floats(acc), "mean": _float(mean_ap(acc)),
                                     "hits": counts[:, 0].tolist(), "misses": counts[:, 1].tolist()}
    return summary


def _float(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _floats(xs) -> list:
    return [_float(x) for x in xs]


def score_split(model, data, shards, split: str, lcfg, device, *, rank: int = 0, world_size: int = 1,
                **kw) -> dict | None:
    """Every rank's predictions over one split of the shards, gathered (`predict`'s keywords pass through);
    None when the split holds no sample (e.g. no val split: nothing held out)."""
    if data.split_info(shards, split, lcfg.val_fraction)["count"] == 0:
        return None
    loader = data.make_loader(shards, split, lcfg, rank=rank, world_size=world_size)
    return gather(predict(model, loader, device, **kw))


def val_thresholds(model, data, shards, lcfg, device, *, target: float, checkpoint, epoch: int,
                   held_out: bool, **kw) -> dict | None:
    """thresholds.json's document (model/alarms.py): per class, the threshold reaching `target` recall on
    the val split (`lcfg.val_fraction` of train); None when there is no val split. `held_out` records
    whether the model was trained without those images (`score_split`'s keywords pass through)."""
    val = score_split(model, data, shards, "val", lcfg, device, **kw)
    if val is None:
        return None
    return thresholds_document(fit_thresholds(val, target), target, checkpoint=checkpoint, epoch=epoch,
                               val_count=len(val["ids"]), val_fraction=lcfg.val_fraction, held_out=held_out)
