"""SIXray10/100/1000 subset selection and the shard plan, as pure functions of ids, labels and a seed.

Only small key columns (id, split, labels, byte size) are held in memory, never boxes or image bytes;
the full subset rows are joined and sorted by duckdb, which spills to disk, and streamed to Parquet.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path
from pipeline.classes import ALL_CLASSES, CLASSES
from pipeline.db import spilling_connection
from pipeline.hashing import stable_hashes
from pipeline.schema import SUBSET_SCHEMA, USABLE_STATUSES

RATIOS = (10, 100, 1000)
SPLITS = ("train", "test")
DUCKDB_MEMORY_LIMIT = "256MB"
SAMPLE_OVERHEAD = 4096
"""Tar bytes per sample besides the JPEG: four 512-byte headers plus the padded label, mask and JSON."""


@dataclass(frozen=True)
class SubsetConfig:
    ratio: int
    seed: int = 0
    split_source: str = "ours"  # "ours": the manifest's split column | "official": the label files'
    positives_per_class: int = 1000  # SIXray1000 only
    shard_size: int = 1000
    shard_bytes: int = 256 * 2**20


def read_keys(manifest: Path, cfg: SubsetConfig) -> dict:
    """The usable rows' ids, splits (from cfg.split_source), label matrix, hammer flags and byte sizes."""
    columns = ["id", "split", "official", "status", "bytes", *ALL_CLASSES]
    table = pq.read_table(manifest, columns=columns)
    table = table.filter(pc.is_in(table["status"], pa.array(USABLE_STATUSES)))
    ids = table["id"].to_pylist()
    if len(set(ids)) != len(ids):
        raise ValueError(f"{manifest}: usable rows share an id; ingest must mark duplicates")
    if cfg.split_source == "ours":
        splits = table["split"].to_pylist()
        missing = [i for i, s in zip(ids, splits, strict=True) if s not in SPLITS]
        if missing:
            raise ValueError(f"{manifest}: usable rows without a train/test split, e.g. {missing[:3]}")
    elif cfg.split_source == "official":
        splits = official_splits(manifest, ids, table["official"].to_pylist(), cfg.ratio)
    else:
        raise ValueError(f"unknown split source {cfg.split_source!r} (ours | official)")
    labels = np.stack([table[c].fill_null(0).to_numpy() for c in CLASSES], axis=1).astype(np.int8)
    return {
        "ids": ids,
        "splits": np.array(splits, dtype=object),
        "labels": labels,
        "hammer": table["hammer"].fill_null(0).to_numpy() == 1,
        "bytes": table["bytes"].to_numpy(),
    }


def official_splits(manifest, ids, memberships, ratio: int) -> list:
    """Each id's split in the label files of subset `ratio` ('<ratio>/train*', '<ratio>/test*'), None if
    the files do not list it; an error if they list no id at all or put one id in both splits."""
    splits = []
    for image_id, groups in zip(ids, memberships, strict=True):
        found = {s for g in groups or () for s in SPLITS if g.startswith(f"{ratio}/{s}")}
        if len(found) > 1:
            raise ValueError(f"{manifest}: {image_id} is in both train and test of ImageSet/{ratio}")
        splits.append(found.pop() if found else None)
    if not any(splits):
        raise ValueError(f"{manifest}: the label files give no ImageSet/{ratio}/train* or test* memberships")
    return splits


def select(keys: dict, cfg: SubsetConfig) -> tuple[np.ndarray, dict]:
    """Indices into keys of the subset's rows, and a summary of what was taken per split."""
    positive = (keys["labels"] == 1).any(axis=1)
    # An image holding only a hammer is neither a negative nor a positive of the five trained classes.
    negative = ~positive & ~keys["hammer"]
    chosen, summary = [], {"hammer_only_excluded": int((~positive & keys["hammer"]).sum())}
    for split in SPLITS:
        in_split = keys["splits"] == split
        pos = np.flatnonzero(in_split & positive)
        neg = np.flatnonzero(in_split & negative)
        if cfg.ratio == 1000:
            pos = per_class_positives(keys, pos, cfg)
            wanted = len(neg)
        else:
            wanted = cfg.ratio * len(pos)
            rank = np.argsort(
                stable_hashes(cfg.seed, "negatives", [keys["ids"][i] for i in neg]), kind="stable"
            )
            neg = neg[rank[:wanted]]
        chosen += [pos, neg]
        summary[split] = {
            "positives": len(pos),
            "negatives": len(neg),
            "negatives_wanted": wanted,
            "negatives_short": max(0, wanted - len(neg)),
            "per_class": {c: int((keys["labels"][pos, k] == 1).sum()) for k, c in enumerate(CLASSES)},
        }
    return np.sort(np.concatenate(chosen)), summary


def per_class_positives(keys: dict, pos: np.ndarray, cfg: SubsetConfig) -> np.ndarray:
    """SIXray1000 positives of one split: per class its share of `positives_per_class` images (all if
    fewer), ranked by a hash of the id; an image counts for every class it holds. Rarest class first,
    so images taken for it also fill the commoner classes' quotas and the overshoot stays small."""
    labels = keys["labels"][pos] == 1
    all_labels = keys["labels"] == 1
    ranked = np.argsort(stable_hashes(cfg.seed, "positives", [keys["ids"][i] for i in pos]), kind="stable")
    taken = np.zeros(len(pos), dtype=bool)
    counts = np.zeros(len(CLASSES), dtype=np.int64)
    available = labels.sum(axis=0)
    for k in np.argsort(available, kind="stable"):
        # This split's quota is the class's total quota times the split's share of the class.
        total = all_labels[:, k].sum()
        quota = (
            available[k]
            if total <= cfg.positives_per_class
            else round(cfg.positives_per_class * available[k] / total)
        )
        for j in ranked[labels[ranked, k]]:
            if counts[k] >= quota:
                break
            if not taken[j]:
                taken[j] = True
                counts += labels[j]
    return np.sort(pos[taken])


def plan(keys: dict, rows: np.ndarray, cfg: SubsetConfig) -> pa.Table:
    """Order and shard of every subset row: train by a shuffle hash (classes mix when read sequentially),
    test by id; a shard closes when another sample would pass shard_size or shard_bytes."""
    ids = [keys["ids"][i] for i in rows]
    splits = keys["splits"][rows]
    out = {"id": [], "split": [], "shard": [], "order": []}
    for split in SPLITS:
        idx = np.flatnonzero(splits == split)
        split_ids = [ids[i] for i in idx]
        if split == "train":
            idx = idx[np.lexsort((np.array(split_ids), stable_hashes(cfg.seed, "shuffle", split_ids)))]
        else:
            idx = idx[np.argsort(np.array(split_ids), kind="stable")]
        out["id"] += [ids[i] for i in idx]
        out["split"] += [split] * len(idx)
        out["shard"] += shard_names(split, keys["bytes"][rows[idx]] + SAMPLE_OVERHEAD, cfg)
        out["order"] += range(len(idx))
    return pa.table(
        out,
        schema=pa.schema(
            [("id", pa.string()), ("split", pa.string()), ("shard", pa.string()), ("order", pa.int64())]
        ),
    )


def shard_names(split: str, sizes: np.ndarray, cfg: SubsetConfig) -> list[str]:
    names, shard, count, size = [], 0, 0, 0
    for nbytes in sizes.tolist():
        if count and (count + 1 > cfg.shard_size or size + nbytes > cfg.shard_bytes):
            shard, count, size = shard + 1, 0, 0
        count, size = count + 1, size + nbytes
        names.append(f"{split}-{shard:06d}")
    return names


def build_subset(manifest: Path, out: Path, cfg: SubsetConfig) -> dict:
    """Select the subset, plan its shards and write `out` (SUBSET_SCHEMA, sorted by split then order)."""
    if cfg.ratio not in RATIOS:
        raise ValueError(f"ratio must be one of {RATIOS}, got {cfg.ratio}")
    planned, summary = plan_subset(manifest, cfg)  # the key columns are freed before the join runs
    write_subset(manifest, out, planned, cfg)
    return summary


def plan_subset(manifest: Path, cfg: SubsetConfig) -> tuple[pa.Table, dict]:
    """The plan (id, split, shard, order per subset row) and the selection summary."""
    keys = read_keys(manifest, cfg)
    rows, summary = select(keys, cfg)
    return plan(keys, rows, cfg), summary


def write_subset(manifest: Path, out: Path, planned: pa.Table, cfg: SubsetConfig) -> None:
    """Join the plan with the full manifest rows in duckdb and stream the sorted result to Parquet."""
    metadata = dict(pq.read_schema(manifest).metadata or {})
    metadata.update(
        {
            b"ratio": str(cfg.ratio).encode(),
            b"seed": str(cfg.seed).encode(),
            b"split_source": cfg.split_source.encode(),
        }
    )
    schema = SUBSET_SCHEMA.with_metadata(metadata)
    # Spill the join and sort to disk rather than grow: unlimited, duckdb doubled the peak at 1.06M ids.
    con = spilling_connection(out.parent / "_subset-spill", DUCKDB_MEMORY_LIMIT)
    con.register("plan", planned)
    usable = ", ".join(f"'{s}'" for s in USABLE_STATUSES)
    query = f"""
        SELECT m.* REPLACE (p.split AS split), p.shard, p."order"
        FROM read_parquet(?) m JOIN plan p ON m.id = p.id
        WHERE m.status IN ({usable})
        ORDER BY p.split, p."order"
    """
    reader = con.sql(query, params=[str(manifest)]).to_arrow_reader(50_000)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_table(pa.Table.from_batches([batch]).select(schema.names).cast(schema))
    con.close()


def planned_ids_md5(ids) -> str:
    return hashlib.md5("\n".join(ids).encode()).hexdigest()
