"""Stable hashes of image ids: every split, resampling and shuffle depends only on these."""

import hashlib

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
