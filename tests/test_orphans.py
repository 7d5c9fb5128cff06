"""Workers die with their parent: after `kill -9` of the parent alone (what the OOM killer does), every
pool worker and DataLoader worker exits within seconds instead of going on as an orphan."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

POOL = """
import os, time
from base.distribute import run_tasks
def work(task):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: two workers' lines never interleave
    time.sleep(120)
    return {}
list(run_tasks(work, range(4), workers=2))
"""

LOADER = """
import functools, os, time, torch
from base.distribute import die_with_parent
class Slow(torch.utils.data.Dataset):
    def __len__(self): return 8
    def __getitem__(self, i):
        os.write(1, f"{os.getpid()}\\n".encode()); time.sleep(120); return i
loader = torch.utils.data.DataLoader(Slow(), num_workers=2, prefetch_factor=1,
                                     worker_init_fn=functools.partial(die_with_parent, os.getpid()))
list(loader)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its reaping is left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("script", [POOL, LOADER], ids=["pool", "dataloader"])
def test_workers_exit_when_their_parent_is_killed(script):
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        lines = [parent.stdout.readline() for _ in range(2)]
        assert all(line.strip().isdigit() for line in lines), (lines, parent.poll())
        workers = set(map(int, lines))
        assert parent.pid not in workers and all(map(alive, workers))
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(alive, workers)), [w for w in workers if alive(w)]
    finally:
        parent.kill()
        parent.wait()
        for pid in workers if "workers" in locals() else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
