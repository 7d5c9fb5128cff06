"""Misuse round 2, flags: every bad value or relation is refused before any work (exit 2, one `error:` line
naming the flag, no traceback, nothing written), and click's own usage errors speak with the same voice."""

import pytest
from test_misuse import assert_clean, run

from model.cli import main as model_cli
from pipeline.cli import main as pipeline_cli

TRAIN_CASES = [
    (["--batch-size", "0"], "--batch-size 0"),
    (["--lr", "-1"], "--lr -1"),
    (["--crop", "100", "--resize", "72"], "--crop 100: must not exceed --resize 72"),
    (["--lr-steps", "abc"], "--lr-steps 'abc'"),
    (["--lr-steps", "0,5"], "--lr-steps 0,5"),
    (["--test-size", "-8"], "--test-size -8"),
    (["--resize", "0"], "--resize 0"),
    (["--epochs", "0"], "--epochs 0"),
    (["--val-fraction", "1.5"], "--val-fraction 1.5"),
    (["--val-fraction", "0"], "--val-fraction 0"),
    (["--epsilon", "-1"], "--epsilon -1"),
    (["--epsilon", "1"], "--epsilon 1"),
    (["--pointing-tolerance", "-5"], "--pointing-tolerance -5"),
    (["--momentum", "1"], "--momentum 1"),
    (["--weight-decay", "-0.1"], "--weight-decay -0.1"),
    (["--workers", "-1"], "--workers -1"),
    (["--refine-channels", "0"], "--refine-channels 0"),
    (["--negatives-per-positive", "-1"], "--negatives-per-positive"),
    (["--repeat-threshold", "2"], "--repeat-threshold"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--backbone", "resnet9"], "--backbone"),
]


@pytest.mark.parametrize(("flags", "fragment"), TRAIN_CASES, ids=[" ".join(f) for f, _ in TRAIN_CASES])
def test_a_bad_train_flag_stops_before_anything_is_written(tmp_path, flags, fragment):
    out = tmp_path / "run"
    result = run(model_cli, "train", "--shards", tmp_path, "--out", out, "--backbone", "tiny", *flags)
    assert_clean(result, 2, fragment)
    assert not out.exists()


def test_ablate_checks_its_own_flags_and_the_recipe_before_any_run(tmp_path):
    out = tmp_path / "ablation"
    cases = [(["--seeds", "0"], "--seeds"), (["--epsilons", "0.01,x"], "--epsilons '0.01,x'"),
             (["--epsilons", "0.5,1.5"], "--epsilons"), (["--batch-size", "0"], "--batch-size 0")]
    for flags, fragment in cases:
        result = run(model_cli, "ablate", "--shards", tmp_path, "--out", out, "--backbone", "tiny", *flags)
        assert_clean(result, 2, fragment)
        assert not out.exists()


@pytest.mark.parametrize(("command", "flags", "fragment"), [
    ("eval", ["--batch-size", "0"], "--batch-size"),
    ("eval", ["--workers", "-2"], "--workers"),
    ("eval", ["--test-size", "0"], "--test-size"),
    ("eval", ["--overlays", "-1"], "--overlays"),
    ("eval", ["--pointing-tolerance", "-5"], "--pointing-tolerance"),
    ("predict", ["--cams", "-1"], "--cams"),
    ("predict", ["--batch-size", "0"], "--batch-size"),
])
def test_eval_and_predict_refuse_bad_values_before_reading_the_checkpoint(tmp_path, command, flags, fragment):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"never read")
    place = ["--shards", tmp_path] if command == "eval" else ["--input", tmp_path]
    out = tmp_path / "out"
    result = run(model_cli, command, "--checkpoint", checkpoint, *place, "--out", out, *flags)
    line = assert_clean(result, 2, fragment, "(see --help)")
    assert "Usage:" not in result.output and "Error:" not in result.output, line
    assert not out.exists() and checkpoint.read_bytes() == b"never read"


def test_clicks_usage_errors_are_one_error_line_too():
    assert_clean(run(model_cli, "bogus"), 2, "No such command 'bogus'")
    assert_clean(run(pipeline_cli, "stats", "--bogus"), 2, "No such option '--bogus'")
    assert_clean(run(model_cli, "eval"), 2, "Missing option '--checkpoint'")


def test_debug_goes_before_or_after_the_subcommand(tmp_path):
    for args in (["--debug", "train"], ["train", "--debug"]):
        result = run(model_cli, *args, "--shards", tmp_path, "--out", tmp_path / "run", "--batch-size", "0")
        # raised (not turned into one line), so that the traceback shows
        assert result.exit_code != 0 and "--batch-size 0" in str(result.exception)


def test_the_interrupt_hint_names_resume():
    from base.errors import describe

    code, message = describe(KeyboardInterrupt())
    assert code == 130 and "--resume" in message


def test_os_errors_name_their_path_as_text_and_a_missing_file_as_missing():
    import errno

    from base.errors import describe

    code, message = describe(PermissionError(errno.EACCES, "Permission denied", b"/data/JPEGImage"))
    assert (code, message) == (2, "permission denied: /data/JPEGImage")
    code, message = describe(FileNotFoundError(errno.ENOENT, "No such file", "/data/x.tar"))
    assert (code, message) == (2, "/data/x.tar: missing (no such file or folder)")


def test_foreign_libraries_errors_map_to_our_exit_codes():
    import duckdb
    import pyarrow as pa

    from base.errors import describe

    denied = duckdb.IOException('IO Error: Cannot open file "/m/x.parquet": Permission denied\nmore')
    assert describe(denied) == (2, 'permission denied (IO Error: Cannot open file "/m/x.parquet": '
                                   'Permission denied)')
    code, message = describe(duckdb.InvalidInputException("Invalid Input Error: not a parquet file\nmore"))
    assert (code, message) == (1, "a file is not what it should be (Invalid Input Error: not a parquet file)")
    assert describe(pa.ArrowInvalid("Parquet magic bytes not found"))[0] == 1
    assert describe(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))[0] == 1
    assert describe(RuntimeError("x"))[0] == 3
