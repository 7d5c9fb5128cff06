"""Misuse round 2, folders: no command writes into a folder holding files it did not write. Such a folder is
refused (exit 2, one `error:` line naming one of the files) and left byte for byte as it was; a folder the
tool wrote before, marked or not, is still reused (resume, rerun)."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_misuse import TRAIN, assert_clean, run, tree_bytes

from base.atomic import OWNER_MARK, WRITER_LOCK
from model.cli import main as model_cli
from pipeline.cli import main as pipeline_cli


def users_folder(tmp_path, files=None):
    """A folder holding someone's own files (a YOLO dataset of theirs by default)."""
    folder = tmp_path / "theirs"
    files = files or {"labels/train/a.txt": "0 0.5 0.5 0.1 0.1\n", "data.yaml": "nc: 1\n"}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def commands(built, trained, out):
    manifests, shards = built / "manifests", built / "shards"
    return {
        "synth": (pipeline_cli, "synth", "--out", out, "--positives", "1", "--negatives", "1",
                  "--workers", "1"),
        "ingest": (pipeline_cli, "ingest", "--raw", built / "raw", "--out", out, "--workers", "1"),
        "build-shards": (pipeline_cli, "build-shards", "--ratio", "10", "--manifests", manifests,
                         "--out", out, "--workers", "1"),
        "export-coco": (pipeline_cli, "export", "--format", "coco", "--subset", "sixray10", "--manifests",
                        manifests, "--out", out),
        "export-yolo": (pipeline_cli, "export", "--format", "yolo", "--subset", "sixray10", "--manifests",
                        manifests, "--out", out),
        "train": (model_cli, "train", "--shards", shards / "sixray10", "--out", out, *TRAIN),
        "eval": (model_cli, "eval", "--checkpoint", trained / "best.pt", "--shards", shards / "sixray10",
                 "--out", out, "--workers", "0", "--device", "cpu"),
        "predict": (model_cli, "predict", "--checkpoint", trained / "best.pt", "--input", built / "raw",
                    "--out", out, "--workers", "0", "--device", "cpu"),
        "ablate": (model_cli, "ablate", "--shards", shards / "sixray10", "--out", out,
                   "--variants", "baseline", *TRAIN),
    }


COMMANDS = ["synth", "ingest", "build-shards", "export-coco", "export-yolo", "train", "eval", "predict",
            "ablate"]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_folder_of_someone_elses_files_is_refused_and_left_alone(built, trained, tmp_path, name):
    out = users_folder(tmp_path)
    before = tree_bytes(out)
    cli, *args = commands(built, trained, out)[name]
    assert_clean(run(cli, *args), 2, str(out), "did not write", "data.yaml")
    assert tree_bytes(out) == before


def test_the_threat_collection_folder_is_claimed_too(built, tmp_path):
    out = tmp_path / "threats"
    users_folder(out, {"mine.txt": "keep"})  # out/theirs: the collection's folder, named --name theirs
    before = tree_bytes(out)
    result = run(pipeline_cli, "threats", "--raw", built / "raw", "--out", out, "--name", "theirs",
                 "--manifests", built / "manifests", "--workers", "1")
    assert_clean(result, 2, "mine.txt")
    assert tree_bytes(out) == before


def test_a_new_or_empty_folder_is_marked_and_a_rerun_reuses_it(built, tmp_path):
    out = tmp_path / "coco"
    out.mkdir()
    (out / ".gitkeep").write_text("")
    args = ("export", "--format", "coco", "--subset", "sixray10", "--manifests", built / "manifests",
            "--out", out)
    assert run(pipeline_cli, *args).exit_code == 0
    assert (out / OWNER_MARK).is_file() and (out / "train.json").is_file()
    assert run(pipeline_cli, *args).exit_code == 0  # ours now: a rerun rewrites its own files


def test_an_unmarked_folder_of_an_earlier_version_is_still_ours(built, tmp_path):
    """Folders written before the mark existed are known by what the command wrote into them."""
    out = tmp_path / "manifests"
    out.mkdir()
    (out / "manifest.parquet").write_bytes((built / "manifests" / "manifest.parquet").read_bytes())
    result = run(pipeline_cli, "ingest", "--raw", built / "raw", "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    assert (out / OWNER_MARK).is_file()


def test_a_second_writer_is_refused_at_once_and_a_killed_one_blocks_nothing(built, tmp_path):
    out = tmp_path / "manifests"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from base.atomic import writing\n"
         f"with writing({str(out)!r}, 'pipeline ingest'):\n    print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "ready"
        args = ("ingest", "--raw", built / "raw", "--out", out, "--workers", "1")
        refused = run(pipeline_cli, *args)
        assert_clean(refused, 2, f"another `pipeline ingest` (pid {holder.pid}) is writing here")
        assert sorted(p.name for p in out.iterdir()) == sorted([OWNER_MARK, WRITER_LOCK])  # nothing written
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        result = run(pipeline_cli, *args)  # the killed writer's lock went with it
        assert result.exit_code == 0, result.output
        assert (out / "manifest.parquet").is_file()
    finally:
        holder.kill()
        holder.wait()


def test_build_shards_is_refused_while_an_ingest_writes_its_manifests_folder(built, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "manifest.parquet").write_bytes((built / "manifests" / "manifest.parquet").read_bytes())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from base.atomic import writing\n"
         f"with writing({str(manifests)!r}, 'pipeline ingest', ('manifest.parquet',)):\n"
         "    print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "ready"
        before = tree_bytes(manifests)
        refused = run(pipeline_cli, "build-shards", "--ratio", "10", "--manifests", manifests, "--out",
                      tmp_path / "shards", "--workers", "1")
        assert_clean(refused, 2, f"another `pipeline ingest` (pid {holder.pid}) is writing here")
        assert tree_bytes(manifests) == before and not (manifests / "sixray10.parquet").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_usage_error_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "never"
    result = run(pipeline_cli, "ingest", "--raw", tmp_path, "--out", out, "--workers", "1")
    assert_clean(result, 2, "no JPEGImage/ folder")
    assert not out.exists()


def test_a_shard_garbled_in_place_is_found_and_rewritten_with_verify(built, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "manifest.parquet").write_bytes((built / "manifests" / "manifest.parquet").read_bytes())
    args = ("build-shards", "--ratio", "10", "--manifests", manifests, "--out", tmp_path / "shards",
            "--shard-size", "40", "--workers", "1")
    assert run(pipeline_cli, *args).exit_code == 0
    tar = sorted((tmp_path / "shards" / "sixray10").glob("*.tar"))[0]
    good = tar.read_bytes()
    garbled = bytearray(good)
    garbled[len(good) // 2] ^= 0xFF  # same size, one byte flipped
    tar.write_bytes(bytes(garbled))
    assert "0 written" in run(pipeline_cli, *args).output  # by size alone the shard looks done
    assert tar.read_bytes() != good
    result = run(pipeline_cli, *args, "--verify")
    assert result.exit_code == 0 and "1 written" in result.output, result.output
    assert tar.read_bytes() == good


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` and everything in it made read-only, as on a read-only mount. Root ignores the mode bits,
    so as root they are made immutable (chattr +i) instead."""
    if os.geteuid() != 0:
        subprocess.run(["chmod", "-R", "a-w", folder], check=True)
    elif subprocess.run(["chattr", "-R", "+i", folder], capture_output=True).returncode != 0:
        pytest.skip("root, and this file system has no immutable flag: no way to make a folder read-only")
    try:
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "-i", folder], check=True)
        else:
            subprocess.run(["chmod", "-R", "u+w", folder], check=True)


@pytest.mark.parametrize("command", ["ingest", "build-shards"])
def test_a_read_only_manifests_folder_is_a_permission_error(built, tmp_path, command):
    manifests = tmp_path / "manifests"
    shutil.copytree(built / "manifests", manifests)
    raw = shutil.copytree(built / "raw", tmp_path / "raw")
    (raw / "JPEGImage" / "N9999998.jpg").write_bytes(next((raw / "JPEGImage").glob("N*.jpg")).read_bytes())
    args = {"ingest": ("ingest", "--raw", raw, "--out", manifests, "--workers", "1"),  # a new scan to add
            "build-shards": ("build-shards", "--ratio", "100", "--manifests", manifests, "--out",
                             tmp_path / "shards", "--workers", "1")}[command]
    before = tree_bytes(manifests)
    with read_only(manifests):
        result = run(pipeline_cli, *args)
    assert_clean(result, 2, "permission denied", str(manifests))
    assert tree_bytes(manifests) == before
