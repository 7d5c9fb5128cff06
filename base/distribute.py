"""Run independent tasks on every local core or on a Dask cluster, behind one signature.

Each stage (synth, ingest, build-shards, threats, tip) splits its work into picklable tasks that write
their own output atomically and return a small summary dict. `run_tasks` yields those summaries as they
finish, with a progress bar. Tasks may come from a generator: the local pool takes them as it goes, so a
stage never holds them all.

`run_chunks` is the one resumable loop of synth, threats and tip: each `Chunk` carries the key of
everything its output depends on, its worker writes the output and then the chunk's marker (`mark_done`)
last, and a rerun leaves out the chunks whose marker holds their key. (Ingest and build-shards keep their
own test of done: ingest's key needs the files' stats, taken in the worker; a shard's marker holds a
content hash and a size.)
"""

import ctypes
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

from tqdm import tqdm

from base.atomic import read_json, write_json
from base.errors import UsageError


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_tasks(
    fn: Callable,
    tasks: Iterable,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    desc: str = "",
    unit: str = "img",
    count: Callable[[dict], int] = lambda result: result.get("count", 1),
    total: int | None = None,
) -> Iterator:
    """Yield fn(task) for every task, in completion order, advancing the bar by count(result).

    scheduler: None runs on a local process pool of `workers` (default: every core; 1 runs inline,
    which keeps tracebacks simple) with at most IN_FLIGHT tasks per worker submitted at a time; an
    address ('tcp://host:8786') or a distributed.Client runs the same tasks on that Dask cluster.
    """
    with tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True, disable=None) as bar:
        for result in _execute(fn, tasks, workers or default_workers(), scheduler):
            bar.update(count(result))
            yield result


IN_FLIGHT = 2
"""Tasks submitted per worker ahead of the results: enough to keep every worker busy, and the tasks
(and their results) held at once stay a handful whatever the stage's size."""


def _execute(fn, tasks, workers, scheduler):
    if scheduler is not None:
        yield from _dask(fn, list(tasks), scheduler)
        return
    tasks = iter(tasks)
    head = list(islice(tasks, workers))  # enough to size the pool without listing every task
    if workers == 1 or len(head) <= 1:
        yield from map(fn, chain(head, tasks))
    else:
        yield from _pool(fn, chain(head, tasks), min(workers, len(head)))


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int, *_) -> None:
    """In a worker process (a pool's initializer, a DataLoader's worker_init_fn): the kernel kills it when
    its parent dies, even by SIGKILL as the OOM killer sends, so no orphan goes on working or holding the
    output's writer lock. Linux only; elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)


def _worker_start(parent: int) -> None:
    """In a worker: it dies with its parent, and Ctrl-C (SIGINT, sent to the whole process group) ends it
    at once and silently; the parent reports the interruption once. Its unfinished output is a temp file
    the next run deletes."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _pool(fn, tasks: Iterator, workers: int):
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_start, initargs=(os.getpid(),)) as pool:
        pending = {pool.submit(fn, t) for t in islice(tasks, IN_FLIGHT * workers)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            pending |= {pool.submit(fn, t) for t in islice(tasks, len(done))}
            for future in done:
                yield future.result()


def _dask(fn, tasks, scheduler):
    from distributed import Client
    from distributed import as_completed as dask_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        for future in dask_completed(client.map(fn, tasks, pure=False)):
            yield future.result()
    finally:
        if client is not scheduler:
            client.close()


# ---------------------------------------------------------------- resumable chunks


@dataclass(frozen=True)
class Chunk:
    """A resumable piece of a stage's work, handed to a worker: `key` hashes everything its output depends
    on; the worker writes its output, then calls `mark_done`, which writes `marker` last. A stage's
    subclass adds the fields its worker needs and its size (`__len__`, for the progress bar)."""

    key: str
    marker: str

    def __len__(self) -> int:
        return 1


def is_done(chunk: Chunk) -> bool:
    """The chunk's marker exists and holds its key. A marker from before markers held keys counts as
    done: the stage's claimed parameters already match (see `claim`)."""
    try:
        return json.loads(Path(chunk.marker).read_bytes()).get("key", chunk.key) == chunk.key
    except (OSError, ValueError):
        return False


def mark_done(chunk: Chunk, record: dict) -> None:
    """Write the chunk's marker (its record and key), synced: call it after its output is written."""
    write_json(chunk.marker, {**record, "key": chunk.key})


def run_chunks(fn: Callable[[Chunk], dict], chunks: Iterable[Chunk], *, desc: str, unit: str = "img",
               workers: int | None = None, scheduler=None) -> tuple[list[dict], int]:
    """fn on every chunk not done yet, on every core (or a Dask cluster); return the results of the chunks
    run now and how many were done before."""
    chunks = list(chunks)
    todo = [c for c in chunks if not is_done(c)]
    results = list(run_tasks(fn, todo, workers=workers, scheduler=scheduler, desc=desc, unit=unit,
                             total=sum(map(len, todo))))
    return results, len(chunks) - len(todo)


def claim(path: Path, params: dict, advice: str) -> None:
    """Record in `path` the parameters a resumable output is made with, or refuse (UsageError) to resume
    one made with others, which would mix two outputs in one folder; `advice` says what to do instead."""
    path = Path(path)
    if path.exists():
        previous = read_json(path, "the parameters this output was made with")
        if previous != params:
            raise UsageError(f"{path}: made with {previous}, not {params}; {advice}")
        return
    write_json(path, params)

