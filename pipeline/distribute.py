"""Run independent tasks on every local core or on a Dask cluster, behind one signature.

Each stage (synth, ingest, build-shards) splits its work into picklable tasks that write their own
output atomically and return a small summary dict. `run_tasks` yields those summaries as they finish,
with a progress bar; resuming is the stage's job (it leaves finished tasks out of `tasks`). Tasks may
come from a generator: the local pool takes them as it goes, so a stage never holds them all.
"""

import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from itertools import chain, islice

from tqdm import tqdm


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
