"""CHR training loop, nanoGPT style: one function you can read top to bottom.

Single process: `model train ...`. Several processes (GPUs or nodes): `torchrun --nproc_per_node N -m
model.cli train ...`; torchrun's RANK / WORLD_SIZE / LOCAL_RANK select the process group (nccl on CUDA,
gloo on the CPU), each rank reads its own shards, gradients are averaged by DDP, and every rank's
predictions are gathered so the metrics are over the full split. After every epoch the model is scored on
the selection split (`val`: a held-out part of the train split; `test`: the authors' choice); the best
epoch's weights then get one pass over the test split, whose Tables 2-3 are the run's result. Rank 0
writes the run folder: config.json, metrics.csv (one row per epoch), the atomic checkpoints last.pt and
best.pt, and test.json (the selected epoch's test summary, written last: the run's done marker).
"""

import csv
import os
import random
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from base.atomic import atomic_path, write_json, writes_folder
from base.errors import MissingInputError, UsageError
from base.vocabulary import CLASSES
from model.alarms import DEFAULT_TARGET_RECALL, alarm_summary, write_thresholds
from model.backbones import FROM_SCRATCH, load_weights
from model.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from model.chr import build_model
from model.config import TrainConfig, to_dict, train_config_from_dict
from model.inference import FUSED, gather, predict, progress_bar, resolve_device, summarise, val_thresholds
from model.loss import chr_loss
from model.pixels import model_input


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) from torchrun's environment; a plain process is rank 0 of 1."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    """Every column any row has (a resumed older run's rows lack the newer ones), in first-seen order."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        w.writeheader()
        w.writerows(rows)


class RandomStartWarning(UserWarning):
    """A backbone made for ImageNet weights starts from random ones."""


def warn_if_random_start(cfg: TrainConfig) -> None:
    if cfg.weights or cfg.model.backbone in FROM_SCRATCH:
        return
    name = cfg.model.backbone
    warnings.warn(f"\n\n  *** {name} STARTS FROM RANDOM WEIGHTS ***\n  The paper fine-tunes ImageNet "
                  f"weights; without them its numbers are out of reach.\n  Pass torchvision's file: "
                  f"--weights {name}.pth\n", RandomStartWarning, stacklevel=3)


def selection_score(summary: dict, output: str = FUSED) -> float:
    """The mAP of `output` (fused, or a stage) the best epoch is chosen by; 0 where no class has a positive
    to rank."""
    return summary["map"][output] or 0.0


@writes_folder(lambda a: a["cfg"].out if int(os.environ.get("RANK", 0)) == 0 else None, "model train",
               ours=("last.pt",))
def train(cfg: TrainConfig, *, resume: bool = False, data=None) -> dict:
    """Train for cfg.epochs (continuing from <out>/last.pt when resume), pick the best epoch on
    cfg.select_on, and return that epoch's test summary (Tables 2-3, also in <out>/test.json).

    `data` is the loader module (model.data by default; tests pass a stand-in with the same contract).
    """
    if data is None:
        import model.data as data
    device = resolve_device(cfg.device)
    rank, world_size, device = setup_distributed(device)
    on_gpu = device.type == "cuda"
    cfg = replace(cfg, device=str(device), amp=on_gpu if cfg.amp is None else cfg.amp,
                  channels_last=on_gpu if cfg.channels_last is None else cfg.channels_last)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    if rank == 0:
        warn_if_random_start(cfg)

    model = build_model(cfg.model)
    if cfg.weights:
        load_weights(model.backbone, cfg.weights)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_steps), gamma=0.1)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp)
    start_epoch, best_score, history = 0, -1.0, []
    check_run_folder(out, resume)
    if resume:
        start_epoch, best_score, history = restore(out / "last.pt", cfg, device, model=model,
                                                   optimizer=optimizer, scheduler=scheduler, scaler=scaler)
    net = model
    if world_size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None)
    check_selection_split(data, cfg)  # reads the shards' summary: a bad one stops us before we write
    if rank == 0:
        write_json(out / "config.json", to_dict(cfg))

    lcfg = data.LoaderConfig.of_run(cfg, device=str(device))
    for epoch in range(start_epoch, cfg.epochs):
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        loader = data.make_loader(cfg.shards, "train", lcfg, rank=rank, world_size=world_size, epoch=epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_loss, images_per_s = train_epoch(net, loader, optimizer, scaler, cfg, device, world_size,
                                               progress_bar(loader, total=len(loader), desc=desc,
                                                            unit="batch", enabled=rank == 0))
        scheduler.step()

        # ---- score on the selection split (every rank's share gathered) ----
        scored = data.make_loader(cfg.shards, cfg.select_on, lcfg, rank=rank, world_size=world_size)
        pred = predict(model, scored, device, amp=cfg.amp, channels_last=cfg.channels_last)
        summary = summarise(gather(pred))
        history.append({"epoch": epoch + 1, "lr": lr, "train_loss": round(train_loss, 6),
                        "images_per_s": round(images_per_s, 1), "eval_split": cfg.select_on,
                        "eval_count": summary["count"],
                        **{f"ap_{c}": a for c, a in zip(CLASSES, summary["ap"][FUSED], strict=True)},
                        "map": summary["map"][FUSED],
                        **{f"map_{name}": m for name, m in summary["map"].items() if name != FUSED}})

        # ---- checkpoint (rank 0; atomic, last.pt written last marks the epoch done) ----
        score = selection_score(summary, cfg.select_by)
        if rank == 0:
            write_metrics_csv(out / "metrics.csv", history)
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                     "best_map": max(best_score, score), "history": history, "config": to_dict(cfg),
                     "rng": rng_state()}
            if score > best_score:
                save_checkpoint(out / "best.pt", state)
            save_checkpoint(out / "last.pt", state)
            # the epoch's line: under its finished bar on a terminal, alone in a log file or pipe
            by = "" if cfg.select_by == FUSED else f" ({cfg.select_by})"
            tqdm.write(f"{desc}: loss {train_loss:.4f}, {images_per_s:.0f} img/s, "
                       f"{cfg.select_on} mAP{by} {100 * score:.1f}")
        best_score = max(best_score, score)
        if world_size > 1:
            dist.barrier()
    return final_test(model, data, cfg, lcfg, rank, world_size, device)


def check_run_folder(out: Path, resume: bool) -> None:
    """A new run never overwrites another's checkpoints; --resume needs one to continue."""
    last = out / "last.pt"
    if resume and not last.exists():
        raise MissingInputError(f"{last}: nothing to resume (no checkpoint yet); drop --resume to start "
                                "a new run")
    if not resume and last.exists():
        raise UsageError(f"{out} already holds a run ({last.name}): pass --resume to continue it, or "
                         "choose another --out")


def restore(path: Path, cfg: TrainConfig, device, **parts) -> tuple[int, float, list]:
    """Load every part's state and the RNGs from a last.pt; return (epochs done, best score, history)."""
    ckpt = load_checkpoint(path, device)
    saved = train_config_from_dict(ckpt["config"])
    changed = [f"{k}: {v!r} -> {getattr(cfg.model, k)!r}" for k, v in vars(saved.model).items()
               if getattr(cfg.model, k) != v]
    if Path(saved.shards).resolve() != Path(cfg.shards).resolve():
        changed.append(f"shards: {saved.shards} -> {cfg.shards}")
    if changed:
        raise UsageError(f"{path}: --resume with another model or data than the run's "
                         f"({'; '.join(changed)}); resume with the run's flags, or choose another --out")
    for name, part in parts.items():
        part.load_state_dict(ckpt[name])
    set_rng_state(ckpt["rng"])
    return ckpt["epoch"], ckpt["best_map"], ckpt["history"]


def check_selection_split(data, cfg: TrainConfig) -> None:
    if cfg.select_on == "val" and data.split_info(cfg.shards, "val", cfg.held_out)["count"] == 0:
        raise UsageError(f"{cfg.shards}: --val-fraction {cfg.val_fraction} holds out no train image; "
                         "raise it, or choose the epoch on the test split with --select-on test")


def train_step(net, batch, optimizer, scaler, cfg: TrainConfig, device) -> torch.Tensor:
    """One optimiser step on a batch (AMP and channels_last as `cfg` says); returns the loss, detached and
    left on the device (reading it would make the host wait for the step)."""
    images = model_input(batch.images, device, cfg.channels_last)
    with torch.autocast(device.type, enabled=cfg.amp):
        outputs = net(images)
    loss = chr_loss(outputs.logits, batch.labels.to(device), cfg.model)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def train_epoch(net, loader, optimizer, scaler, cfg: TrainConfig, device, world_size: int, bar
                ) -> tuple[float, float]:
    """One pass over the train loader (through `bar`); returns (mean loss, images per second)."""
    net.train()
    t0, seen, loss_sum = time.time(), 0, torch.zeros((), device=device)
    for batch in bar:
        loss = train_step(net, batch, optimizer, scaler, cfg, device)
        loss_sum += loss
        seen += len(batch.ids)
        if not bar.disable:  # loss.item() waits for the device: pay for it only where a bar shows it
            rate = seen * world_size / (time.time() - t0)
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.1f}")
    return loss_sum.item() / max(seen // cfg.batch_size, 1), seen * world_size / (time.time() - t0)


def final_test(model, data, cfg: TrainConfig, lcfg, rank: int, world_size: int, device) -> dict:
    """The selected epoch's weights (best.pt) over the test split, with pointing: the run's Tables 2-3."""
    out = Path(cfg.out)
    if world_size > 1:
        dist.barrier()  # rank 0 has written best.pt
    best = load_checkpoint(out / "best.pt", device)
    model.load_state_dict(best["model"])
    test = data.make_loader(cfg.shards, "test", lcfg, rank=rank, world_size=world_size)
    pred = gather(predict(model, test, device, amp=cfg.amp, channels_last=cfg.channels_last, pointing=True,
                          fuse=cfg.pointing_fuse, tolerance=cfg.pointing_tolerance))
    summary = summarise(pred)
    summary["selected"] = {"epoch": best["epoch"], "of_epochs": cfg.epochs, "on": cfg.select_on,
                           "by": cfg.select_by, "map": best["best_map"]}
    # alarm thresholds for best.pt on the held-out val split (none when selecting on test: nothing held out)
    thresholds = val_thresholds(model, data, cfg.shards, lcfg, device, target=DEFAULT_TARGET_RECALL,
                                checkpoint=out / "best.pt", epoch=best["epoch"], held_out=True, rank=rank,
                                world_size=world_size, amp=cfg.amp, channels_last=cfg.channels_last)
    summary["alarms"] = None if thresholds is None else alarm_summary(thresholds, pred)
    if rank == 0:
        if thresholds is not None:
            write_thresholds(out, thresholds)
        write_json(out / "test.json", summary)
        tqdm.write(f"test: epoch {best['epoch']} (best {cfg.select_on} mAP {100 * best['best_map']:.1f}): "
                   f"mAP {100 * (summary['map'][FUSED] or 0):.1f}")
    return summary
