"""Atomic file writers: write under a temporary name in the same folder, then os.replace.

A crash or a full disk leaves either the old file or the new one, never a partial file under the
final name; the temporary file is removed on failure.
"""

import contextlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_bytes_unsynced(path, data: bytes) -> None:
    """Atomic like write_bytes, without the fsync: for the many files of a chunk whose marker, written
    last and synced, says the chunk is done (a million fsyncs would dominate the run)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def read_json(path, what: str) -> dict:
    """A JSON object this project wrote (`what` says which, for the error): a DataError naming the file when
    it is not JSON or not an object, never a parser's traceback."""
    from pipeline.errors import DataError

    try:
        obj = json.loads(Path(path).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); it should be {what}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: a JSON {type(obj).__name__}, not an object; it should be {what}")
    return obj


def write_json(path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def write_parquet(path, table: pa.Table, **kwargs) -> None:
    """Deterministic Parquet: same table in, same bytes out."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", **kwargs)
