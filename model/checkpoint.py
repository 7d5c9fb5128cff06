"""Checkpoints that cannot run code: written atomically, read with `torch.load(weights_only=True)`.

A checkpoint holds tensors, numbers, strings, lists, dicts and tuples only: the model and optimizer
states, the configs (`model/config.py`), the history and the RNG states (numpy's as a tensor). Such a
file loads under PyTorch's restricted unpickler, which refuses any other object, so a checkpoint
crafted to run code on load is refused instead of run. Checkpoints written before this rule held a
numpy array in their RNG state; the numpy globals that array needs are allowed, and nothing else.
A checkpoint that needs more is refused unless the caller trusts it (`--trust-checkpoint`).
"""

import io
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from base.atomic import write_bytes
from base.errors import DataError

REQUIRED_KEYS = ("model", "config", "epoch")


class CheckpointError(DataError):
    """A checkpoint that is unreadable, not ours, or needs unpickling that could run code."""


def rng_state() -> dict:
    """Every RNG's state in types the restricted unpickler reads (numpy's key array as a tensor)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    if isinstance(numpy, dict):
        numpy = (numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                 numpy["gauss"])
    np.random.set_state(numpy)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Serialise in memory, then write atomically: a crash or a full disk leaves the previous file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(path, buf.getvalue())


def _legacy_numpy_globals() -> list:
    """What an older checkpoint's numpy RNG state unpickles to: an ndarray of uint32. numpy 1.x pickled
    its array constructor as numpy.core.multiarray._reconstruct, numpy 2 as numpy._core...: both names."""
    from numpy.core.multiarray import _reconstruct

    numpy1_name = (_reconstruct, "numpy.core.multiarray._reconstruct")
    return [_reconstruct, numpy1_name, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | Path, device="cpu", *, trust: bool = False) -> dict:
    """A checkpoint this project wrote, read without running code; CheckpointError (naming the file and
    what to do) if it is truncated, not a PyTorch file, not ours, or needs a full unpickle and `trust`
    is false. trust=True unpickles anything: only for files from a source you trust."""
    path = Path(path)
    if not zipfile.is_zipfile(path):  # what torch.save writes; a truncated one lost its central directory
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, or not written by torch.save)")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            ckpt = torch.load(path, map_location=device, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        holds = f"it holds {found[1]}" if found else "it holds objects other than tensors and numbers"
        raise CheckpointError(
            f"{path}: refused: {holds}, and loading that needs a full unpickle, which can run code. Pass "
            "--trust-checkpoint only if you trust where it came from") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, or not written by torch.save):"
                              f" {reason}") from exc
    missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of `model train` (no {', '.join(missing)}); "
                              "for ImageNet backbone weights use `model train --weights`")
    return ckpt
