"""The misuse corpus: what new users do wrong and the bad files they feed, through every command.

Each case asserts the documented exit code (1 data problem, 2 usage error, 130 Ctrl-C), one clear
`error:` line that says what and where, no traceback, and that nothing already written is damaged.
"""

import errno
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from model.checkpoint import load_checkpoint
from model.cli import main as model_cli
from pipeline.cli import main as pipeline_cli
from pipeline.ingest import ingest

HEADER = "name,Gun,Knife,Wrench,Pliers,Scissors"


def train_flags(epochs: int = 1, workers: int = 0) -> list[str]:
    return ["--backbone", "tiny", "--epochs", str(epochs), "--batch-size", "8", "--resize", "48", "--crop",
            "40", "--test-size", "40", "--workers", str(workers), "--device", "cpu", "--select-on", "test"]


TRAIN = train_flags()


def run(cli, *args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean(result, code: int, *fragments: str, errors: int = 1) -> str:
    """Exit code `code`, `errors` lines 'error: ...' on stderr (the first holding every fragment), no
    traceback anywhere; returns the first error line."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == errors, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def tree_bytes(folder: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


# ------------------------------------------------------------------ fixtures: a small real dataset


def copy_shards(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built / "shards/sixray10", tmp_path / "sixray10"))


def label_raw(root: Path, files: dict[str, str | bytes]) -> Path:
    """A raw folder of three images (P00001 knife, P00002 gun, N0000001) and the given label files."""
    from tests.test_ingest import make_raw

    make_raw(root, 2, 1)
    (root / "ImageSet/10/train.csv").unlink()
    for name, text in files.items():
        path = root / "ImageSet" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


def ingest_rows(tmp_path: Path, files: dict) -> tuple:
    raw = label_raw(tmp_path / "raw", files)
    result = run(pipeline_cli, "ingest", "--raw", raw, "--out", tmp_path / "m", "--workers", "1")
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "m/manifest.parquet").to_pylist()}
    return result, rows


# ------------------------------------------------------------------ pipeline: wrong folders and order


def test_ingest_of_a_folder_without_jpegimage(tmp_path):
    assert_clean(run(pipeline_cli, "ingest", "--raw", tmp_path, "--out", tmp_path / "m"), 2,
                 "no JPEGImage/ folder; is this a SIXray raw root?")
    assert not (tmp_path / "m").exists()


def test_ingest_of_a_folder_that_does_not_exist(tmp_path):
    result = run(pipeline_cli, "ingest", "--raw", tmp_path / "nope")
    assert result.exit_code == 2 and "does not exist" in result.stderr and "Traceback" not in result.output


def test_build_shards_before_ingest(tmp_path):
    assert_clean(run(pipeline_cli, "build-shards", "--ratio", "10", "--manifests", tmp_path / "m"), 2,
                 "manifest.parquet: no manifest; run `pipeline ingest` first")


def test_stats_before_ingest(tmp_path):
    assert_clean(run(pipeline_cli, "stats", "--manifests", tmp_path), 2, "run `pipeline ingest` first")


def test_export_before_build_shards(built, tmp_path):
    shutil.copy(built / "manifests/manifest.parquet", tmp_path / "manifest.parquet")
    assert_clean(run(pipeline_cli, "export", "--format", "coco", "--subset", "sixray100", "--manifests",
                     tmp_path, "--out", tmp_path / "coco"), 2, "sixray100.parquet",
                 "build-shards --ratio 100")


def test_synth_with_a_bad_value_and_into_another_synth(tmp_path):
    result = run(pipeline_cli, "synth", "--out", tmp_path, "--size-factor", "0")
    assert result.exit_code == 2 and "Invalid value for '--size-factor'" in result.stderr
    first = ["synth", "--out", tmp_path / "raw", "--positives", "2", "--negatives", "2", "--size-factor",
             "0.1", "--workers", "1"]
    assert run(pipeline_cli, *first).exit_code == 0
    before = tree_bytes(tmp_path / "raw")
    assert_clean(run(pipeline_cli, *first[:-2], "--seed", "5"), 2, "use a new --out")
    assert tree_bytes(tmp_path / "raw") == before


def test_build_shards_when_the_raw_folder_moved(built, tmp_path):
    manifests = Path(shutil.copytree(built / "manifests", tmp_path / "m"))
    table = pq.read_table(manifests / "manifest.parquet")
    metadata = {**table.schema.metadata, b"raw_root": str(tmp_path / "gone").encode()}
    pq.write_table(table.replace_schema_metadata(metadata), manifests / "manifest.parquet")
    assert_clean(run(pipeline_cli, "build-shards", "--ratio", "10", "--manifests", manifests, "--out",
                     tmp_path / "s"), 2, "gone: no such folder", "pass --raw DIR")


def test_a_manifest_from_a_newer_schema_is_refused(built, tmp_path):
    manifests = Path(shutil.copytree(built / "manifests", tmp_path / "m"))
    table = pq.read_table(manifests / "manifest.parquet")
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"sixray_schema": b"99"}),
                   manifests / "manifest.parquet")
    before = tree_bytes(manifests)
    for args in (["build-shards", "--ratio", "10", "--out", tmp_path / "s"], ["stats"]):
        assert_clean(run(pipeline_cli, *args, "--manifests", manifests), 2, "newer sixray-tools",
                     "manifest schema 99")
    assert tree_bytes(manifests) == before


def test_a_scan_changed_since_ingest_stops_build_shards_naming_it(built, tmp_path):
    raw = Path(shutil.copytree(built / "raw", tmp_path / "raw"))
    positive = sorted((raw / "JPEGImage").glob("P*.jpg"))[0]
    data = positive.read_bytes()
    positive.write_bytes(data[:300] + bytes([data[300] ^ 1]) + data[301:])  # edited after ingest
    result = run(pipeline_cli, "build-shards", "--ratio", "10", "--manifests",
                 Path(shutil.copytree(built / "manifests", tmp_path / "m")), "--raw", raw, "--out",
                 tmp_path / "s", "--workers", "1")
    assert_clean(result, 1, positive.name, "differs from the manifest's", "re-run ingest")
    assert not (tmp_path / "s/sixray10/_info.json").exists(), "no epoch advertised"


# ------------------------------------------------------------------ pipeline: label files


def test_label_file_with_an_id_header_is_skipped_and_the_rest_ingested(tmp_path):
    result, rows = ingest_rows(tmp_path, {
        "10/train.csv": f"{HEADER}\nP00001,-1,1,-1,-1,-1\nP00002,1,-1,-1,-1,-1\nN0000001,-1,-1,-1,-1,-1\n",
        "10/bad.csv": "id,Gun,Knife,Wrench,Pliers,Scissors\nP00001,1,-1,-1,-1,-1\n"})
    assert_clean(result, 1, "ImageSet/10/bad.csv: first header column must be 'name'", "file skipped")
    assert rows["P00001"]["status"] == "ok" and rows["P00001"]["knife"] == 1
    assert rows["P00001"]["official"] == ["10/train"]


@pytest.mark.parametrize("text,fragment", [
    (HEADER.replace(",", ";") + "\nP00001;-1;1;-1;-1;-1\n", "columns separated by ';'"),
    ("", "empty file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "first header column must be 'name'"),
])
def test_files_that_cannot_be_label_files(tmp_path, text, fragment):
    result, rows = ingest_rows(tmp_path, {
        "10/train.csv": f"{HEADER}\nP00001,-1,1,-1,-1,-1\nP00002,1,-1,-1,-1,-1\nN0000001,-1,-1,-1,-1,-1\n",
        "10/test.csv": text})
    assert_clean(result, 1, "ImageSet/10/test.csv", fragment)
    assert {r["status"] for r in rows.values()} == {"ok"}


def test_a_short_row_is_a_problem_row_naming_file_and_line(tmp_path):
    result, rows = ingest_rows(tmp_path, {
        "10/train.csv": f"{HEADER}\nP00001,-1,1,-1,-1,-1\nP00002,1,-1\nN0000001,-1,-1,-1,-1,-1\n"})
    assert_clean(result, 1, "1 of 3 ids unusable")
    assert rows["P00002"]["status"] == "bad_label_row"
    assert rows["P00002"]["error"] == \
        "bad label row: ImageSet/10/train.csv line 3: 3 fields, the header has 6"
    assert rows["P00001"]["status"] == rows["N0000001"]["status"] == "ok"


def test_a_value_outside_1_0_minus1_names_file_line_and_column(tmp_path):
    result, rows = ingest_rows(tmp_path, {
        "10/train.csv": f"{HEADER}\nP00001,-1,1,-1,-1,-1\nP00002,yes,-1,-1,-1,2\nN0000001,-1,-1,-1,-1,-1\n"})
    assert_clean(result, 1, "1 of 3 ids unusable")
    assert rows["P00002"]["error"] == \
        "bad label row: ImageSet/10/train.csv line 3: 'yes' for Gun, '2' for Scissors (valid: 1, 0, -1)"


def test_crlf_file_with_one_lf_row_appended_by_hand_reads_fine(tmp_path):
    text = f"{HEADER}\r\nP00001,-1,1,-1,-1,-1\r\nP00002,1,-1,-1,-1,-1\r\nN0000001,-1,-1,-1,-1,-1\n"
    result, rows = ingest_rows(tmp_path, {"10/train.csv": text})
    assert result.exit_code == 0, result.output
    assert (rows["P00001"]["knife"], rows["P00002"]["gun"], rows["N0000001"]["gun"]) == (1, 1, 0)


def test_bom_blank_lines_spaces_trailing_commas_and_extra_columns_read_fine(tmp_path):
    text = ("\ufeffname, Gun ,Knife,Wrench,Pliers,Scissors,Comment\n\n"
            "P00001 , -1, 1 ,-1,-1,-1,checked twice\n   \n"
            "P00002.jpg,1,-1,-1,-1,-1,,\n\nN0000001,-1,-1,-1,-1,-1,\n\n")
    result, rows = ingest_rows(tmp_path, {"10/train.csv": text})
    assert result.exit_code == 0, result.output
    assert (rows["P00001"]["knife"], rows["P00002"]["gun"], rows["N0000001"]["knife"]) == (1, 1, 0)
    assert {r["status"] for r in rows.values()} == {"ok"}


def test_a_header_only_label_file_is_read_as_empty(tmp_path):
    result, rows = ingest_rows(tmp_path, {
        "10/train.csv": f"{HEADER}\nP00001,-1,1,-1,-1,-1\nP00002,1,-1,-1,-1,-1\nN0000001,-1,-1,-1,-1,-1\n",
        "10/test.csv": f"{HEADER}\n"})
    assert result.exit_code == 0, result.output
    assert {r["status"] for r in rows.values()} == {"ok"}


# ------------------------------------------------------------------ pipeline: crashes and Ctrl-C


def test_disk_full_while_ingest_writes_the_manifest(tmp_path, monkeypatch):
    from tests.test_ingest import make_raw

    raw = make_raw(tmp_path / "raw", 2, 4)
    out = tmp_path / "m"
    assert run(pipeline_cli, "ingest", "--raw", raw, "--out", out, "--workers", "1").exit_code == 0
    before = tree_bytes(out)
    (raw / "JPEGImage/N0000005.jpg").write_bytes((raw / "JPEGImage/N0000001.jpg").read_bytes())

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "manifest.parquet"))

    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full)
    assert_clean(run(pipeline_cli, "ingest", "--raw", raw, "--out", out, "--workers", "1"), 1,
                 "disk full writing", "free space and rerun")
    after = tree_bytes(out)
    for name in ("manifest.parquet", "manifest.summary.json"):
        assert after[name] == before[name], "the last manifest is intact"


def terminal_signals() -> None:
    """As a shell's foreground job has them: a background or CI runner may start us with SIGINT
    ignored, which a child inherits, and Python then installs no Ctrl-C handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(cmd: list, ready, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run cmd in its own process group, send Ctrl-C's SIGINT to the whole group once ready() holds."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())},
                            preexec_fn=terminal_signals)
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before Ctrl-C: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def cli(module: str, *args) -> list:
    return [sys.executable, "-c", f"from {module}.cli import main; main()", *map(str, args)]


def test_ctrl_c_during_ingest_then_a_rerun(tmp_path):
    from tests.test_ingest import make_raw

    raw = make_raw(tmp_path / "raw", 60, 540, size=(320, 288))
    out = tmp_path / "m"
    args = ["ingest", "--raw", raw, "--out", out, "--workers", "2", "--chunk-size", "10"]
    done = interrupt(cli("pipeline", *args), lambda: len(list((out / "_ingest").glob("images-*"))) >= 4)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "error: interrupted" in done.stderr, done.stderr
    assert not (out / "manifest.parquet").exists()
    assert run(pipeline_cli, *args).exit_code == 0
    clean = tmp_path / "clean"
    ingest(raw, clean, workers=1, chunk_size=10)
    assert (out / "manifest.parquet").read_bytes() == (clean / "manifest.parquet").read_bytes()


# ------------------------------------------------------------------ model: shards


def test_train_on_a_folder_without_info_json(tmp_path):
    assert_clean(run(model_cli, "train", "--shards", tmp_path, "--out", tmp_path / "run", *TRAIN), 2,
                 "_info.json: missing; run (or finish) `pipeline build-shards`")


def test_train_on_shards_that_do_not_exist(tmp_path):
    assert_clean(run(model_cli, "train", "--shards", tmp_path / "nope", "--out", tmp_path / "run", *TRAIN), 2,
                 "nope/_info.json: missing")


def test_a_missing_shard_mid_epoch_is_named(built, tmp_path):
    shards = copy_shards(built, tmp_path)
    victim = sorted(shards.glob("train-*.tar"))[-1]
    victim.unlink()
    assert_clean(run(model_cli, "train", "--shards", shards, "--out", tmp_path / "run", *TRAIN), 1,
                 victim.name)


def test_a_truncated_shard_is_named_also_from_a_loader_worker(built, tmp_path):
    shards = copy_shards(built, tmp_path)
    victim = sorted(shards.glob("train-*.tar"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    line = assert_clean(run(model_cli, "train", "--shards", shards, "--out", tmp_path / "run",
                            *train_flags(workers=1)), 1, victim.name)
    assert "DataLoader worker" not in line and "Original Traceback" not in line


# ------------------------------------------------------------------ model: runs and resume


def test_resume_without_a_checkpoint(built, tmp_path):
    assert_clean(run(model_cli, "train", "--shards", built / "shards/sixray10", "--out", tmp_path / "run",
                     *TRAIN, "--resume"), 2, "last.pt: nothing to resume", "drop --resume")


def test_a_new_run_never_overwrites_a_finished_one(trained, built):
    before = tree_bytes(trained)
    assert_clean(run(model_cli, "train", "--shards", built / "shards/sixray10", "--out", trained, *TRAIN), 2,
                 "already holds a run", "--resume")
    assert tree_bytes(trained) == before


def test_resume_with_another_config_or_another_subset(trained, built, tmp_path):
    run_dir = Path(shutil.copytree(trained, tmp_path / "run"))
    before = tree_bytes(run_dir)
    other = ["train", "--out", run_dir, *TRAIN, "--resume"]
    assert_clean(run(model_cli, *other, "--shards", built / "shards/sixray10", "--variant", "baseline"), 2,
                 "variant: 'chr' -> 'baseline'")
    assert_clean(run(model_cli, *other, "--shards", copy_shards(built, tmp_path)), 2,
                 "another model or data", "shards:")
    assert tree_bytes(run_dir) == before


def test_disk_full_during_a_checkpoint_write_keeps_the_last_good_one(built, tmp_path, monkeypatch):
    import model.checkpoint

    real, calls = model.checkpoint.write_bytes, []

    def full_after_epoch_one(path, data):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 wrote best.pt and last.pt
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(model.checkpoint, "write_bytes", full_after_epoch_one)
    out = tmp_path / "run"
    result = run(model_cli, "train", "--shards", built / "shards/sixray10", "--out", out, *train_flags(2))
    assert_clean(result, 1, "disk full writing", "free space and rerun")
    assert load_checkpoint(out / "last.pt")["epoch"] == 1
    assert not list(out.glob(".*tmp*")), "no partial checkpoint left"


def test_ctrl_c_during_training_then_resume(built, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--shards", built / "shards/sixray10", "--out", out, *train_flags(30)]
    done = interrupt(cli("model", *args), lambda: (out / "last.pt").exists())
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "error: interrupted" in done.stderr, done.stderr
    epochs = load_checkpoint(out / "last.pt")["epoch"]
    assert 1 <= epochs < 30
    args[args.index("30")] = str(epochs + 1)
    # Nothing of the interrupted epoch leaks: the same weights and history as a run never interrupted.
    # Every run in a fresh process alike, so all of them use the same number of threads (a test before
    # this one may have changed this process's, and with it the order of float sums).
    straight = tmp_path / "straight"
    for command in ([*args, "--resume"], [straight if a == out else a for a in args]):
        finished = subprocess.run(cli("model", *command), capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(Path.cwd())})
        assert finished.returncode == 0, finished.stderr
    a, b = load_checkpoint(out / "last.pt"), load_checkpoint(straight / "last.pt")
    assert a["epoch"] == b["epoch"] == epochs + 1
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    unclocked = [[{**h, "images_per_s": 0} for h in ckpt["history"]] for ckpt in (a, b)]
    assert unclocked[0] == unclocked[1]


# ------------------------------------------------------------------ model: checkpoints


def test_eval_of_a_truncated_checkpoint(trained, built, tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes((trained / "best.pt").read_bytes()[:5000])
    assert_clean(run(model_cli, "eval", "--checkpoint", bad, "--shards", built / "shards/sixray10"), 1,
                 "best.pt: not a readable checkpoint (truncated")


def test_eval_of_a_text_file(built, tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert_clean(run(model_cli, "eval", "--checkpoint", tmp_path / "notes.pt", "--shards",
                     built / "shards/sixray10"), 1, "notes.pt: not a readable checkpoint")


def test_eval_of_imagenet_weights_instead_of_a_run(built, tmp_path):
    from model.backbones import build_backbone

    torch.save(build_backbone("tiny").state_dict(), tmp_path / "tiny.pth")
    assert_clean(run(model_cli, "eval", "--checkpoint", tmp_path / "tiny.pth", "--shards",
                     built / "shards/sixray10"), 1, "not a checkpoint of `model train`", "--weights")


class RunsCodeOnLoad:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran on load"))


def test_a_checkpoint_crafted_to_run_code_is_refused_and_does_not_run(trained, built, tmp_path):
    marker = tmp_path / "pwned"
    state = torch.load(trained / "best.pt", weights_only=True)
    torch.save({**state, "history": RunsCodeOnLoad(marker)}, tmp_path / "evil.pt")
    assert_clean(run(model_cli, "eval", "--checkpoint", tmp_path / "evil.pt", "--shards",
                     built / "shards/sixray10", "--out", tmp_path / "eval"), 1,
                 "refused", "can run code", "--trust-checkpoint")
    assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "eval").exists()


def test_a_foreign_checkpoint_loads_only_when_trusted(trained, built, tmp_path):
    state = torch.load(trained / "best.pt", weights_only=True)
    torch.save({**state, "args": Namespace(lr=0.1)}, tmp_path / "foreign.pt")
    args = ["eval", "--checkpoint", tmp_path / "foreign.pt", "--shards", built / "shards/sixray10", "--out",
            tmp_path / "eval", "--test-size", "40", "--workers", "0", "--overlays", "0"]
    assert_clean(run(model_cli, *args), 1, "refused")
    assert run(model_cli, *args, "--trust-checkpoint").exit_code == 0


def test_older_checkpoints_with_a_numpy_rng_state_still_load_safely(trained, tmp_path):
    import numpy as np

    state = torch.load(trained / "last.pt", weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()  # how checkpoints were written before
    torch.save(state, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["epoch"] == 1
    with pytest.raises(pickle.UnpicklingError):  # plain safe loading would refuse it
        torch.load(tmp_path / "old.pt", weights_only=True)


def test_older_checkpoints_pickled_under_numpy_1_load_safely(trained, tmp_path):
    import io
    import zipfile

    import numpy as np

    state = torch.load(trained / "last.pt", weights_only=True)
    state["rng"]["numpy"] = np.random.get_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    # numpy 1.x named its array constructor numpy.core.multiarray._reconstruct in the pickle
    old = zipfile.ZipFile(buffer)
    with zipfile.ZipFile(tmp_path / "numpy1.pt", "w") as new:
        for name in old.namelist():
            data = old.read(name)
            if name.endswith("data.pkl"):
                assert b"cnumpy._core.multiarray\n" in data
                data = data.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
            new.writestr(name, data)
    loaded = load_checkpoint(tmp_path / "numpy1.pt")
    assert loaded["epoch"] == 1
    assert np.array_equal(loaded["rng"]["numpy"][1], state["rng"]["numpy"][1])


def test_weights_that_are_not_for_this_backbone(built, tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pth")
    assert_clean(run(model_cli, "train", "--shards", built / "shards/sixray10", "--out", tmp_path / "run",
                     *TRAIN, "--weights", tmp_path / "w.pth"), 1, "w.pth: not a state dict for this backbone")


def test_ablate_with_an_unknown_variant(built, tmp_path):
    result = run(model_cli, "ablate", "--shards", built / "shards/sixray10", "--variants", "chr,best")
    assert result.exit_code == 2 and "unknown ['best']" in result.stderr and "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path):
    result = run(pipeline_cli, "--debug", "ingest", "--raw", tmp_path)
    assert isinstance(result.exception, FileNotFoundError), "the exception propagates under --debug"
