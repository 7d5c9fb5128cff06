"""Train epochs planned up front: which samples an epoch reads, in which order, on which rank and worker.

The train split is catalogued once per process from the shards' DALI indexes (every member's offset and
size) and each sample's 20-byte label member, read at its offset: the JPEG is never touched to decide
whether a sample takes part. An epoch is then a pure function of the catalogue, the seed and the epoch:
- every train positive, once; with `repeat_threshold` t, a positive holding a class found in fewer than
  a share t of the positives is repeated sqrt(t / share) times on average (repeat-factor sampling, LVIS),
  rounded so that every epoch has the same length;
- negatives: every one, or `negatives_per_positive` K x the positives, taken as the next window of a fixed
  per-seed order of the negative pool, so consecutive epochs rotate through every negative before any
  comes back;
- the count rounded up to full batches on every rank with the rotation's next negatives (or, with no
  negatives at all, with repeated positives), so every rank runs the same number of full batches;
- ordered by a hash of (seed, epoch, id, copy), cut into equal contiguous parts per rank, each part into
  batches, and the batches dealt to DataLoader workers in turn (the DataLoader takes them back in the
  same turn), so the batches are the same for any worker count.
Every choice is a hash of ids, the seed and the epoch, never of shard or file order: a resumed run
replays its epochs exactly. Samples are then read by offset, so a negative left out costs nothing.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np

from base.hashing import stable_hashes

MEMBERS = ("dif", "jpg", "json", "lbl")
"""A sample's members in tar order (pipeline/shards.py writes them sorted)."""
LABEL_BYTES = 20  # float32[5]


@dataclass(frozen=True, eq=False)  # hashed by identity: negative_order caches per catalogue
class Catalogue:
    """The train split's samples (held-out val samples excluded), in shard order."""

    paths: tuple[str, ...]  # the tar of each shard
    shard: np.ndarray  # int32 [n]: index into paths
    keys: np.ndarray  # str [n]: the SIXray ids
    offsets: np.ndarray  # int64 [n, 4]: each member's data offset in its tar (MEMBERS order)
    sizes: np.ndarray  # int64 [n, 4]
    labels: np.ndarray  # float32 [n, 5]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def positive(self) -> np.ndarray:
        return (self.labels > 0).any(axis=1)


def parse_index_line(line: str) -> tuple[str, list[int], list[int]]:
    """(key, offsets, sizes) of one DALI index line: `ext offset size name` per member."""
    fields = line.split()
    by_ext = {fields[i]: (int(fields[i + 1]), int(fields[i + 2])) for i in range(0, len(fields), 4)}
    key = fields[3].split(".")[0]
    return key, [by_ext[m][0] for m in MEMBERS], [by_ext[m][1] for m in MEMBERS]


@dataclass(frozen=True)
class Sampling:
    """How an epoch draws the train split: `negatives_per_positive` None = every negative."""

    seed: int = 0
    negatives_per_positive: float | None = None
    repeat_threshold: float = 0.0


def repeat_factors(labels: np.ndarray, threshold: float) -> np.ndarray:
    """Per positive, max over its classes of max(1, sqrt(threshold / share of positives with the class))."""
    if threshold <= 0 or len(labels) == 0:
        return np.ones(len(labels))
    share = (labels > 0).mean(axis=0)
    per_class = np.maximum(1.0, np.sqrt(threshold / np.maximum(share, 1e-12)))
    return np.where(labels > 0, per_class, 1.0).max(axis=1)


def positive_copies(keys: np.ndarray, factors: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Copies of each positive this epoch: its factor rounded down or up, up with a chance equal to the
    fraction (systematic sampling along a per-epoch hash order), so that the epoch always holds
    sum(floor) + round(sum of fractions) copies: every epoch has the same length."""
    whole = np.floor(factors)
    fraction = factors - whole
    order = np.argsort(stable_hashes(seed, f"repeat-{epoch}", keys), kind="stable")
    crossed = np.floor(np.cumsum(fraction[order]) + 0.5)
    extra = np.empty(len(keys))
    extra[order] = np.diff(np.r_[0.0, crossed])
    return (whole + extra).astype(np.int64)


@functools.lru_cache(maxsize=4)
def negative_order(cat: Catalogue, seed: int) -> np.ndarray:
    """The catalogue rows of every negative, in the fixed per-seed order the epochs rotate through."""
    negatives = np.flatnonzero(~cat.positive)
    return negatives[np.argsort(stable_hashes(seed, "negative-rotation", cat.keys[negatives]), kind="stable")]


def epoch_samples(cat: Catalogue, sampling: Sampling, epoch: int, unit: int) -> np.ndarray:
    """Catalogue rows of one epoch in training order, a multiple of `unit` (world size x batch) long."""
    positives = np.flatnonzero(cat.positive)
    factors = repeat_factors(cat.labels[positives], sampling.repeat_threshold)
    rows = np.repeat(positives, positive_copies(cat.keys[positives], factors, sampling.seed, epoch))
    pool = negative_order(cat, sampling.seed)
    k = sampling.negatives_per_positive
    wanted = len(pool) if k is None else min(len(pool), math.ceil(k * len(rows)))
    total = -(-(len(rows) + wanted) // unit) * unit
    if len(pool):  # consecutive windows of the pool (every epoch takes as many): the rotation
        taken = total - len(rows)
        rows = np.concatenate([rows, pool[(epoch * taken + np.arange(taken)) % len(pool)]])
    else:
        rows = np.resize(rows, total)
    names = [f"{key}\x00{n}" for key, n in zip(cat.keys[rows], occurrence(rows), strict=True)]
    return rows[np.argsort(stable_hashes(sampling.seed, f"epoch-{epoch}", names), kind="stable")]


def occurrence(rows: np.ndarray) -> np.ndarray:
    """For each element, how many times its value came before it (0 for the first copy)."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    result = np.empty(len(rows), np.int64)
    result[order] = np.arange(len(rows)) - first
    return result


def rank_batches(samples: np.ndarray, rank: int, world_size: int, batch_size: int) -> list[np.ndarray]:
    """This rank's contiguous equal part of an epoch, cut into batches."""
    part = len(samples) // world_size
    mine = samples[rank * part : (rank + 1) * part]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
