import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fixture_scope import module_unless_mutmut
from shard_helpers import row, synthetic_rows, write_dataset

from pipeline.shards import build_shards, tar_header


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rows = synthetic_rows(20, 150) + [row("P00099", "test", ["gun", "knife"], difficult=["knife"])]
    write_dataset(root, rows)
    return root


@pytest.fixture(scope=module_unless_mutmut)
def built(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    result = build_shards(dataset / "manifests", out, 10, shard_size=40, workers=1)
    return out / "sixray10", result


def test_samples_hold_the_original_jpeg_labels_mask_and_json(dataset, built):
    shard_dir, result = built
    info = json.loads((shard_dir / "_info.json").read_text())
    assert info["test"]["count"] + info["train"]["count"] == 21 + 150
    assert info["train"]["shards"] == [
        "train-000000.tar",
        "train-000001.tar",
        "train-000002.tar",
        "train-000003.tar",
    ]
    assert info["train"]["counts"] == [40, 40, 40, 15]
    with tarfile.open(shard_dir / "test-000000.tar") as tar:
        members = tar.getmembers()
        payload = {m.name: tar.extractfile(m).read() for m in members}
    assert [m.name for m in members[:4]] == ["N0000001.dif", "N0000001.jpg", "N0000001.json", "N0000001.lbl"]
    assert all((m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o444) for m in members)
    assert payload["P00099.jpg"] == (dataset / "raw" / "JPEGImage" / "P00099.jpg").read_bytes()
    assert np.frombuffer(payload["P00099.lbl"], "<f4").tolist() == [1, 1, 0, 0, 0]
    assert np.frombuffer(payload["P00099.dif"], np.uint8).tolist() == [0, 1, 0, 0, 0]
    meta = json.loads(payload["P00099.json"])
    assert meta["difficult"] == ["knife"] and (meta["width"], meta["height"]) == (40, 32)
    assert meta["boxes"][0] == {"cls": "gun", "xmin": 1.0, "ymin": 2.0, "xmax": 11.5, "ymax": 12.25}
    with tarfile.open(shard_dir / "train-000000.tar") as tar:
        first_json = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        assert "boxes" not in json.loads(tar.extractfile(first_json).read())  # boxes: test split only
    stats = json.loads((shard_dir / "test-000000.stats.json").read_text())
    tar_bytes = (shard_dir / "test-000000.tar").read_bytes()
    assert stats["count"] == 36 and stats["bytes"] == len(tar_bytes)
    assert stats["crc32"] == f"{zlib.crc32(tar_bytes):08x}"


def test_shard_is_the_archive_tarfile_would_write(built):
    """The hand-packed headers and end record equal Python's tarfile GNU output byte for byte."""
    shard_dir, _ = built
    ours = (shard_dir / "test-000000.tar").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(ours)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, payload in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(payload), 0, 0o444, "", ""
            tar.addfile(info, io.BytesIO(payload))
    assert buf.getvalue() == ours


def test_tar_header_rejects_names_a_plain_header_cannot_hold():
    with pytest.raises(ValueError, match="over 99 bytes"):
        tar_header("x" * 96 + ".jpg", 10)
    assert tarfile.TarInfo.frombuf(tar_header("a.jpg", 8**11 - 1), "utf-8", "strict").size == 8**11 - 1
    with pytest.raises(ValueError, match="a.jpg: 8589934592 bytes is over the 8 GiB"):
        tar_header("a.jpg", 8**11)  # 11 octal digits hold 8**11 - 1 at most


def test_index_matches_dali_wds2idx_byte_for_byte(built, tmp_path):
    from wds2idx import IndexCreator

    shard_dir, _ = built
    for tar in sorted(shard_dir.glob("*.tar")):
        with IndexCreator(str(tar), str(tmp_path / "ref.idx"), verbose=False) as creator:
            creator.create_index()
        assert (tmp_path / "ref.idx").read_bytes() == tar.with_suffix(".idx").read_bytes(), tar.name


def test_rebuild_is_byte_identical_and_resume_redoes_only_what_is_missing(dataset, built, tmp_path):
    shard_dir, _ = built
    reference = files(shard_dir)
    result = build_shards(dataset / "manifests", tmp_path, 10, shard_size=40, workers=2)
    assert result["written"] == 5 and files(tmp_path / "sixray10") == reference
    (tmp_path / "sixray10" / "train-000002.stats.json").unlink()
    with open(tmp_path / "sixray10" / "train-000003.tar", "ab") as f:
        f.write(b"x")  # size no longer matches its stats: rebuilt
    result = build_shards(dataset / "manifests", tmp_path, 10, shard_size=40, workers=2)
    assert (result["written"], result["skipped"]) == (2, 3)
    assert files(tmp_path / "sixray10") == reference
    # Another plan: the old shards that are no longer in it are removed.
    build_shards(dataset / "manifests", tmp_path, 10, shard_size=100, workers=1)
    assert sorted(p.name for p in (tmp_path / "sixray10").glob("*.tar")) == [
        "test-000000.tar",
        "train-000000.tar",
        "train-000001.tar",
    ]


def test_a_changed_image_is_an_error_naming_the_file(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, synthetic_rows(2, 5))
    (root / "raw" / "JPEGImage" / "P00002.jpg").write_bytes(b"\xff\xd8changed")
    with pytest.raises(ValueError, match="P00002.jpg: sha256"):
        build_shards(root / "manifests", tmp_path / "out", 10, workers=1)


def test_a_changed_image_of_the_same_size_is_found_by_its_new_mtime(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, synthetic_rows(2, 5))
    image = root / "raw" / "JPEGImage" / "P00002.jpg"
    data = image.read_bytes()
    image.write_bytes(data[:-3] + b"xyz")
    with pytest.raises(ValueError, match="P00002.jpg: sha256 .* changed since ingest"):
        build_shards(root / "manifests", tmp_path / "out", 10, workers=1)


def test_a_touched_image_with_the_same_bytes_is_shipped(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, synthetic_rows(2, 5))
    build_shards(root / "manifests", tmp_path / "before", 10, workers=1)
    image = root / "raw" / "JPEGImage" / "P00002.jpg"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    build_shards(root / "manifests", tmp_path / "after", 10, workers=1)
    assert files(tmp_path / "after" / "sixray10") == files(tmp_path / "before" / "sixray10")


def test_size_and_mtime_are_trusted_unless_verify(tmp_path):
    """A file rewritten with ingest's size and mtime is taken as unchanged (as rsync takes it): only
    --verify hashes it. Also shows that an unchanged file is not hashed by default."""
    root = tmp_path / "data"
    write_dataset(root, synthetic_rows(2, 5))
    image = root / "raw" / "JPEGImage" / "P00002.jpg"
    stat, data = image.stat(), image.read_bytes()
    image.write_bytes(data[:-3] + b"xyz")
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    build_shards(root / "manifests", tmp_path / "trusted", 10, workers=1)
    shipped = {}
    for path in (tmp_path / "trusted" / "sixray10").glob("*.tar"):
        with tarfile.open(path) as tar:
            shipped.update({m.name: tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")})
    assert shipped["P00002.jpg"].endswith(b"xyz")
    with pytest.raises(ValueError, match="P00002.jpg: sha256"):
        build_shards(root / "manifests", tmp_path / "verified", 10, workers=1, verify=True)


def test_a_manifest_of_an_older_version_asks_for_ingest_again(tmp_path):
    import pyarrow.parquet as pq

    from base.errors import UsageError

    root = tmp_path / "data"
    manifest = write_dataset(root, synthetic_rows(2, 5))
    older = pq.read_table(manifest).drop_columns(["mtime_ns"])
    pq.write_table(older, manifest)
    with pytest.raises(UsageError, match=r"no column\(s\) mtime_ns: written by an older version; run "
                                         "`pipeline ingest` again"):
        build_shards(root / "manifests", tmp_path / "out", 10, workers=1)
    assert not (tmp_path / "out" / "sixray10").exists()


def test_dask_cluster_gives_the_same_shards(dataset, built, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        build_shards(dataset / "manifests", tmp_path, 10, shard_size=40, scheduler=cluster.scheduler_address)
    assert files(tmp_path / "sixray10") == files(built[0])


def test_killed_build_then_rerun_is_byte_identical(tmp_path):
    root = tmp_path / "data"
    write_dataset(root, synthetic_rows(60, 600))
    args = ["--ratio", "10", "--manifests", str(root / "manifests"), "--shard-size", "10", "--workers", "1"]
    clean = [sys.executable, "-c", "from pipeline.cli import main; main()", "build-shards", *args]
    subprocess.run([*clean, "--out", str(tmp_path / "clean")], check=True, capture_output=True)
    killed_dir = tmp_path / "killed" / "sixray10"
    proc = subprocess.Popen([*clean, "--out", str(tmp_path / "killed")], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(killed_dir.glob("*.stats.json"))) < 5:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(killed_dir.glob("*.stats.json")))
    assert 5 <= done < 66 and not (killed_dir / "_info.json").exists()
    subprocess.run([*clean, "--out", str(tmp_path / "killed")], check=True, capture_output=True)
    assert files(killed_dir) == files(tmp_path / "clean" / "sixray10")


def test_end_to_end_synth_ingest_build_shards_loader(tmp_path):
    from model.data import LoaderConfig, make_loader, split_info
    from pipeline.ingest import ingest
    from pipeline.xray.synth import synthesize

    synthesize(tmp_path / "raw", positives=20, negatives=60, size_factor=0.2, workers=1)
    ingest(tmp_path / "raw", tmp_path / "manifests", workers=1)
    for split_source in ("ours", "official"):
        out = tmp_path / split_source
        result = build_shards(
            tmp_path / "manifests", out, 10, split_source=split_source, shard_size=16, workers=1
        )
        assert result["selection"]["train"]["positives"] + result["selection"]["test"]["positives"] == 20
        cfg = LoaderConfig(batch_size=4, workers=1, resize=72, crop=64, test_size=64)
        ids = [i for b in make_loader(out / "sixray10", "test", cfg) for i in b.ids]
        assert len(ids) == len(set(ids)) == split_info(out / "sixray10", "test")["count"] > 0
