"""build-shards: a SIXray subset as deterministic webdataset tar shards with DALI indexes and markers.

Layout of `<out>/sixray<N>/`: `{train,test}-NNNNNN.tar` (per sample `<id>.dif`, `.jpg`, `.json`, `.lbl`),
beside each the DALI index `.idx` and `.stats.json` (written last: the shard's commit marker), and
`_info.json` (written last of all). Each shard is an independent task that reads only its own rows of
the subset manifest, so shards resume one by one and run on local processes or a Dask cluster alike.
"""

import hashlib
import json
import os
import struct
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from base.atomic import atomic_path, write_bytes, write_json, writes_folder, writing
from base.distribute import run_tasks
from base.errors import DataError, MissingInputError, UsageError
from base.vocabulary import CLASSES, RATIOS
from pipeline.schema import check_manifest
from pipeline.subsets import SPLITS, SubsetConfig, build_subset, planned_ids_md5
from pipeline.validate import read_file

MEMBER_EXTS = ("dif", "jpg", "json", "lbl")  # sorted: the member order inside every sample
BLOCK, RECORD = tarfile.BLOCKSIZE, tarfile.RECORDSIZE  # 512-byte blocks, 10 KiB end record
WRITEBACK_BYTES = 8 * 2**20
ROW_COLUMNS = ["id", "path", "bytes", "mtime_ns", "checksum", "width", "height", *CLASSES, "difficult",
               "boxes", "split", "order"]


@dataclass(frozen=True)
class ShardTask:
    subset: str  # the subset manifest
    out: str  # the shard folder
    name: str  # e.g. 'train-000003'
    raw_root: str
    start: int  # the shard's first row in the subset manifest (its rows are contiguous there)
    count: int
    ids_md5: str
    verify: bool  # hash every JPEG, not only those whose size or mtime changed since ingest


@writes_folder("out", "pipeline build-shards", ours=tuple(f"sixray{r}" for r in RATIOS))
def build_shards(
    manifests: Path,
    out: Path,
    ratio: int,
    *,
    raw: Path | None = None,
    split_source: str = "ours",
    seed: int = 0,
    shard_size: int = SubsetConfig.shard_size,
    shard_bytes: int = SubsetConfig.shard_bytes,
    positives_per_class: int = SubsetConfig.positives_per_class,
    exclude_sources: tuple[str, ...] = (),
    workers: int | None = None,
    scheduler=None,
    verify: bool = False,
) -> dict:
    """Write manifests/sixray<ratio>.parquet and the shards of that subset; skip shards already done.
    exclude_sources: leave out rows of these sources (e.g. ('tip',): the subset without TIP scans)."""
    cfg = SubsetConfig(ratio, seed, split_source, positives_per_class, shard_size, shard_bytes,
                       tuple(sorted(exclude_sources)))
    manifest = Path(manifests) / "manifest.parquet"
    subset = Path(manifests) / f"sixray{ratio}.parquet"
    shard_dir = Path(out) / f"sixray{ratio}"
    if not manifest.exists():
        raise MissingInputError(f"{manifest}: no manifest; run `pipeline ingest` first")
    check_manifest(manifest)
    raw_root = Path(raw) if raw else manifest_raw_root(manifest)
    if not raw_root.is_dir():
        raise UsageError(f"{raw_root}: no such folder; {manifest} was made from it: pass --raw DIR where "
                         "the raw download is now")
    # The subset manifest goes into ingest's folder: written under its lock, so an ingest (or another
    # build-shards) never rewrites that folder meanwhile.
    with writing(manifests, "pipeline build-shards", ours=("manifest.parquet",)):
        summary = build_subset(manifest, subset, cfg)
    shards = read_plan(subset)
    shard_dir.mkdir(parents=True, exist_ok=True)
    (shard_dir / "_info.json").unlink(missing_ok=True)  # until every shard is done, loaders see no epoch
    remove_stale(shard_dir, shards)
    tasks = [
        ShardTask(str(subset), str(shard_dir), name, str(raw_root), s["start"], s["count"], s["ids_md5"],
                  verify)
        for name, s in shards.items()
        if not shard_done(shard_dir, name, s, verify=verify)
    ]
    results = list(
        run_tasks(
            write_shard,
            tasks,
            workers=workers,
            scheduler=scheduler,
            desc=f"build-shards sixray{ratio}",
            total=sum(t.count for t in tasks),
        )
    )
    info = {
        "ratio": ratio,
        "seed": seed,
        "split_source": split_source,
        "exclude_sources": sorted(exclude_sources),
        "classes": list(CLASSES),
        "selection": summary,
        **{split: split_entry(shards, split) for split in SPLITS},
    }
    write_json(shard_dir / "_info.json", info)
    return {"shards": len(shards), "written": len(results), "skipped": len(shards) - len(results), **info}


def manifest_raw_root(manifest: Path) -> Path:
    metadata = pq.read_schema(manifest).metadata or {}
    if b"raw_root" not in metadata:
        raise UsageError(f"{manifest}: no raw_root in the Parquet metadata; pass --raw DIR")
    return Path(metadata[b"raw_root"].decode())


def read_plan(subset: Path) -> dict:
    """Per shard (in file order, which is split then order): split, first row, count and the md5 of its id
    list. Streams the subset manifest, hashing each shard's ids as they pass: memory does not grow with it."""
    shards, digests, row = {}, {}, 0
    for batch in pq.ParquetFile(subset).iter_batches(batch_size=65_536, columns=["id", "split", "shard"]):
        for image_id, split, name in zip(*(batch[c].to_pylist() for c in ("id", "split", "shard")),
                                         strict=True):
            shard = shards.get(name)
            if shard is None:
                shards[name] = {"split": split, "start": row, "count": 0}
                digests[name] = hashlib.md5(image_id.encode())
            else:  # the ids joined by newlines, as planned_ids_md5 hashes them
                digests[name].update(b"\n" + image_id.encode())
            shards[name]["count"] += 1
            row += 1
    for name, shard in shards.items():
        shard["ids_md5"] = digests[name].hexdigest()
    return shards


def split_entry(shards: dict, split: str) -> dict:
    names = [n for n, s in shards.items() if s["split"] == split]
    counts = [shards[n]["count"] for n in names]
    return {"shards": [f"{n}.tar" for n in names], "counts": counts, "count": sum(counts)}


def shard_done(shard_dir: Path, name: str, planned: dict, *, verify: bool = False) -> bool:
    """A shard is done when its stats marker matches the plan and its tar and index are complete (by
    size; with verify, also by the tar's CRC-32, which reads it all: a shard damaged in place is
    rewritten)."""
    stats_path, tar_path = shard_dir / f"{name}.stats.json", shard_dir / f"{name}.tar"
    if not (stats_path.exists() and tar_path.exists() and (shard_dir / f"{name}.idx").exists()):
        return False
    try:
        stats = json.loads(stats_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # a damaged marker: the shard is written again
    done = (stats.get("count"), stats.get("ids_md5"), stats.get("bytes")) == (
        planned["count"],
        planned["ids_md5"],
        tar_path.stat().st_size,
    )
    return done and (not verify or stats.get("crc32") == f"{file_crc32(tar_path):08x}")


def file_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(2**20):
            crc = zlib.crc32(block, crc)
    return crc


def remove_stale(shard_dir: Path, shards: dict) -> None:
    """Delete shards of an earlier plan (e.g. another --shard-size) and temporaries of killed runs."""
    for path in shard_dir.iterdir():
        name = path.name.split(".")[0]
        stale = path.name.startswith(".") and ".tmp-" in path.name
        stale |= path.suffix in (".tar", ".idx") or path.name.endswith(".stats.json")
        if stale and name not in shards:
            path.unlink()


def write_shard(task: ShardTask) -> dict:
    """Write one shard: tar (temporary name, then renamed), its DALI index, then its stats marker."""
    out = Path(task.out)
    rows = shard_rows(task.subset, task.start, task.count)
    ids = [r["id"] for r in rows]
    if (len(ids), planned_ids_md5(ids)) != (task.count, task.ids_md5):
        raise DataError(
            f"{task.subset}: shard {task.name} rows changed since planning; rerun build-shards"
        )
    tar_path = out / f"{task.name}.tar"
    with atomic_path(tar_path) as tmp, open(tmp, "wb") as f:
        sink = HashingWriter(f)
        index = write_tar(sink, rows, Path(task.raw_root), verify=task.verify)
        f.flush()
        os.fsync(f.fileno())
    write_bytes(out / f"{task.name}.idx", index)
    stats = {
        "name": task.name,
        "count": len(rows),
        "bytes": sink.offset,
        "crc32": f"{sink.crc32:08x}",
        "ids_md5": task.ids_md5,
    }
    write_json(out / f"{task.name}.stats.json", stats)
    return stats


def read_unchanged(path: str, row: dict, *, verify: bool = False) -> bytes:
    """The file's bytes if they are still those ingest validated; DataError otherwise. A file with
    ingest's size and mtime_ns is taken as unchanged, as rsync and make take it (hashing every JPEG
    again was the writer's largest cost); any other is hashed and shipped only if its sha256 is still
    the manifest's (a file merely touched, or copied with new times). verify: hash every file."""
    jpeg, stat = read_file(path)
    if verify or (stat.st_size, stat.st_mtime_ns) != (row["bytes"], row["mtime_ns"]):
        digest = hashlib.sha256(jpeg).hexdigest()
        if digest != row["checksum"]:
            raise DataError(f"{path}: sha256 {digest} differs from the manifest's {row['checksum']}: the "
                            "file changed since ingest; re-run ingest")
    return jpeg


def shard_rows(subset: str, start: int, count: int) -> list[dict]:
    """The rows start..start+count of the subset manifest, reading only the row groups that hold them (a
    filtered read_table set up a dataset per call: three times the time, a fifth of a shard's)."""
    f = pq.ParquetFile(subset)
    groups, first, end = [], None, 0
    for group in range(f.metadata.num_row_groups):
        begin, end = end, end + f.metadata.row_group(group).num_rows
        if begin < start + count and end > start:
            groups.append(group)
            first = begin if first is None else first
    if not groups:
        return []
    return f.read_row_groups(groups, columns=ROW_COLUMNS).slice(start - first, count).to_pylist()


class HashingWriter:
    """A write-only file wrapper that checksums what passes through, tracks the offset and starts the
    disk writes early. CRC-32 (as zip and gzip use) catches corruption in transit at several GB/s; each
    JPEG was checked against the manifest as it was read (read_unchanged)."""

    def __init__(self, f):
        self.f, self.crc32, self.offset, self.flushed = f, 0, 0, 0

    def write(self, data) -> int:
        self.crc32 = zlib.crc32(data, self.crc32)
        self.offset += len(data)
        written = self.f.write(data)
        if self.offset - self.flushed >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            # Start writing what we wrote back to disk now, without waiting for it (Linux starts the
            # writeback of dirty pages on DONTNEED): the fsync at the shard's end finds less to flush.
            os.posix_fadvise(self.f.fileno(), self.flushed, self.offset - self.flushed,
                             os.POSIX_FADV_DONTNEED)
            self.flushed = self.offset
        return written


def write_tar(sink, rows: list[dict], raw_root: Path, *, verify: bool = False) -> bytes:
    """Write the samples as a deterministic GNU tar; return the DALI index (the format of `wds2idx`).

    Headers are packed by hand (`tar_header`, equal to tarfile's GNU format byte for byte) and each
    sample goes out in one write: tarfile's per-member Python work was a third of the shard time."""
    lines = []
    for row in rows:
        parts, components, offset = [], [], sink.offset
        for ext, payload in zip(MEMBER_EXTS, sample_members(row, raw_root, verify=verify), strict=True):
            name = f"{row['id']}.{ext}"
            padding = bytes(-len(payload) % BLOCK)
            parts += [tar_header(name, len(payload)), payload, padding]
            components.append(f"{ext} {offset + BLOCK} {len(payload)} {name}")  # data follows the header
            offset += BLOCK + len(payload) + len(padding)
        sink.write(b"".join(parts))
        lines.append(" ".join(components))
    # End of archive: two zero blocks, then zeros up to a whole record, as tarfile and GNU tar write it.
    end = sink.offset + 2 * BLOCK
    sink.write(bytes(2 * BLOCK + -end % RECORD))
    return (f"v1.2 {len(lines)}\n" + "".join(line + "\n" for line in lines)).encode()


def _header_template() -> tuple[bytes, int]:
    """The fixed fields of every member's header (mode 0444, uid/gid 0, mtime 0, regular file, GNU
    magic, checksum field as spaces) and their byte sum; name and size are zeros, filled per member."""
    header = bytearray(BLOCK)
    header[100:124] = b"0000444\x000000000\x000000000\x00"
    header[136:148] = b"00000000000\x00"
    header[148:156] = b"        "  # the checksum is computed with its own field as spaces
    header[156:157] = tarfile.REGTYPE
    header[257:265] = tarfile.GNU_MAGIC
    return bytes(header), sum(header)


HEADER_TEMPLATE, HEADER_TEMPLATE_SUM = _header_template()
# The template's fixed runs around the name (0:100), size (124:136) and checksum (148:156) fields.
HEADER_IDS, HEADER_MTIME = HEADER_TEMPLATE[100:124], HEADER_TEMPLATE[136:148]
HEADER_TAIL = HEADER_TEMPLATE[156:]
NAME_PADDING = tuple(bytes(100 - n) for n in range(100))


def tar_header(name: str, size: int) -> bytes:
    """A GNU tar header for a regular file: the template with the name, size and checksum filled in,
    joined from its runs (four headers a sample: copying and patching a 512-byte template was slower)."""
    encoded = name.encode()
    if len(encoded) >= 100:
        raise DataError(f"{name}: member name over 99 bytes; SIXray ids are short, is the id column wrong?")
    if size >= 8**11:
        raise DataError(f"{name}: {size} bytes is over the 8 GiB a plain tar header holds")
    size_field = b"%011o\x00" % size
    checksum = b"%06o\x00 " % (HEADER_TEMPLATE_SUM + sum(encoded) + sum(size_field))
    return b"".join((encoded, NAME_PADDING[len(encoded)], HEADER_IDS, size_field, HEADER_MTIME, checksum,
                     HEADER_TAIL))


def sample_members(row: dict, raw_root: Path, *, verify: bool = False) -> tuple[bytes, bytes, bytes, bytes]:
    """(dif, jpg, json, lbl) payloads: difficult mask uint8[5], the original JPEG bytes (see
    read_unchanged), the sample's JSON, labels float32[5] little-endian."""
    jpeg = read_unchanged(os.path.join(raw_root, row["path"]), row, verify=verify)
    labels = [int(row[c] == 1) for c in CLASSES]
    difficult = [c for c in CLASSES if c in (row["difficult"] or ())]
    meta = {
        "id": row["id"],
        "labels": dict(zip(CLASSES, labels, strict=True)),
        "difficult": difficult,
        "width": row["width"],
        "height": row["height"],
    }
    if row["split"] == "test":
        meta["boxes"] = [
            {k: (round(v, 3) if k != "cls" else v) for k, v in box.items()} for box in row["boxes"] or ()
        ]
    return (
        bytes(c in difficult for c in CLASSES),
        jpeg,
        json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(),
        struct.pack(f"<{len(labels)}f", *labels),
    )
