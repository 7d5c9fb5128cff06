"""build-shards planning at the real SIXray size: 1,059,231 manifest rows with realistic columns.

This is the path that ran out of memory at the real size while every miniature test passed: subset
selection, the shard plan and the subset manifest's external sort, then the plan read back, in a fresh
process (so its peak RSS is its own), with the settings the command uses.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scale_manifest import NEGATIVES, POSITIVES, write_scale_manifest

from base.vocabulary import CLASSES

PEAK_RSS_BOUND_MB = 400
"""Measured 305 MB here (76 MB of it imports), 2026-12-05; 1 GB is the goal for the whole command. The
margin is a third: reading the manifest whole once peaked at 587 MB, which the old bound (600) let pass."""

CHILD = """
import json, sys
from pathlib import Path
from pipeline.shards import read_plan
from pipeline.subsets import SubsetConfig, build_subset
manifest = Path(sys.argv[1])
summary = build_subset(manifest, manifest.with_name("sixray1000.parquet"), SubsetConfig(1000))
shards = read_plan(manifest.with_name("sixray1000.parquet"))
# VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork and exec.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"summary": summary, "shards": shards, "peak_mb": peak_kb / 1024}))
"""


def test_sixray1000_plan_of_the_real_size_in_bounded_memory(tmp_path):
    manifest = write_scale_manifest(tmp_path / "manifest.parquet")
    done = subprocess.run([sys.executable, "-c", CHILD, str(manifest)], capture_output=True, text=True,
                          check=True, cwd=Path(__file__).parent.parent)
    result = json.loads(done.stdout)
    assert result["peak_mb"] < PEAK_RSS_BOUND_MB, result["peak_mb"]

    table = pq.read_table(manifest, columns=["status", "split", *CLASSES])
    usable = table.filter(pc.equal(table["status"], "ok"))
    positive = np.stack([usable[c].to_numpy() for c in CLASSES], axis=1).any(axis=1)
    test = usable["split"].to_numpy(zero_copy_only=False) == "test"
    summary, shards = result["summary"], result["shards"]
    for split, in_split in (("train", ~test), ("test", test)):
        assert summary[split]["negatives"] == int((in_split & ~positive).sum())  # every usable negative
        assert summary[split]["positives"] <= int((in_split & positive).sum())
        planned = {n: s for n, s in shards.items() if s["split"] == split}
        count = summary[split]["positives"] + summary[split]["negatives"]
        assert sum(s["count"] for s in planned.values()) == count
        assert len(planned) == -(-count // 1000)  # 1,000 samples a shard (far under the byte budget)
    # The quota: 1,000 positives a class over both splits (all of a rarer class), plus the
    # overshoot of images that fill several classes' quotas at once.
    for c in CLASSES:
        taken = summary["train"]["per_class"][c] + summary["test"]["per_class"][c]
        available = int((usable[c].to_numpy() == 1).sum())
        assert min(1000, available) <= taken < 1400, (c, taken, available)
    assert len(table) == POSITIVES + NEGATIVES
    subset_rows = pq.read_metadata(manifest.with_name("sixray1000.parquet")).num_rows
    assert subset_rows == sum(s["count"] for s in shards.values())
