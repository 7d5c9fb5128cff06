"""Atomic file writers: write under a temporary name in the same folder, then os.replace.

A crash or a full disk leaves either the old file or the new one, never a partial file under the
final name; the temporary file is removed on failure.
"""

import contextlib
import fcntl
import functools
import inspect
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


OWNER_MARK = ".sixray-tools"
"""Written into every output folder a command creates or adopts: the folder is ours to write in."""
WRITER_LOCK = ".sixray-tools.lock"
"""The advisory lock (flock) a command holds on its output folder while it runs: one writer at a time."""
HARMLESS = frozenset({".gitkeep", ".DS_Store", WRITER_LOCK})
"""Entries that do not make a folder someone else's."""
_LOCKED: set[str] = set()
"""Folders this process is writing (a command called inside another keeps the outer one's lock)."""


@contextlib.contextmanager
def writing(folder, command: str, ours: tuple[str, ...] = ()):
    """Write into `folder` as its only writer, or refuse (UsageError) before anything is written:
    - a folder holding files this tool did not write: a new or empty folder, or one this tool marked, is
      ours; so is one holding any of `ours` (what the command wrote before folders were marked);
    - a folder another process is writing: the writer lock (flock) is held while the block runs; the
      operating system drops it with the process, so a killed run never blocks a rerun.
    A folder made here and left empty by a failure is removed again."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _LOCKED:
        yield folder
        return
    _check_ours(folder, command, ours)
    created = [f for f in (folder, *folder.parents) if not f.exists()]  # innermost first
    with locked(folder, command):
        try:
            if not (folder / OWNER_MARK).is_file():
                write_json(folder / OWNER_MARK, {"written_by": "sixray-tools", "first_command": command})
            yield folder
        except BaseException:
            if created and set(os.listdir(folder)) <= {OWNER_MARK, WRITER_LOCK}:
                for name in (OWNER_MARK, WRITER_LOCK):
                    (folder / name).unlink(missing_ok=True)
                for made in created:
                    with contextlib.suppress(OSError):  # not empty: something else was written there
                        made.rmdir()
            raise


@contextlib.contextmanager
def locked(folder, command: str):
    """Hold `folder`'s writer lock for the block without claiming the folder: for `pipeline tip`, which adds
    its scans to a raw folder that is not its own. Refused (UsageError) while another process holds it."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _LOCKED:
        yield folder
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = _lock(folder, command)
    _LOCKED.add(key)
    try:
        yield folder
    finally:
        _LOCKED.discard(key)
        os.close(fd)


def writes_folder(where, command: str, ours: tuple[str, ...] = ()):
    """Decorator: the function writes the folder named by its argument `where` (or `where(arguments)`;
    None: no folder) under `writing`."""
    get = (lambda arguments: arguments[where]) if isinstance(where, str) else where

    def wrap(f):
        signature = inspect.signature(f)

        @functools.wraps(f)
        def run(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            folder = get(bound.arguments)
            if folder is None:
                return f(*args, **kwargs)
            with writing(folder, command, ours):
                return f(*args, **kwargs)
        return run
    return wrap


def _check_ours(folder: Path, command: str, ours: tuple[str, ...]) -> None:
    from base.errors import UsageError

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder}: a file, not a folder; choose another output folder")
    entries = sorted(set(os.listdir(folder)) - HARMLESS) if folder.is_dir() else []
    if entries and OWNER_MARK not in entries and not set(entries) & set(ours):
        raise UsageError(f"{folder} holds files this tool did not write ({folder / entries[0]}"
                         f"{f' and {len(entries) - 1} more' if len(entries) > 1 else ''}); `{command}` never "
                         "touches them: choose a new or empty folder")


def _lock(folder: Path, command: str) -> int:
    from base.errors import UsageError

    fd = os.open(folder / WRITER_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "process"
        os.close(fd)
        raise UsageError(f"{folder}: another {holder} is writing here; one writer at a time: wait for it to "
                         "end, or write elsewhere") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"`{command}` (pid {os.getpid()})".encode(), 0)
    return fd


def read_json(path, what: str) -> dict:
    """A JSON object this project wrote (`what` says which, for the error): a DataError naming the file when
    it is not JSON or not an object, never a parser's traceback."""
    from base.errors import DataError

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
