"""Fabricated checkpoints for the predict / export tests (a randomly initialised tiny CHR saved exactly as
`model train` saves one, so every command that loads checkpoints runs without training) and a folder of
scans with every kind of unreadable file."""

import os
from pathlib import Path

import torch
from shard_helpers import jpeg_bytes

from model.checkpoint import save_checkpoint
from model.chr import build_model
from model.config import ModelConfig, TrainConfig, to_dict


def fabricate_checkpoint(path: Path, *, seed: int = 0, test_size: int = 64, val_fraction: float = 0.5,
                         epoch: int = 1, classifier_gain: float = 1.0) -> Path:
    """A tiny model's checkpoint; classifier_gain scales its classifiers, so that scans' scores spread
    (at random init they all sit within ~1e-4 of 0.5, too close to tell a wrong input apart)."""
    torch.manual_seed(seed)
    cfg = TrainConfig(shards="unused", out=str(path.parent), resize=72, crop=64, test_size=test_size,
                      val_fraction=val_fraction, model=ModelConfig(backbone="tiny"))
    model = build_model(cfg.model)
    with torch.no_grad():  # non-default batch-norm statistics, so eval mode matters as it does after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        for p in model.classifiers.parameters():
            p.mul_(classifier_gain)
    save_checkpoint(Path(path), {"model": model.state_dict(), "config": to_dict(cfg), "epoch": epoch})
    return Path(path)


def bad_folder(folder: Path) -> Path:
    """Three good JPEGs of odd sizes, then an empty, a truncated, a text and a dangling-link .jpg."""
    folder.mkdir()
    good = {"a_big.jpg": jpeg_bytes(1, 300, 200), "b_tiny.JPEG": jpeg_bytes(2, 9, 17),
            "c_other.jpg": jpeg_bytes(3)}
    for name, data in good.items():
        (folder / name).write_bytes(data)
    (folder / "d_empty.jpg").write_bytes(b"")
    (folder / "e_truncated.jpg").write_bytes(good["a_big.jpg"][: len(good["a_big.jpg"]) // 2])
    (folder / "f_text.jpg").write_text("not an image")
    os.symlink(folder / "missing.jpg", folder / "g_dangling.jpg")
    (folder / "h_folder.jpg").mkdir()  # not a file: not listed
    (folder / "notes.txt").write_text("not listed")
    return folder
