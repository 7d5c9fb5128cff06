"""The shared core: stable hashes, atomic writers, the task distributor (local pool and Dask)."""

import errno
import os

import pyarrow as pa
import pytest

from base import atomic
from base.distribute import run_tasks
from base.hashing import content_key, stable_hash, stable_hashes


def test_stable_hash_is_fixed_and_salted():
    # A fixed value pins the hash across machines and Python versions (PYTHONHASHSEED plays no part).
    assert stable_hash(0, "split", "P00001") == 0x53AFCB9A15B6D960
    assert stable_hash(0, "split", "P00001") != stable_hash(0, "negatives", "P00001")
    assert stable_hash(0, "split", "P00001") != stable_hash(1, "split", "P00001")
    assert stable_hashes(0, "split", ["P00001", "N0000001"]).tolist() == [
        stable_hash(0, "split", "P00001"),
        stable_hash(0, "split", "N0000001"),
    ]


def test_content_key_is_fixed():
    # The names of resumable chunks: a changed key would redo every chunk an earlier version wrote.
    assert content_key(["chunk", 3, {"a": 1}]) == "3f1ffc681da007715288ad93a1604f0f"
    assert content_key("x", 8) == "6d6f773a11561dcc"


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "a.json"
    atomic.write_json(target, {"n": 1})
    atomic.write_json(target, {"n": 2})
    assert target.read_text() == '{\n "n": 2\n}\n'
    assert os.listdir(tmp_path) == ["a.json"]


def test_full_disk_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "m.parquet"
    atomic.write_parquet(target, pa.table({"id": ["P00001"]}))
    before = target.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic.write_parquet(target, pa.table({"id": ["P00002"]}))
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.parquet"]


def _square(task):
    return {"task": task, "value": task * task, "count": 1}


@pytest.mark.parametrize("workers", [1, 2])
def test_run_tasks_local(workers):
    results = sorted(run_tasks(_square, range(6), workers=workers), key=lambda r: r["task"])
    assert [r["value"] for r in results] == [0, 1, 4, 9, 16, 25]


def test_run_tasks_on_dask_cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    with cluster as c:
        results = sorted(run_tasks(_square, range(5), scheduler=c.scheduler_address), key=lambda r: r["task"])
    assert [r["value"] for r in results] == [0, 1, 4, 9, 16]
