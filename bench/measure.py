"""Run a command as a user would and measure it: wall time and the peak memory of its whole process tree.

    python3 -m bench.measure -- pipeline ingest --raw /tmp/scale/raw --out /tmp/scale/m

Peak memory is sampled every 200 ms as the sum over the command and all its descendants (worker
processes included) of the proportional set size (PSS: a page shared by n processes counts 1/n in
each, so forked workers are not counted twice for what they share) and of the plain RSS, the
conservative figure. The peak of each is reported in MB (10^6 bytes).
"""

import json
import subprocess
import sys
import time
from pathlib import Path

SAMPLE_S = 0.2


def _tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc (children lists of every thread)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _memory(pid: int) -> tuple[int, int]:
    """(rss, pss) in bytes of one process, 0 if it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
        kb = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in lines)}
    except (OSError, ValueError):
        return 0, 0
    return kb.get("Rss", 0), kb.get("Pss", 0)


def run_measured(cmd: list[str], *, log: Path | None = None, env=None) -> dict:
    """Run cmd to completion; return rc, seconds, peak_rss_mb and peak_pss_mb of its process tree."""
    out = open(log, "w") if log else subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = (sum(x) for x in zip(*(_memory(p) for p in _tree(proc.pid)), strict=True))
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - start
    if log:
        out.close()
    return {"rc": proc.returncode, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss / 1e6),
            "peak_pss_mb": round(peak_pss / 1e6)}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(run_measured(args[1:] if args[:1] == ["--"] else args)))
