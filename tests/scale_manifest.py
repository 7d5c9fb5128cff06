"""A manifest of the real SIXray size with realistic columns, built column-wise in seconds (no images).

Every column the real ingest fills is filled the way it fills it: sha256 hex checksums, paths, sizes,
dHashes, the class mix of the real positives with one to three boxes each, difficult marks, official
memberships of ImageSet/{10,100,1000}/{train,test}, our 80/20 split, and a few unusable rows with their
error strings. Sorted by id, as ingest writes it.
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from base.vocabulary import ALL_CLASSES, CLASSES
from pipeline.schema import BOX, MANIFEST_SCHEMA

POSITIVES, NEGATIVES = 8_929, 1_050_302
CLASS_SHARE = np.array([3129, 1962, 2205, 3963, 986]) / 12245  # gun knife wrench pliers scissors images
BAD_EVERY = 997
"""One row in this many gets a problem status (corrupt), with an error naming its file."""


def _strings(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(object) if values.dtype.kind == "U" else values).cast(pa.string())


def _ids(positives: int, negatives: int) -> np.ndarray:
    neg = np.char.add("N", np.char.zfill(np.arange(1, negatives + 1).astype(str), 7))
    pos = np.char.add("P", np.char.zfill(np.arange(1, positives + 1).astype(str), 5))
    return np.concatenate([neg, pos])  # 'N...' sorts before 'P...'


def _labels(rng, n: int, positive: np.ndarray) -> np.ndarray:
    """Per row a 6-class 0/1 vector: positives hold 1 class (70%), 2 (25%) or 3 (5%) of the five."""
    labels = np.zeros((n, len(ALL_CLASSES)), dtype=np.int8)
    rows = np.flatnonzero(positive)
    k = rng.choice([1, 2, 3], size=len(rows), p=[0.7, 0.25, 0.05])
    for j in range(3):
        pick = rows[k > j]
        labels[pick, rng.choice(5, size=len(pick), p=CLASS_SHARE)] = 1
    return labels


def _boxes(rng, labels: np.ndarray) -> pa.Array:
    """One box per present class, in pixel floats."""
    rows, classes = np.nonzero(labels[:, :5])
    counts = np.bincount(rows, minlength=len(labels))
    xy = rng.uniform(0, 300, size=(len(rows), 2)).astype(np.float32)
    wh = rng.uniform(20, 200, size=(len(rows), 2)).astype(np.float32)
    structs = pa.StructArray.from_arrays(
        [_strings(np.array(CLASSES)[classes]), xy[:, 0], xy[:, 1], xy[:, 0] + wh[:, 0], xy[:, 1] + wh[:, 1]],
        fields=list(BOX))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(offsets, structs)


def _official(ids: np.ndarray, positive: np.ndarray, test: np.ndarray) -> pa.Array:
    """Positives are in all three subsets; negatives in 1000, every 10th also in 100, every 100th in 10."""
    number = np.where(positive, 0, np.char.lstrip(ids, "NP").astype(np.int64))
    split = np.where(test, "test", "train")
    lists = [[f"{r}/{s}" for r in (10, 100, 1000) if p or (r == 1000 or (r == 100 and n % 10 == 0)
                                                               or n % 100 == 0)]
             for n, p, s in zip(number.tolist(), positive.tolist(), split.tolist(), strict=True)]
    return pa.array(lists, pa.list_(pa.string()))


def scale_manifest(positives: int = POSITIVES, negatives: int = NEGATIVES, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = _ids(positives, negatives)
    n = len(ids)
    positive = np.char.startswith(ids, "P")
    labels = _labels(rng, n, positive)
    test = rng.random(n) < 0.2
    bad = np.arange(n) % BAD_EVERY == BAD_EVERY - 1
    paths = np.char.add(np.char.add("JPEGImage/", ids), ".jpg")
    checksums = np.frombuffer(rng.bytes(32 * n).hex().encode(), dtype="S64")
    columns = {
        "id": _strings(ids),
        "path": _strings(paths),
        "bytes": rng.integers(20_000, 120_000, n),
        "checksum": _strings(checksums),
        "mtime_ns": rng.integers(1.7e18, 1.8e18, n),
        "width": rng.integers(400, 900, n).astype(np.int32),
        "height": rng.integers(400, 800, n).astype(np.int32),
        "mode": pa.array(["RGB"] * n),
        "phash": rng.integers(0, 2**63, n, dtype=np.uint64),
        **{c: labels[:, k] for k, c in enumerate(ALL_CLASSES)},
        "difficult": pa.array([["knife"] if d else [] for d in (rng.random(n) < 0.001).tolist()],
                              pa.list_(pa.string())),
        "boxes": _boxes(rng, labels),
        "official": _official(ids, positive, test),
        "split": pa.array(np.where(bad, None, np.where(test, "test", "train")).tolist(), pa.string()),
        "status": pa.array(np.where(bad, "corrupt", "ok").tolist(), pa.string()),
        "error": pa.array(np.where(bad, np.char.add(paths, ": the JPEG decoder failed (broken data stream)"),
                                   None).tolist(), pa.string()),
        "source": pa.array(["real"] * n, pa.string()),
    }
    return pa.table(columns, schema=MANIFEST_SCHEMA)


def write_scale_manifest(path: Path, positives: int = POSITIVES, negatives: int = NEGATIVES) -> Path:
    table = scale_manifest(positives, negatives).replace_schema_metadata({b"raw_root": b"/nonexistent"})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", row_group_size=65_536)
    return path
