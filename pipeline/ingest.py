"""`pipeline ingest`: a raw SIXray folder -> `<out>/manifest.parquet`, one validated row per image id.

Three steps, each resumable, atomic and incremental. `_ingest/state.json`, written after the manifest
of a successful run, lists what that run's manifest was made from; a rerun builds on it:
1. images: the names under JPEGImage/ (a numpy bytes array, a few bytes per id, no stat calls) sorted by
   id are cut into chunks of ids, made as the pool asks for them. A chunk task stats its files and XMLs
   and hashes their names, sizes and mtime_ns into its key: its part `_ingest/images-<key>.parquet`
   is done if it exists. Otherwise the task takes the last run's rows for its id range, reuses those
   whose file names, size and mtime_ns still match, validates only the others, re-parses its XMLs
   (cheap) and writes the part. Every task reports how its ids changed since the last run.
2. labels: every CSV under ImageSet/ is read into `_ingest/labels-<key>.parquet` (see labels.py), keyed
   by the CSVs' names, sizes and mtimes: unchanged label files are not read again. It is one more task
   of step 1's pool, run beside the image chunks.
3. manifest: skipped when the key of all its inputs (parts, labels, seed) is the last run's and the
   outputs are as that run left them. Otherwise our split is computed over narrow usable rows (see
   split.py), then each part, joined with the labels and splits of its id range and sorted within it,
   is streamed into the manifest in fixed-size row groups: same input, same bytes, whatever the
   chunking or the history. Parts and labels the new state does not list are deleted last.
"""

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from base.atomic import atomic_path, write_json, write_parquet, writes_folder
from base.distribute import run_tasks
from base.errors import MissingInputError
from base.hashing import content_key
from pipeline.db import spilling_connection
from pipeline.ingest_sql import images_relation, manifest_query, splits_query, sql_text
from pipeline.labels import build_labels, read_labels_summary, summary_path
from pipeline.layout import (
    ANNOTATION_DIR,
    IMAGE_DIR,
    JPEG_SUFFIXES,
    TIP_PREFIX,
    image_id,
    list_label_files,
    read_annotation,
)
from pipeline.schema import BOX, MANIFEST_SCHEMA, USABLE_STATUSES, manifest_metadata
from pipeline.split import register_split_hash
from pipeline.validate import DEFAULT_MAX_PIXELS, inspect_file, printable, unread

IMAGE_SUFFIXES = tuple(s[1:].encode() for s in JPEG_SUFFIXES)
SCAN_BATCH = 65_536
"""File names gathered as Python bytes before they move into a numpy array."""
ROW_GROUP_SIZE = 65_536
RANGE_ROW_GROUP = 16_384
"""Row group of the labels and splits files, sorted by id: a chunk's id range reads one or two."""
RANGE_PARTS = 4
"""Parts joined per manifest query (40,000 rows): duckdb pays its per-query cost a quarter as often and
uses every core (13.5-15.0 s -> 11.2-11.4 s for a manifest rewrite at 1.06M ids), and the sort stays far
inside its memory limit."""
DUCKDB_MEMORY_LIMIT = "256MB"
FORMAT = 4
"""Bump when a part's, the labels' or the manifest's content changes for the same inputs: every key
holds it, so nothing an older version wrote is reused."""
CHANGES = ("added", "changed", "removed", "unchanged", "validated")


PROBLEM = pa.struct([("status", pa.string()), ("error", pa.string())])
FILE_SCHEMA = pa.schema([
    *[MANIFEST_SCHEMA.field(n) for n in ("id", "path", "bytes", "checksum", "width", "height", "mode",
                                         "phash")],
    ("files", pa.list_(pa.string())),  # every file name of the id; the first one is `path`
    MANIFEST_SCHEMA.field("mtime_ns"),  # of `path`, taken before it was read
    ("file_problems", pa.list_(PROBLEM)),  # duplicate id, validation
])
"""What validating an id's files gives: a later run reuses it while files, bytes and mtime_ns match."""
XML_SCHEMA = pa.schema([("boxes", pa.list_(BOX)), ("has_xml", pa.bool_()),
                        ("xml_problems", pa.list_(PROBLEM))])
CHUNK_SCHEMA = pa.schema([*FILE_SCHEMA, *XML_SCHEMA])


def list_images(raw: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every JPEG under JPEGImage/: the file names (bytes) sorted by (id, name), and the index where each
    id's names start. A bytes array holds a name in its length (~13 bytes); a str in a list takes ~80."""
    batches = list(_scan(Path(raw) / IMAGE_DIR)) or [(np.array([], dtype=bytes),) * 2]
    names = np.concatenate([batch_names for batch_names, _ in batches])
    ids = np.concatenate([batch_ids for _, batch_ids in batches])
    del batches
    order = np.lexsort((names, ids))
    names, ids = names[order], ids[order]
    starts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return names, np.concatenate([[0], starts]) if len(names) else starts


def _scan(folder: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(names, ids) of the JPEGs in folder as bytes arrays, a batch at a time: names only, no stat
    calls, split and filtered by numpy (a Python call per name would cost more than the listing)."""
    with os.scandir(os.fsencode(folder)) as entries:
        while batch := list(islice(entries, SCAN_BATCH)):
            names = np.array([e.name for e in batch if _listed_as_file(e)], dtype=bytes)
            if len(names):
                ids, _, suffixes = np.char.rpartition(names, b".").T
                keep = (ids != b"") & np.isin(np.char.lower(suffixes), IMAGE_SUFFIXES)
                yield names[keep], _printable_ids(ids[keep])


def _printable_ids(ids: np.ndarray) -> np.ndarray:
    """ids sort as the manifest will hold them: one that is not UTF-8 by its printable form (one decode of
    the whole batch finds out whether any is)."""
    try:
        b"/".join(ids.tolist()).decode()
        return ids
    except UnicodeDecodeError:
        return np.array([i.decode(errors="backslashreplace").encode() for i in ids.tolist()], dtype=bytes)


def _listed_as_file(entry: os.DirEntry) -> bool:
    """A file, or a name we cannot stat (a symlink loop, a dangling link's target without permission):
    listed, so that validation gives it a status row instead of the listing crashing."""
    try:
        return entry.is_file()
    except OSError:
        return True


def list_annotations(raw: Path) -> dict[str, str]:
    """id -> XML file name (positives only, ~9k in the release, so a dict is cheap)."""
    folder = Path(raw) / ANNOTATION_DIR
    if not folder.is_dir():
        return {}
    names = sorted(e.name for e in os.scandir(folder)
                   if e.name.lower().endswith(".xml") and _listed_as_file(e))
    found: dict[str, str] = {}
    for name in names:
        found.setdefault(name[:-4], name)
    return found


@dataclass(frozen=True)
class IngestChunk:
    """A chunk of ids for a worker. Its key is not known here: it hashes the files' stats, which the
    worker takes (one stat per file would cost the listing its speed)."""

    raw: str
    work: str
    files: list[str]  # every file name of the chunk's ids, sorted by (id, name)
    max_pixels: int
    xmls: dict[str, str]  # id -> XML file name, for the ids that have one
    last_parts: list[dict]  # the last run's parts overlapping the chunk's id range


def chunk_tasks(raw: Path, work: Path, names: np.ndarray, starts: np.ndarray, xmls: dict, last_parts: list,
                *, chunk_size: int, max_pixels: int) -> Iterator[IngestChunk]:
    """One task per chunk_size ids, made only when the pool takes it."""
    bounds = np.append(starts[::chunk_size], len(names))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        files = [os.fsdecode(n) for n in names[lo:hi].tolist()]
        first, last = image_id(printable(files[0])), image_id(printable(files[-1]))
        yield IngestChunk(str(raw), str(work), files, max_pixels,
                          {i: xmls[i] for i in map(image_id, files) if i in xmls},
                          [p for p in last_parts if p["first"] <= last and p["last"] >= first])


def part_path(work: Path, key: str) -> Path:
    return Path(work) / f"images-{key}.parquet"


class Entry(NamedTuple):
    """One id of a chunk as found on disk: what its row depends on (the chunk's key hashes these)."""

    id: str
    files: list[str]  # every file name of the id, sorted; the first one is validated
    size: int  # of the first file
    mtime_ns: int
    xml: str | None
    xml_stat: list[int] | None  # [size, mtime_ns]


def stat_entries(raw: Path, files: list[str], xmls: dict[str, str]) -> list[Entry]:
    """The chunk's ids as they are on disk now: one stat per id (its first file) and per XML."""
    folder = os.open(raw / IMAGE_DIR, os.O_RDONLY)  # stat by name in the open folder: no path to walk
    try:
        entries = []
        for i, group in _group_by_id(files):
            image = _stat(group[0], folder)
            # An id that is not UTF-8 is a bad_name row; an XML under that name could not be reported.
            xml = xmls.get(i) if printable(group[0]) == group[0] else None
            entries.append(Entry(i, group, image.st_size, image.st_mtime_ns, xml, _xml_stat(raw, xml)))
        return entries
    finally:
        os.close(folder)


def _stat(name: str, folder: int) -> os.stat_result:
    """The file's stat, or the link's own where the target cannot be reached (validation then says why)."""
    try:
        return os.stat(name, dir_fd=folder)
    except OSError:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)


def _xml_stat(raw: Path, xml: str | None) -> list[int] | None:
    if xml is None:
        return None
    try:
        stat = os.stat(raw / ANNOTATION_DIR / xml)
    except OSError:
        stat = os.stat(raw / ANNOTATION_DIR / xml, follow_symlinks=False)
    return [stat.st_size, stat.st_mtime_ns]


def _group_by_id(files: list[str]) -> list[tuple[str, list[str]]]:
    grouped: list[tuple[str, list[str]]] = []
    for name in files:
        i = image_id(printable(name))
        if grouped and grouped[-1][0] == i:
            grouped[-1][1].append(name)
        else:
            grouped.append((i, [name]))
    return grouped


def chunk_key(task: IngestChunk, entries: list[Entry]) -> str:
    """Hash of everything a part depends on: settings, ids, file names, sizes and mtimes, XMLs."""
    return content_key([FORMAT, task.raw, task.max_pixels, entries])


def ingest_chunk(task: IngestChunk) -> dict:
    """Make one chunk's part unless it exists; return its key and id range and how its ids changed since
    the last run (added, changed, unchanged; validated: how many were validated now)."""
    raw, work = Path(task.raw), Path(task.work)
    entries = stat_entries(raw, task.files, task.xmls)
    key = chunk_key(task, entries)
    part = {"key": key, "first": entries[0].id, "last": entries[-1].id, "count": len(entries)}
    if any(p["key"] == key for p in task.last_parts):
        return {**part, "done": True, "unchanged": len(entries)}
    done = part_path(work, key).exists()
    last = read_last_rows(work, task.last_parts, part["first"], part["last"])
    reuse, last_ids = match_last_rows(last, entries)
    fresh = [e for e in entries if e.id not in reuse]
    if not done:
        reused = last.take(pa.array(sorted(reuse.values()), pa.int64()))
        write_parquet(part_path(work, key), chunk_table(raw, entries, reused, fresh, task.max_pixels))
    changed = sum(e.id in last_ids for e in fresh)
    return {**part, "done": done, "added": len(fresh) - changed, "changed": changed,
            "unchanged": len(reuse), "validated": 0 if done else len(fresh)}


def read_last_rows(work: Path, last_parts: list[dict], first: str, last: str) -> pa.Table:
    """The last run's file facts for the ids from first to last (a part gone missing counts as never
    made: its ids are validated again)."""
    tables = [FILE_SCHEMA.empty_table()]
    for p in last_parts:
        try:
            tables.append(pq.read_table(part_path(work, p["key"]), columns=FILE_SCHEMA.names,
                                        filters=[("id", ">=", first), ("id", "<=", last)]))
        except FileNotFoundError:
            continue
    return pa.concat_tables(tables)


def match_last_rows(last: pa.Table, entries: list[Entry]) -> tuple[dict[str, int], set[str]]:
    """The rows of `last` still true (id -> row index: same file names, size and mtime_ns as on disk
    now), and every id `last` has. Only the compared columns become Python objects."""
    on_disk = {e.id: ([printable(n) for n in e.files], e.size, e.mtime_ns) for e in entries}
    ids, files, sizes, mtimes = (last[c].to_pylist() for c in ("id", "files", "bytes", "mtime_ns"))
    reuse = {i: row for row, (i, *found) in enumerate(zip(ids, files, sizes, mtimes, strict=True))
             if on_disk.get(i) == tuple(found)}
    return reuse, set(ids)


def chunk_table(raw: Path, entries: list[Entry], reused: pa.Table, fresh: list[Entry],
                max_pixels: int) -> pa.Table:
    """The part: the reused file facts as they are plus the fresh entries validated, in id order (arrow
    sorts strings bytewise, as the listing does), beside every entry's XML parsed again (few, small)."""
    validated = pa.Table.from_pylist([validate_files(raw, e, max_pixels) for e in fresh], schema=FILE_SCHEMA)
    files = pa.concat_tables([reused, validated]).sort_by("id")
    xmls = pa.Table.from_pylist([annotation_facts(raw, e.xml) for e in entries], schema=XML_SCHEMA)
    return pa.Table.from_arrays(files.columns + xmls.columns, schema=CHUNK_SCHEMA)


def validate_files(raw: Path, entry: Entry, max_pixels: int) -> dict:
    """The first file's facts and every problem of the id's files (unranked)."""
    files, image = [printable(n) for n in entry.files], entry.id
    path = f"{IMAGE_DIR}/{files[0]}"
    if files != entry.files:  # a reader of the manifest could not open it by this path: not validated
        facts = unread("bad_name", "the file name is not valid UTF-8 (rename it)")
    elif "." in image:  # a shard's sample key: webdataset and DALI read what follows its first dot as a type
        facts = unread("bad_name", "the id holds a dot, which a shard's sample key cannot (rename it)")
    else:
        facts = inspect_file(raw / path, max_pixels=max_pixels)
    problems = []
    if len(files) > 1:
        listed = ", ".join(f"{IMAGE_DIR}/{n}" for n in files)
        problems.append({"status": "duplicate_id", "error": f"{len(files)} files share id {image}: {listed}"})
    if facts["status"] != "ok":
        problems.append({"status": facts["status"], "error": f"{path}: {facts['error']}"})
    keep = ("bytes", "checksum", "width", "height", "mode", "phash")
    return {"id": image, "path": path, **{k: facts[k] for k in keep}, "files": files,
            "mtime_ns": entry.mtime_ns, "file_problems": problems}


def annotation_facts(raw: Path, xml: str | None) -> dict:
    boxes, problems = read_annotation(raw / ANNOTATION_DIR / xml, raw) if xml else ([], [])
    return {"boxes": boxes, "has_xml": xml is not None, "xml_problems": problems}


@dataclass(frozen=True)
class LabelsTask:
    """The label files read into the labels part: one task, run beside the image chunks (alone after them
    it left a core idle for 11 s at 1.06M ids)."""

    raw: str
    work: str


def ingest_task(task: IngestChunk | LabelsTask) -> dict:
    if isinstance(task, LabelsTask):
        return {"labels": str(labels_part(Path(task.raw), Path(task.work))), "count": 0}
    return ingest_chunk(task)


def ingest_images(raw: Path, work: Path, last_parts: list[dict], *, chunk_size: int, max_pixels: int,
                  workers, scheduler) -> tuple[list[dict], dict, Path]:
    """Run every chunk task and the labels task; return the parts (key, first, last, count) in id order,
    the change counts and the labels part."""
    names, starts = list_images(raw)
    chunks = chunk_tasks(raw, work, names, starts, list_annotations(raw), last_parts, chunk_size=chunk_size,
                         max_pixels=max_pixels)
    results = list(run_tasks(ingest_task, chain([LabelsTask(str(raw), str(work))], chunks), workers=workers,
                             scheduler=scheduler, desc="ingest", total=len(starts)))
    labels = Path(next(r["labels"] for r in results if "labels" in r))
    results = [r for r in results if "labels" not in r]
    parts = sorted(({k: r[k] for k in ("key", "first", "last", "count")} for r in results),
                   key=lambda p: p["first"])
    changes = Counter({k: 0 for k in CHANGES})
    for r in results:
        changes.update({k: r.get(k, 0) for k in CHANGES})
    # Every id the last run had and still present is counted once as changed or unchanged.
    changes["removed"] = sum(p["count"] for p in last_parts) - changes["changed"] - changes["unchanged"]
    return parts, {**changes, "chunks_done_before": sum(r["done"] for r in results)}, labels


def labels_part(raw: Path, work: Path) -> Path:
    """`_ingest/labels-<key>.parquet`, keyed by the label files' names, sizes and mtimes; built if missing."""
    stats = [[f.relative_to(raw).as_posix(), s.st_size, s.st_mtime_ns]
             for f in list_label_files(raw) for s in [f.stat()]]
    path = work / f"labels-{content_key([FORMAT, str(raw), stats])}.parquet"
    if not (path.exists() and summary_path(path).exists()):
        with spilling_connection(work / "duckdb-spill", DUCKDB_MEMORY_LIMIT) as con:
            build_labels(raw, path, con=con, row_group_size=RANGE_ROW_GROUP)
    return path


def _images(work: Path, parts: list[dict]) -> str:
    return images_relation([part_path(work, p["key"]) for p in parts])


def range_queries(work: Path, parts: list[dict], labels: Path, splits: Path) -> Iterator[str]:
    """The manifest's rows as one query per RANGE_PARTS parts, in id order. A range runs from its first
    part's first id to the next range's (the first range opens low, the last high), so a label row
    without an image lands in the range where it sorts."""
    groups = [parts[k : k + RANGE_PARTS] for k in range(0, len(parts), RANGE_PARTS)] or [[]]
    bounds = [None] + [group[0]["first"] for group in groups[1:]] + [None]
    for k, group in enumerate(groups):
        images = images_relation([part_path(work, p["key"]) for p in group])
        yield manifest_query(images, labels, splits, bounds[k], bounds[k + 1])


def write_manifest(con: duckdb.DuckDBPyConnection, work: Path, parts: list[dict], labels: Path,
                   path: Path, raw: Path) -> None:
    """Compute the splits, then stream the per-range queries into the manifest, atomically."""
    splits = work / "splits.parquet"
    with atomic_path(splits) as tmp:
        con.execute(f"COPY ({splits_query(_images(work, parts), labels)}) TO {sql_text(tmp)} "
                    f"(FORMAT parquet, ROW_GROUP_SIZE {RANGE_ROW_GROUP})")
    batches = (batch for query in range_queries(work, parts, labels, splits)
               for batch in con.sql(query).to_arrow_reader(ROW_GROUP_SIZE))
    write_row_groups(batches, path, raw)
    splits.unlink()


def write_row_groups(batches: Iterator[pa.RecordBatch], path: Path, raw: Path) -> None:
    """Write the batches as Parquet in fixed-size row groups, whatever the batches' sizes (so the bytes
    depend only on the rows), atomically."""
    schema = MANIFEST_SCHEMA.with_metadata(manifest_metadata(raw))
    source = folder_source(raw)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        pending = MANIFEST_SCHEMA.empty_table()  # rows read but not yet written, fewer than a row group
        for batch in batches:
            pending = pa.concat_tables([pending, _conform(pa.Table.from_batches([batch]), source)])
            while len(pending) >= ROW_GROUP_SIZE:
                # One contiguous chunk per row group: the writer cuts its pages where the chunks it is
                # given end, so without this the bytes followed the query ranges (seen at 1.06M ids).
                writer.write_table(pending.slice(0, ROW_GROUP_SIZE).combine_chunks())
                pending = pending.slice(ROW_GROUP_SIZE)
        if len(pending):
            writer.write_table(pending.combine_chunks())


def _conform(table: pa.Table, source: str) -> pa.Table:
    tip = pc.starts_with(table["id"], TIP_PREFIX).fill_null(False)
    table = table.append_column("source", pc.if_else(tip, "tip", source))
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def folder_source(raw: Path) -> str:
    """The `source` of the folder's non-TIP scans: 'synth' where `pipeline synth` wrote it, else 'real'."""
    return "synth" if (Path(raw) / ".synth" / "params.json").exists() else "real"


@writes_folder("out_dir", "pipeline ingest", ours=("manifest.parquet", "_ingest"))
def ingest(raw, out_dir, *, seed: int = 0, workers: int | None = None, scheduler=None,
           chunk_size: int = 10_000, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Ingest `raw` into `out_dir/manifest.parquet` and `manifest.summary.json`; return the summary, the
    change counts since the last run (CHANGES), chunks_done_before and manifest_written.

    Incremental and resumable (see the module doc). Raises FileNotFoundError if `raw` has no JPEGImage/
    folder; every per-image problem is a status, never an exception.
    """
    raw, out_dir = Path(raw).resolve(), Path(out_dir)
    if not (raw / IMAGE_DIR).is_dir():
        raise MissingInputError(f"{raw}: no {IMAGE_DIR}/ folder; is this a SIXray raw root?")
    work = out_dir / "_ingest"
    remove_stale_temp(out_dir, work)
    settings = {"format": FORMAT, "raw": str(raw), "max_pixels": max_pixels}
    last_run = read_state(work, settings)
    parts, changes, labels = ingest_images(raw, work, last_run["parts"], chunk_size=chunk_size,
                                           max_pixels=max_pixels, workers=workers, scheduler=scheduler)
    manifest_key, written = make_manifest(raw, out_dir, work, parts, labels, seed, last_run)
    write_json(work / "state.json", {"settings": settings, "parts": parts, "manifest_key": manifest_key,
                                     "outputs": output_stats(out_dir)})
    keep = {part_path(work, p["key"]).name for p in parts} | {labels.name, summary_path(labels).name}
    remove_unused(work, keep)
    summary = json.loads((out_dir / "manifest.summary.json").read_text())
    return {**summary, **changes, "manifest_written": written}


def make_manifest(raw: Path, out_dir: Path, work: Path, parts: list[dict], labels: Path, seed: int,
                  last_run: dict) -> tuple[str, bool]:
    """Write the manifest and its summary unless the last run wrote them from the same inputs and they
    are as it left them; return the manifest key and whether they were written."""
    # Spill to disk rather than grow: labels, splits and the per-range joins stay bounded at 1.06M ids.
    with spilling_connection(work / "duckdb-spill", DUCKDB_MEMORY_LIMIT) as con:
        key = content_key([FORMAT, seed, str(raw), [p["key"] for p in parts], labels.name,
                           MANIFEST_SCHEMA.names, folder_source(raw)])
        if key == last_run.get("manifest_key") and output_stats(out_dir) == last_run.get("outputs"):
            return key, False
        register_split_hash(con, seed)
        write_manifest(con, work, parts, labels, out_dir / "manifest.parquet", raw)
        label_files = read_labels_summary(labels)
        write_json(out_dir / "manifest.summary.json", summarise(con, out_dir / "manifest.parquet", seed,
                                                                label_files))
    return key, True


def read_state(work: Path, settings: dict) -> dict:
    """What the last successful run's manifest was made from, if that run had these settings."""
    try:
        state = json.loads((work / "state.json").read_text())
    except (OSError, ValueError):
        return {"parts": []}
    return state if state.get("settings") == settings else {"parts": []}


def output_stats(out_dir: Path) -> list | None:
    """(size, mtime_ns) of the manifest and its summary, None if either is missing: a rerun rewrites
    outputs someone replaced or deleted."""
    try:
        return [[s.st_size, s.st_mtime_ns] for name in ("manifest.parquet", "manifest.summary.json")
                for s in [(out_dir / name).stat()]]
    except FileNotFoundError:
        return None


def remove_unused(work: Path, keep: set[str]) -> None:
    """Delete the parts and labels the current state does not list (and older versions' chunk files)."""
    for pattern in ("images-*", "labels*.parquet", "labels*.json"):
        for path in work.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def remove_stale_temp(out_dir: Path, work: Path) -> None:
    """Delete temp files a killed run left (atomic writers clean up after errors, not after SIGKILL)."""
    for folder, pattern in ((out_dir, ".manifest.*.tmp-*"), (work, ".*.tmp-*")):
        for stale in folder.glob(pattern):
            stale.unlink(missing_ok=True)


def summarise(con: duckdb.DuckDBPyConnection, manifest: Path, seed: int, label_files: dict) -> dict:
    """Counts per status and split, the label files read and those skipped (`skipped_label_files`,
    each {'file', 'error'}): small, deterministic (no timings), written after the manifest."""
    rows = con.execute(f"SELECT status, split, count(*) FROM read_parquet({sql_text(manifest)}) "
                       "GROUP BY ALL ORDER BY ALL").fetchall()
    by_status, by_split = Counter(), Counter()
    for status, split, n in rows:
        by_status[status] += n
        by_split[split or "none"] += n
    total = sum(by_status.values())
    usable = sum(by_status[s] for s in USABLE_STATUSES)
    return {"total": total, "usable": usable, "bad": total - usable, "seed": seed,
            "label_files": label_files["label_files"], "skipped_label_files": label_files["skipped_files"],
            "by_status": dict(sorted(by_status.items())), "by_split": dict(sorted(by_split.items()))}
