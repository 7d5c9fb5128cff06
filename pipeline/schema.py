"""The manifest schema, defined once: every writer and reader of manifests uses these definitions."""

import pyarrow as pa

from base.vocabulary import ALL_CLASSES

BOX = pa.struct(
    [
        ("cls", pa.string()),
        ("xmin", pa.float32()),
        ("ymin", pa.float32()),
        ("xmax", pa.float32()),
        ("ymax", pa.float32()),
    ]
)

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # SIXray image id: the file name without extension (the key)
        ("path", pa.string()),  # relative to the raw root, POSIX separators
        ("bytes", pa.int64()),
        ("checksum", pa.string()),  # sha256 hex of the file's bytes (`sha256sum` checks it)
        ("mtime_ns", pa.int64()),  # of `path` when ingest read it: build-shards hashes only a changed file
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),  # PIL mode from the header: RGB, L (grayscale), CMYK
        ("phash", pa.uint64()),  # 64-bit difference hash, for near-duplicate (leakage) reports
        *[(c, pa.int8()) for c in ALL_CLASSES],  # 1 present (difficult included), 0 absent, null unknown
        ("difficult", pa.list_(pa.string())),  # classes marked 0 ('difficult') in the label files
        ("boxes", pa.list_(BOX)),
        ("official", pa.list_(pa.string())),  # label files listing the id, e.g. '10/train', '100/test_new'
        ("split", pa.string()),  # our split: 'train' | 'test'; null where the row is unusable
        ("status", pa.string()),  # one of STATUSES
        ("error", pa.string()),  # human-readable detail naming the file; null when status is 'ok'
        ("source", pa.string()),  # one of SOURCES; null in manifests written before the column existed
    ]
)

SUBSET_SCHEMA = MANIFEST_SCHEMA.append(pa.field("shard", pa.string())).append(pa.field("order", pa.int64()))
"""manifests/sixray<N>.parquet: the manifest rows of one subset, the shard each lands in and its
position in that shard's (deterministically shuffled) order."""

USABLE = {
    "ok": "usable",
    "no_boxes": "usable for classification; positive without box annotation (missing or empty XML)",
}
PROBLEMS = {
    "no_image": "label row without an image",
    "bad_name": "a file name that is not valid UTF-8, or an id with a dot (a shard's sample key holds none)",
    "duplicate_id": "two or more files share the id",
    "unreadable": "the file cannot be opened or read (a symlink loop, no permission, an I/O error)",
    "empty": "zero-byte image file",
    "not_jpeg": "content is not a JPEG",
    "too_large": "header size over the limit (checked before decoding)",
    "corrupt": "the JPEG decoder failed",
    "truncated": "the entropy-coded stream ends early",
    "no_label": "image without a label row",
    "bad_label_row": "a label row with the wrong number of fields or a value other than 1, 0, -1",
    "label_conflict": "label rows for the id disagree",
    "unknown_class": "a class name that is not in the vocabulary",
    "bad_xml": "malformed annotation XML",
}
"""In priority order: a row with several problems gets the first as its status (the error lists them
all): a missing or unreadable image outranks label trouble, which outranks annotation trouble."""
STATUSES = {**USABLE, **PROBLEMS}
"""Every status a manifest row (or a `model predict` row) can have."""
USABLE_STATUSES = tuple(USABLE)
"""Rows with these statuses go into subsets and shards; every other status is excluded and reported."""

SOURCES = ("real", "synth", "tip")
"""Where a scan comes from: a scanner ('real'), `pipeline synth` (its folder holds `.synth/params.json`)
or `pipeline tip` (ids starting with TIP_PREFIX); ingest sets it."""


SCHEMA_VERSION = 1
"""Written into every manifest's Parquet metadata (`sixray_schema`); bump when a column changes meaning.
Readers refuse a manifest from a newer version rather than misread it."""


def manifest_metadata(raw_root) -> dict:
    return {"raw_root": str(raw_root), "sixray_schema": str(SCHEMA_VERSION)}


def check_manifest(path, schema: pa.Schema = MANIFEST_SCHEMA) -> None:
    """UsageError unless `path` is a manifest this version reads: Parquet, not from a newer schema, with
    every column `schema` has (an older manifest is made current by running `pipeline ingest` again)."""
    import pyarrow.parquet as pq

    from base.errors import DataError, UsageError

    try:
        found = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{path}: not a readable Parquet manifest ({exc})") from exc
    if b"sixray_schema" not in (found.metadata or {}) and not {"id", "path", "status"} <= set(found.names):
        raise DataError(f"{path}: a Parquet file, but not a manifest of this tool (no sixray_schema "
                        "metadata, no id, path and status columns); `pipeline ingest` and `build-shards` "
                        "write manifests")
    try:
        version = int((found.metadata or {}).get(b"sixray_schema", b"0"))
    except ValueError:
        raise DataError(f"{path}: its sixray_schema metadata is not a number: damaged manifest") from None
    if version > SCHEMA_VERSION:
        raise UsageError(f"{path}: written by a newer sixray-tools (manifest schema {version}; this one "
                         f"reads up to {SCHEMA_VERSION}): upgrade, or rerun `pipeline ingest` with this one")
    missing = [name for name in schema.names if name not in found.names]
    if missing:
        raise UsageError(f"{path}: no column(s) {', '.join(missing)}: written by an older version; run "
                         "`pipeline ingest` again to update it")

