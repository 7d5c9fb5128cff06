"""SIXray10/100/1000 subset selection and the shard plan, as pure functions of ids, labels and a seed.

Only narrow key columns (id, split, labels, byte size) are held in memory, as arrays of a few bytes an
id, never boxes or image bytes; the full subset rows stream from the manifest (sorted by id) into the
subset manifest (sorted by split and order) through an external sort on disk.
"""

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from base.atomic import atomic_path
from base.errors import DataError, UsageError
from base.hashing import stable_hashes
from base.vocabulary import ALL_CLASSES, CLASSES, RATIOS
from pipeline.schema import MANIFEST_SCHEMA, SUBSET_SCHEMA, USABLE_STATUSES

SPLITS = ("train", "test")
BUCKET_ROWS = 65_536
"""Subset rows per spill bucket of write_subset: the most wide rows it holds in memory at once."""
BATCH_ROWS = 16_384
ROW_GROUP_SIZE = 8_192
"""Row groups of the subset manifest: a shard task reads only the groups its shard overlaps."""
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
    exclude_sources: tuple[str, ...] = ()  # rows of these sources (schema.SOURCES) are left out


def read_keys(manifest: Path, cfg: SubsetConfig) -> dict:
    """Narrow key columns of the usable rows as arrays, a few bytes an id: ids (Arrow strings), each
    row's position in the manifest, split codes (0 train, 1 test, -1 none; from cfg.split_source),
    label matrix, hammer flags, byte sizes and TIP flags (source 'tip'). Streamed a batch at a time; boxes,
    checksums and errors are never read. Rows of cfg.exclude_sources count as unusable; a manifest from
    before the source column has none."""
    if cfg.split_source not in ("ours", "official"):
        raise UsageError(f"unknown split source {cfg.split_source!r} (ours | official)")
    columns = ["id", "status", "bytes", *ALL_CLASSES, "split" if cfg.split_source == "ours" else "official"]
    has_source = "source" in pq.read_schema(manifest).names
    columns += ["source"] * has_source
    parts, rows, start = [], [], 0
    for batch in pq.ParquetFile(manifest).iter_batches(batch_size=BATCH_ROWS, columns=columns):
        usable = pc.is_in(batch["status"], pa.array(USABLE_STATUSES)).to_numpy(zero_copy_only=False)
        if has_source and cfg.exclude_sources:
            excluded = pc.is_in(batch["source"], pa.array(cfg.exclude_sources, pa.string()))
            usable &= ~excluded.fill_null(False).to_numpy(zero_copy_only=False)
        rows.append(start + np.flatnonzero(usable))
        start += len(batch)
        batch = batch.filter(pa.array(usable))
        if cfg.split_source == "ours":
            splits = split_codes(batch["split"])
        else:
            splits = official_splits(manifest, batch, cfg.ratio)
        parts.append({
            "ids": batch["id"],
            "splits": splits,
            "labels": np.stack([batch[c].fill_null(0).to_numpy() for c in CLASSES], axis=1).astype(np.int8),
            "hammer": batch["hammer"].fill_null(0).to_numpy() == 1,
            "bytes": batch["bytes"].to_numpy(),
            "tip": (pc.equal(batch["source"], "tip").fill_null(False).to_numpy(zero_copy_only=False)
                    if has_source else np.zeros(len(batch), dtype=bool)),
        })
    if not parts:  # ingest of a folder without images writes a manifest without rows
        raise DataError(f"{manifest}: the manifest has no rows, so there is no subset to build")
    keys = {k: np.concatenate([p[k] for p in parts]) for k in ("splits", "labels", "hammer", "bytes", "tip")}
    keys["ids"] = pa.concat_arrays([p["ids"] for p in parts])
    check_sorted_ids(manifest, keys["ids"])
    check_splits(manifest, keys, cfg)
    return {**keys, "manifest_rows": np.concatenate(rows), "manifest_size": start}


def check_splits(manifest: Path, keys: dict, cfg: SubsetConfig) -> None:
    """Our split must cover every usable row; the official files must list at least one."""
    missing = keys["splits"] < 0
    if cfg.split_source == "ours" and missing.any():
        examples = keys["ids"].take(np.flatnonzero(missing)[:3]).to_pylist()
        raise DataError(f"{manifest}: usable rows without a train/test split, e.g. {examples}")
    if cfg.split_source == "official" and missing.all():
        raise DataError(f"{manifest}: the label files give no ImageSet/{cfg.ratio}/train* or test* "
                         "memberships")


def check_sorted_ids(manifest: Path, ids: pa.Array) -> None:
    """The manifest's contract (ingest writes it so): ids strictly increasing, hence also unique. The
    subset manifest is streamed in that order, so an unsorted file is refused rather than misread."""
    ascending = pc.less(ids.slice(0, len(ids) - 1), ids.slice(1)).to_numpy(zero_copy_only=False)
    if not ascending.all():
        bad = int(np.flatnonzero(~ascending)[0])
        pair = ids.slice(bad, 2).to_pylist()
        raise DataError(f"{manifest}: ids not strictly increasing at row {bad} ({pair[0]!r}, {pair[1]!r}): "
                         "duplicate or unsorted ids; rerun `pipeline ingest`")


def split_codes(splits: pa.Array) -> np.ndarray:
    """'train' -> 0, 'test' -> 1, anything else -> -1, as int8."""
    codes = np.full(len(splits), -1, dtype=np.int8)
    for code, split in enumerate(SPLITS):
        codes[pc.equal(splits, split).fill_null(False).to_numpy(zero_copy_only=False)] = code
    return codes


def official_splits(manifest: Path, batch: pa.RecordBatch, ratio: int) -> np.ndarray:
    """Each row's split code in the label files of subset `ratio` ('<ratio>/train*', '<ratio>/test*'),
    -1 if they do not list it; an error if they put one id in both splits."""
    groups = batch["official"]
    parents = pc.list_parent_indices(groups).to_numpy()
    names = pc.list_flatten(groups)
    found = np.zeros((len(batch), len(SPLITS)), dtype=bool)
    for code, split in enumerate(SPLITS):
        hit = pc.starts_with(names, f"{ratio}/{split}").to_numpy(zero_copy_only=False)
        found[parents[hit], code] = True
    both = found.all(axis=1)
    if both.any():
        image_id = batch["id"][int(np.flatnonzero(both)[0])].as_py()
        raise DataError(f"{manifest}: {image_id} is in both train and test of ImageSet/{ratio}")
    return np.where(found[:, 0], 0, np.where(found[:, 1], 1, -1)).astype(np.int8)


def id_hashes(seed: int, salt: str, ids: pa.Array) -> np.ndarray:
    """stable_hashes of Arrow ids, converting a slice at a time (never a million Python strings)."""
    step = 65_536
    return np.concatenate([stable_hashes(seed, salt, ids.slice(i, step).to_pylist())
                           for i in range(0, len(ids), step)] or [np.empty(0, np.uint64)])


def select(keys: dict, cfg: SubsetConfig) -> tuple[np.ndarray, dict]:
    """Indices into keys of the subset's rows (ascending), and a summary of what was taken per split.

    TIP scans (always train) are added on top, every one: they neither take a SIXray1000 positive's
    place in the per-class quota nor change how many negatives a SIXray10/100 ratio asks for."""
    tip = keys["tip"]
    positive = (keys["labels"] == 1).any(axis=1) & ~tip
    # An image holding only a hammer is neither a negative nor a positive of the five trained classes.
    negative = ~positive & ~keys["hammer"] & ~tip
    chosen, summary = [], {"hammer_only_excluded": int((~positive & keys["hammer"] & ~tip).sum())}
    for code, split in enumerate(SPLITS):
        in_split = keys["splits"] == code
        pos = np.flatnonzero(in_split & positive)
        neg = np.flatnonzero(in_split & negative)
        tips = np.flatnonzero(in_split & tip)
        if cfg.ratio == 1000:
            pos = per_class_positives(keys, pos, cfg)
            wanted = len(neg)
        else:
            wanted = cfg.ratio * len(pos)
            rank = np.argsort(id_hashes(cfg.seed, "negatives", keys["ids"].take(neg)), kind="stable")
            neg = neg[rank[:wanted]]
        chosen += [pos, neg, tips]
        summary[split] = {
            "positives": len(pos),
            "negatives": len(neg),
            "negatives_wanted": wanted,
            "negatives_short": max(0, wanted - len(neg)),
            "per_class": {c: int((keys["labels"][pos, k] == 1).sum()) for k, c in enumerate(CLASSES)},
            "tip": len(tips),
        }
    return np.sort(np.concatenate(chosen)), summary


def per_class_positives(keys: dict, pos: np.ndarray, cfg: SubsetConfig) -> np.ndarray:
    """SIXray1000 positives of one split: per class its share of `positives_per_class` images (all if
    fewer), ranked by a hash of the id; an image counts for every class it holds. Rarest class first,
    so images taken for it also fill the commoner classes' quotas and the overshoot stays small."""
    labels = keys["labels"][pos] == 1
    all_labels = (keys["labels"] == 1) & ~keys["tip"][:, None]
    ranked = np.argsort(id_hashes(cfg.seed, "positives", keys["ids"].take(pos)), kind="stable")
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


@dataclass(frozen=True)
class Plan:
    """Where each subset row goes, as arrays over the subset's rows in output order (split, then
    order): the manifest row it comes from, its split code, its shard (an index into shard_names) and
    its position in the split's order."""

    manifest_rows: np.ndarray
    splits: np.ndarray
    shards: np.ndarray
    order: np.ndarray
    shard_names: list[str]


def plan(keys: dict, rows: np.ndarray, cfg: SubsetConfig) -> Plan:
    """Order and shard of every subset row: train by a shuffle hash (classes mix when read sequentially),
    test by id; a shard closes when another sample would pass shard_size or shard_bytes. `rows` is
    ascending and the manifest is sorted by id, so index order is id order and breaks hash ties."""
    parts, names = [], []
    for split in sorted(SPLITS):  # the file lists splits by name: test, then train
        code = SPLITS.index(split)
        idx = rows[keys["splits"][rows] == code]
        if split == "train":
            idx = idx[np.argsort(id_hashes(cfg.seed, "shuffle", keys["ids"].take(idx)), kind="stable")]
        shards = shard_numbers(keys["bytes"][idx] + SAMPLE_OVERHEAD, cfg)
        parts.append((idx, np.full(len(idx), code, np.int8), shards + len(names), np.arange(len(idx))))
        names += [f"{split}-{k:06d}" for k in range(int(shards[-1]) + 1 if len(shards) else 0)]
    idx, codes, shards, order = (np.concatenate(p) for p in zip(*parts, strict=True))
    return Plan(keys["manifest_rows"][idx], codes, shards, order, names)


def shard_numbers(sizes: np.ndarray, cfg: SubsetConfig) -> np.ndarray:
    """The shard of each sample in order: a new one when the count or the byte budget would overflow."""
    numbers = np.empty(len(sizes), dtype=np.int32)
    shard, count, size = 0, 0, 0
    for k, nbytes in enumerate(sizes.tolist()):
        if count and (count + 1 > cfg.shard_size or size + nbytes > cfg.shard_bytes):
            shard, count, size = shard + 1, 0, 0
        count, size = count + 1, size + nbytes
        numbers[k] = shard
    return numbers


def build_subset(manifest: Path, out: Path, cfg: SubsetConfig) -> dict:
    """Select the subset, plan its shards and write `out` (SUBSET_SCHEMA, sorted by split then order)."""
    if cfg.ratio not in RATIOS:
        raise UsageError(f"ratio must be one of {RATIOS}, got {cfg.ratio}")
    keys = read_keys(manifest, cfg)
    rows, summary = select(keys, cfg)
    if not sum(summary[split]["positives"] for split in SPLITS):
        raise DataError(f"{manifest}: no usable positive (an image with one of {', '.join(CLASSES)}, status "
                        "ok or no_boxes), no subset to build; `pipeline stats` shows the statuses")
    planned = plan(keys, rows, cfg)
    manifest_size = keys["manifest_size"]
    del keys, rows  # free the key columns before the wide rows stream through
    write_subset(manifest, out, planned, manifest_size, cfg)
    return summary


def write_subset(manifest: Path, out: Path, planned: Plan, manifest_size: int, cfg: SubsetConfig) -> None:
    """Stream the manifest's rows (id order) into the subset manifest in output order, in bounded memory.

    An external sort on the output position, which the plan already knows: pass 1 streams the manifest
    once and appends each chosen row to the bucket file of its position range; pass 2 reads one bucket
    at a time, puts its rows in order and appends them to the Parquet file. Memory is one manifest batch
    plus one bucket of wide rows, whatever the dataset's size (duckdb's ORDER BY over these nested rows
    ran out of its memory limit at 1.06M ids).
    """
    schema = SUBSET_SCHEMA.with_metadata(subset_metadata(manifest, cfg))
    position = np.full(manifest_size, -1, dtype=np.int64)
    position[planned.manifest_rows] = np.arange(len(planned.manifest_rows))
    spill = out.parent / f".{out.stem}-spill"
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    try:
        buckets = spill_to_buckets(manifest, position, planned, schema, spill)
        with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for bucket in buckets:
                table = pa.ipc.open_file(bucket).read_all()
                table = table.take(pc.sort_indices(table["_position"]))
                writer.write_table(table.drop_columns(["_position"]), row_group_size=ROW_GROUP_SIZE)
                bucket.unlink()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def spill_to_buckets(manifest: Path, position: np.ndarray, planned: Plan, schema: pa.Schema,
                     spill: Path) -> list[Path]:
    """Pass 1 of write_subset: every chosen row, with its split, shard, order and output position,
    appended to bucket `position // BUCKET_ROWS`; returns the bucket files in output order."""
    n_buckets = -(-len(planned.manifest_rows) // BUCKET_ROWS)
    paths = [spill / f"bucket-{b:06d}.arrow" for b in range(n_buckets)]
    bucket_schema = schema.remove_metadata().append(pa.field("_position", pa.int64()))
    writers = [pa.ipc.new_file(p, bucket_schema) for p in paths]
    split_names, shard_names, start = pa.array(SPLITS), pa.array(planned.shard_names, pa.string()), 0
    present = set(pq.read_schema(manifest).names)  # a manifest from before the source column lacks it
    columns = [n for n in MANIFEST_SCHEMA.names if n in present]
    for batch in pq.ParquetFile(manifest).iter_batches(batch_size=BATCH_ROWS, columns=columns):
        where = position[start : start + len(batch)]
        start += len(batch)
        chosen = np.flatnonzero(where >= 0)
        if not len(chosen):
            continue
        out_pos = where[chosen]
        table = pa.Table.from_batches([batch]).take(chosen)
        for k, field in enumerate(MANIFEST_SCHEMA):
            if field.name not in present:
                table = table.add_column(k, field, pa.nulls(len(table), field.type))
        table = table.set_column(table.schema.get_field_index("split"), "split",
                                 split_names.take(planned.splits[out_pos]))
        table = table.append_column("shard", shard_names.take(planned.shards[out_pos]))
        table = table.append_column("order", pa.array(planned.order[out_pos], pa.int64()))
        table = table.append_column("_position", pa.array(out_pos, pa.int64())).cast(bucket_schema)
        for b in np.unique(out_pos // BUCKET_ROWS).tolist():
            writers[b].write_table(table.filter(pa.array(out_pos // BUCKET_ROWS == b)))
    for writer in writers:
        writer.close()
    return paths


def subset_metadata(manifest: Path, cfg: SubsetConfig) -> dict:
    metadata = dict(pq.read_schema(manifest).metadata or {})
    metadata.update({b"ratio": str(cfg.ratio).encode(), b"seed": str(cfg.seed).encode(),
                     b"split_source": cfg.split_source.encode(),
                     b"exclude_sources": ",".join(cfg.exclude_sources).encode()})
    return metadata


def planned_ids_md5(ids) -> str:
    return hashlib.md5("\n".join(ids).encode()).hexdigest()
