"""Stable hashes of image ids (every split, resampling and shuffle depends only on these) and of a
stage's inputs (the keys that tell resumable work done from work to redo)."""

import hashlib
import json

import numpy as np


def stable_hash(seed: int, salt: str, image_id: str) -> int:
    """A 64-bit hash of (seed, salt, id), the same on every machine and Python version.

    The salt keeps the uses apart (split vs negative resampling vs shuffle), so they are independent.
    """
    digest = hashlib.blake2b(f"{seed}\x00{salt}\x00{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stable_hashes(seed: int, salt: str, ids) -> np.ndarray:
    """stable_hash over many ids, as a uint64 array."""
    return np.fromiter((stable_hash(seed, salt, i) for i in ids), dtype=np.uint64, count=len(ids))


def content_key(inputs, digest_size: int = 16) -> str:
    """Hex key of JSON-able inputs: a chunk's or a file's name in a resumable stage."""
    return hashlib.blake2b(json.dumps(inputs).encode(), digest_size=digest_size).hexdigest()
