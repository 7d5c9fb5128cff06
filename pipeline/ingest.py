"""`pipeline ingest`: a raw SIXray folder -> `<out>/manifest.parquet`, one validated row per image id.

Three steps, each resumable and atomic:
1. images: the sorted id list is cut into chunks; each chunk task validates its images, parses their
   XMLs and writes `_ingest/images-NNNNNN.parquet`, then a marker `.json` (written last) holding a
   hash of the chunk's inputs, so a rerun skips exactly the chunks already done.
2. labels: duckdb reads every CSV under ImageSet/ into `_ingest/labels.parquet` (see labels.py).
3. manifest: duckdb joins both (full outer), picks one status per row by priority, assigns our split
   and streams the rows, sorted by id, into the manifest in fixed-size row groups: same input, same bytes.
"""

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_json, write_parquet
from pipeline.classes import CLASSES
from pipeline.db import spilling_connection
from pipeline.distribute import run_tasks
from pipeline.labels import build_labels, read_annotation
from pipeline.schema import BOX, MANIFEST_SCHEMA, USABLE_STATUSES
from pipeline.split import register_split_hash, split_sql
from pipeline.validate import DEFAULT_MAX_PIXELS, inspect_file

IMAGE_DIR, ANNOTATION_DIR = "JPEGImage", "Annotation"
IMAGE_SUFFIXES = (".jpg", ".jpeg")
ROW_GROUP_SIZE = 65_536
DUCKDB_MEMORY_LIMIT = "1GB"
CHUNK_FORMAT = 1
"""Bump when the chunk files' content changes, so old markers stop matching."""

STATUS_PRIORITY = ("no_image", "duplicate_id", "empty", "not_jpeg", "too_large", "corrupt", "truncated",
                   "no_label", "label_conflict", "unknown_class", "bad_xml")
"""A row with several problems gets the first as its status (the error lists them all): a missing or
unreadable image outranks label trouble, which outranks annotation trouble."""

PROBLEM = pa.struct([("status", pa.string()), ("error", pa.string())])
CHUNK_SCHEMA = pa.schema([
    *[MANIFEST_SCHEMA.field(n) for n in ("id", "path", "bytes", "checksum", "width", "height", "mode",
                                         "phash")],
    ("boxes", pa.list_(BOX)),
    ("has_xml", pa.bool_()),
    ("problems", pa.list_(PROBLEM)),
])


def list_images(raw: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(id, file names) for every JPEG under JPEGImage/, sorted by id; names only, no stat calls."""
    with os.scandir(Path(raw) / IMAGE_DIR) as it:
        names = [e.name for e in it if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES]
    names.sort(key=lambda n: (os.path.splitext(n)[0], n))
    grouped: list[tuple[str, tuple[str, ...]]] = []
    for name in names:
        image_id = os.path.splitext(name)[0]
        if grouped and grouped[-1][0] == image_id:
            grouped[-1] = (image_id, grouped[-1][1] + (name,))
        else:
            grouped.append((image_id, (name,)))
    return grouped


def list_annotations(raw: Path) -> dict[str, str]:
    """id -> XML file name (positives only, ~9k in the release, so a dict is cheap)."""
    folder = Path(raw) / ANNOTATION_DIR
    if not folder.is_dir():
        return {}
    names = sorted(e.name for e in os.scandir(folder) if e.is_file() and e.name.lower().endswith(".xml"))
    found: dict[str, str] = {}
    for name in names:
        found.setdefault(name[:-4], name)
    return found


def chunk_key(task: dict) -> str:
    """Hash of everything a chunk's output depends on: its ids, file names, XML names and settings."""
    inputs = [CHUNK_FORMAT, task["raw"], task["entries"], task["xmls"], task["max_pixels"]]
    return hashlib.blake2b(json.dumps(inputs).encode(), digest_size=16).hexdigest()


def chunk_paths(work: Path, index: int) -> tuple[Path, Path]:
    return work / f"images-{index:06d}.parquet", work / f"images-{index:06d}.json"


def is_done(task: dict) -> bool:
    marker = chunk_paths(Path(task["work"]), task["index"])[1]
    try:
        return json.loads(marker.read_text())["key"] == chunk_key(task)
    except (OSError, ValueError, KeyError):
        return False


def image_row(raw: Path, image_id: str, names: tuple[str, ...], xml: str | None, max_pixels: int) -> dict:
    """One chunk row: the first file's facts, its boxes, and every problem found (unranked)."""
    path = f"{IMAGE_DIR}/{names[0]}"
    facts = inspect_file(raw / path, max_pixels=max_pixels)
    problems = []
    if len(names) > 1:
        listed = ", ".join(f"{IMAGE_DIR}/{n}" for n in names)
        error = f"{len(names)} files share id {image_id}: {listed}"
        problems.append({"status": "duplicate_id", "error": error})
    if facts["status"] != "ok":
        problems.append({"status": facts["status"], "error": f"{path}: {facts['error']}"})
    boxes = []
    if xml is not None:
        boxes, xml_problems = read_annotation(raw / ANNOTATION_DIR / xml, raw)
        problems += xml_problems
    keep = ("bytes", "checksum", "width", "height", "mode", "phash")
    return {"id": image_id, "path": path, **{k: facts[k] for k in keep}, "boxes": boxes,
            "has_xml": xml is not None, "problems": problems}


def ingest_chunk(task: dict) -> dict:
    """Validate one chunk of images; write its Parquet part, then its marker (last, so it means 'done')."""
    raw, work = Path(task["raw"]), Path(task["work"])
    rows = [image_row(raw, i, tuple(names), task["xmls"].get(i), task["max_pixels"])
            for i, names in task["entries"]]
    part, marker = chunk_paths(work, task["index"])
    write_parquet(part, pa.Table.from_pylist(rows, schema=CHUNK_SCHEMA))
    statuses = Counter(p["status"] for r in rows for p in r["problems"][:1])
    write_json(marker, {"key": chunk_key(task), "count": len(rows),
                        "problems": dict(sorted(statuses.items()))})
    return {"index": task["index"], "count": len(rows)}


def make_tasks(raw: Path, work: Path, entries, xmls: dict, chunk_size: int, max_pixels: int) -> list[dict]:
    tasks = []
    for index, start in enumerate(range(0, len(entries), chunk_size)):
        chunk = [[i, list(names)] for i, names in entries[start:start + chunk_size]]
        tasks.append({"raw": str(raw), "work": str(work), "index": index, "entries": chunk,
                      "xmls": {i: xmls[i] for i, _ in chunk if i in xmls}, "max_pixels": max_pixels})
    return tasks


EMPTY_IMAGES = """(SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS path, NULL::BIGINT AS bytes,
    NULL::VARCHAR AS checksum, NULL::INTEGER AS width, NULL::INTEGER AS height, NULL::VARCHAR AS mode,
    NULL::UBIGINT AS phash,
    NULL::STRUCT(cls VARCHAR, xmin FLOAT, ymin FLOAT, xmax FLOAT, ymax FLOAT)[] AS boxes,
    NULL::BOOLEAN AS has_xml, NULL::STRUCT(status VARCHAR, error VARCHAR)[] AS problems WHERE false)"""
"""The images relation when JPEGImage/ is empty: every label row then becomes a no_image row."""


def _sql_list(items) -> str:
    return "[" + ", ".join("'" + str(i).replace("'", "''") + "'" for i in items) + "]"


def manifest_query(parts: list[Path], labels: Path) -> str:
    """The manifest rows, sorted by id, with status, error and split (see split.py)."""
    images = f"read_parquet({_sql_list(parts)})" if parts else EMPTY_IMAGES
    positive = " OR ".join(f"l.{c} = 1" for c in CLASSES)
    labelled = ", ".join(f"l.{c}" for c in CLASSES)
    return f"""
        WITH joined AS (
            SELECT coalesce(i.id, l.id) AS id, i.path, i.bytes, i.checksum, i.width, i.height, i.mode,
                   i.phash, {labelled},
                   CAST(CASE WHEN l.hammer = 1 OR list_contains(list_transform(i.boxes, lambda b: b.cls),
                                                                'hammer') THEN 1
                        WHEN l.id IS NOT NULL OR i.has_xml THEN 0 END AS TINYINT) AS hammer,
                   l.difficult, i.boxes, coalesce(l.official, []) AS official,
                   list_concat(
                       CASE WHEN i.id IS NULL THEN [{{'status': 'no_image', 'error': 'labelled in ' ||
                            array_to_string(l.official, ', ') || ' but no {IMAGE_DIR}/' || l.id || '.jpg'}}]
                            ELSE i.problems END,
                       CASE WHEN l.id IS NULL THEN [{{'status': 'no_label',
                            'error': i.path || ': no label file under ImageSet/ names ' || i.id}}]
                            ELSE l.problems END) AS problems,
                   coalesce({positive}, false) AND len(coalesce(i.boxes, [])) = 0 AS boxless,
                   i.has_xml
            FROM {images} i FULL OUTER JOIN read_parquet({_sql_list([labels])}) l ON i.id = l.id
        ),
        ranked AS (
            SELECT *, list_sort(list_transform(problems, lambda p: {{'rank': list_position(
                {_sql_list(STATUS_PRIORITY)}, p.status), 'status': p.status, 'error': p.error}})) AS ranked
            FROM joined
        ),
        statused AS (
            SELECT * EXCLUDE (problems, ranked, boxless, has_xml),
                   CASE WHEN len(ranked) > 0 THEN ranked[1].status
                        WHEN boxless THEN 'no_boxes' ELSE 'ok' END AS status,
                   CASE WHEN len(ranked) > 0
                            THEN array_to_string(list_transform(ranked, lambda p: p.error), '; ')
                        WHEN boxless AND has_xml THEN {ANNOTATION_DIR!r} || '/' || id || '.xml has no boxes'
                        WHEN boxless THEN 'positive without {ANNOTATION_DIR}/' || id || '.xml' END AS error
            FROM ranked
        )
        {split_sql("statused", USABLE_STATUSES)}
        ORDER BY id
    """


def write_manifest(con: duckdb.DuckDBPyConnection, query: str, path: Path, raw: Path) -> None:
    """Stream the query into Parquet in fixed-size row groups (deterministic bytes), atomically."""
    schema = MANIFEST_SCHEMA.with_metadata({"raw_root": str(raw)})
    reader = con.sql(query).to_arrow_reader(ROW_GROUP_SIZE)
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        buffer: list[pa.RecordBatch] = []  # rows read but not yet written, fewer than a row group
        for batch in reader:
            buffer.append(batch)
            while sum(len(b) for b in buffer) >= ROW_GROUP_SIZE:
                table = pa.Table.from_batches(buffer)
                writer.write_table(_conform(table.slice(0, ROW_GROUP_SIZE), schema))
                buffer = table.slice(ROW_GROUP_SIZE).to_batches()
        tail = pa.Table.from_batches(buffer, schema=reader.schema)
        if len(tail):
            writer.write_table(_conform(tail, schema))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table.select(schema.names).cast(schema)


def ingest(raw, out_dir, *, seed: int = 0, workers: int | None = None, scheduler=None,
           chunk_size: int = 10_000, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Ingest `raw` into `out_dir/manifest.parquet` and `manifest.summary.json`; return the summary.

    Resumes: finished image chunks (marker matches) are skipped. Raises FileNotFoundError if `raw` has
    no JPEGImage/ folder; every per-image problem is a status, never an exception.
    """
    raw, out_dir = Path(raw).resolve(), Path(out_dir)
    if not (raw / IMAGE_DIR).is_dir():
        raise FileNotFoundError(f"{raw}: no {IMAGE_DIR}/ folder; is this a SIXray raw root?")
    work = out_dir / "_ingest"
    remove_stale_temp(out_dir, work)
    tasks = make_tasks(raw, work, list_images(raw), list_annotations(raw), chunk_size, max_pixels)
    pending = [t for t in tasks if not is_done(t)]
    for _ in run_tasks(ingest_chunk, pending, workers=workers, scheduler=scheduler, desc="ingest",
                       total=sum(len(t["entries"]) for t in pending)):
        pass
    # Spill to disk rather than grow: labels, join and sort over the full 1.06M ids ran in 500 MB.
    con = spilling_connection(work / "duckdb-spill", DUCKDB_MEMORY_LIMIT)
    labels = build_labels(raw, work / "labels.parquet", con=con)
    parts = [chunk_paths(work, t["index"])[0] for t in tasks]
    query = manifest_query(parts, work / "labels.parquet")
    register_split_hash(con, seed)
    write_manifest(con, query, out_dir / "manifest.parquet", raw)
    summary = summarise(con, out_dir / "manifest.parquet", seed, labels["label_files"])
    write_json(out_dir / "manifest.summary.json", summary)
    return {**summary, "chunks_done_before": len(tasks) - len(pending)}


def remove_stale_temp(out_dir: Path, work: Path) -> None:
    """Delete temp files a killed run left (atomic writers clean up after errors, not after SIGKILL)."""
    for pattern in (".manifest.*.tmp-*", ".images-*.tmp-*", ".labels.parquet.tmp-*"):
        for folder in (out_dir, work):
            for stale in folder.glob(pattern):
                stale.unlink(missing_ok=True)


def summarise(con: duckdb.DuckDBPyConnection, manifest: Path, seed: int, label_files: list[str]) -> dict:
    """Counts per status and split: small, deterministic (no timings), written after the manifest."""
    rows = con.execute(f"SELECT status, split, count(*) FROM read_parquet('{manifest}') "
                       "GROUP BY ALL ORDER BY ALL").fetchall()
    by_status, by_split = Counter(), Counter()
    for status, split, n in rows:
        by_status[status] += n
        by_split[split or "none"] += n
    total = sum(by_status.values())
    usable = sum(by_status[s] for s in USABLE_STATUSES)
    return {"total": total, "usable": usable, "bad": total - usable, "seed": seed, "label_files": label_files,
            "by_status": dict(sorted(by_status.items())), "by_split": dict(sorted(by_split.items()))}
