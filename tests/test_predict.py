"""`model predict` and the alarm thresholds: the same scores as `model eval` on the same images from every
kind of input, unreadable files as status rows, thresholds checked by hand."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from model_helpers import bad_folder, fabricate_checkpoint
from shard_helpers import jpeg_bytes, synthetic_rows, write_dataset

from base.errors import MissingInputError
from base.vocabulary import CLASSES
from model.alarms import (
    alarm_report,
    alarm_stats,
    alarm_summary,
    alarms,
    checkpoint_thresholds,
    find_thresholds,
    fit_thresholds,
    read_thresholds,
    threshold_for_recall,
    thresholds_document,
    write_thresholds,
)
from model.cli import main as model_cli
from model.evaluate import evaluate_checkpoint
from model.predict import predict_command
from model.report import format_tables
from pipeline.shards import build_shards

pytestmark = pytest.mark.filterwarnings("ignore:.*skipping corrupt sample N0000002")
CORRUPT = "N0000002"  # in the test split (synthetic_rows puts negatives 1-5 there)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A raw folder, its manifests and shards, a fabricated checkpoint and `model eval`'s report of it."""
    root = tmp_path_factory.mktemp("predict")
    write_dataset(root, synthetic_rows(20, 40, test_every=2), corrupt=(CORRUPT,))
    build_shards(root / "manifests", root / "shards", 10, shard_size=12, workers=1)
    checkpoint = fabricate_checkpoint(root / "run" / "best.pt")
    summary = evaluate_checkpoint(checkpoint, root / "shards" / "sixray10", root / "run" / "eval",
                                  batch_size=8, workers=0, device="cpu", overlays=0)
    return root, checkpoint, summary


def table(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def scores(rows: list[dict], prefix: str = "score_") -> dict[str, np.ndarray]:
    return {r["id"]: np.array([r[f"{prefix}{c}"] for c in CLASSES], dtype=np.float64) for r in rows
            if r.get("status", "ok") == "ok"}


@pytest.mark.parametrize("kind", ["shards", "manifest", "folder"])
def test_predict_gives_evals_scores_for_the_same_images(demo, tmp_path, kind):
    root, checkpoint, _ = demo
    source, split = {"shards": (root / "shards" / "sixray10", "test"),
                     "manifest": (root / "manifests" / "sixray10.parquet", "test"),
                     "folder": (root / "raw", "all")}[kind]  # the raw root: read through its JPEGImage/
    predict_command(source, tmp_path, checkpoint=checkpoint, split=split, workers=2, batch_size=5,
                    device="cpu")
    evaluated = scores(table(root / "run" / "eval" / "predictions.parquet"), "score_fused_")
    rows = table(tmp_path / "predictions.parquet")
    predicted = scores(rows)
    assert set(evaluated) <= set(predicted) and len(evaluated) > 20
    assert max(np.abs(predicted[i] - s).max() for i, s in evaluated.items()) <= 1e-6
    bad = [r for r in rows if r["id"] == CORRUPT]  # eval skips it; predict reports it, in ingest's words
    assert [(r["status"], r["score_gun"]) for r in bad] == [("truncated", None)]  # as ingest says
    if kind != "folder":
        assert len(rows) == len(evaluated) + 1  # the test split exactly


def test_eval_fits_thresholds_on_val_and_predict_applies_them(demo, tmp_path):
    root, checkpoint, summary = demo
    saved = json.loads((root / "run" / "eval" / "thresholds.json").read_text())
    assert saved["checkpoint"] == {"file": "best.pt", "epoch": 1} and saved["held_out"] is True
    assert saved["target_recall"] == 0.9 and saved["val_count"] > 0
    assert summary["alarms"]["test"]["any"]["negatives"] > 0
    assert "Alarms - thresholds for 90% recall" in format_tables(summary)
    assert find_thresholds(checkpoint, 1) == root / "run" / "eval" / "thresholds.json"
    assert find_thresholds(checkpoint, 2) is None  # written for another epoch of best.pt
    result = predict_command(root / "raw", tmp_path, checkpoint=checkpoint, workers=0, device="cpu")
    assert result["thresholds_from"] == str(root / "run" / "eval" / "thresholds.json")
    limits = read_thresholds(root / "run" / "eval" / "thresholds.json")
    for row in table(tmp_path / "predictions.parquet"):
        for c in CLASSES:
            want = None if limits[c] is None or row["status"] != "ok" else row[f"score_{c}"] >= limits[c]
            assert row[f"alarm_{c}"] == want


def test_thresholds_and_alarm_figures_by_hand():
    # 10 val positives scoring 0.1 .. 1.0: the highest threshold keeping 9 of them is 0.2
    val_scores = np.arange(1, 11) / 10
    assert threshold_for_recall(val_scores, np.ones(10, bool), 0.9) == pytest.approx(0.2)
    assert threshold_for_recall(val_scores, np.ones(10, bool), 1.0) == pytest.approx(0.1)
    assert threshold_for_recall(val_scores, np.zeros(10, bool), 0.9) is None
    # val: gun positives as above plus negatives, one difficult gun at 0.99 left out; no knife at all
    n = 30
    labels, difficult, s = np.zeros((n, 5)), np.zeros((n, 5), bool), np.zeros((n, 5))
    labels[:10, 0], s[:10, 0] = 1, val_scores
    labels[10, 0], difficult[10, 0], s[10, 0] = 1, True, 0.01
    fitted = fit_thresholds({"scores": {"fused": s}, "labels": labels, "difficult": difficult}, 0.9)
    assert fitted["gun"] == {"threshold": pytest.approx(0.2), "positives": 10, "recall": 0.9}
    assert fitted["knife"]["threshold"] is None and "no positive" in fitted["knife"]["note"]
    assert (fitted["knife"]["positives"], fitted["knife"]["recall"]) == (0, None)
    # test: 20 guns (18 at 0.5, 2 at 0.1) and 2,000 bags without a gun, 7 of them at 0.3 (false alarms)
    t_labels, t_scores = np.zeros((2020, 5)), np.zeros((2020, 5))
    t_labels[:20, 0], t_scores[:20, 0], t_scores[18:20, 0] = 1, 0.5, 0.1
    t_scores[20:27, 0] = 0.3
    report = alarm_report({"scores": {"fused": t_scores}, "labels": t_labels, "difficult": t_labels < 0},
                          {"gun": 0.2, "knife": None})
    gun = report["gun"]
    assert (gun["recall"], gun["precision"], gun["false_alarms"]) == (0.9, 18 / 25, 7)
    assert gun["false_alarms_per_1000"] == pytest.approx(3.5)
    assert report["knife"]["alarms"] == 0 and report["knife"]["recall"] is None  # no knife, no threshold
    assert report["any"]["false_alarms_per_1000"] == pytest.approx(3.5)


def test_thresholds_file_formats(tmp_path):
    (tmp_path / "plain.json").write_text(json.dumps({"gun": 0.25, "knife": None}))
    assert read_thresholds(tmp_path / "plain.json") == {"gun": 0.25, "knife": None, "wrench": None,
                                                         "pliers": None, "scissors": None}
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a thresholds file"):
        read_thresholds(tmp_path / "bad.json")


def test_threshold_for_recall_low_target_and_labels_as_integers():
    val_scores = np.arange(1, 11) / 10
    assert threshold_for_recall(val_scores, np.ones(10, bool), 0.1) == 1.0  # one positive must alarm
    # 0/1 labels are a mask, not indices: positives 0.1, 0.3, 0.5, 0.7, 0.9; 3 of 5 must alarm.
    assert threshold_for_recall(val_scores, [1, 0] * 5, 0.6) == 0.5


def test_alarm_stats_by_hand():
    yes, no = True, False
    # 2 of 3 positives alarm and 1 of 3 negatives: recall 2/3, precision 2/3, 333.3 false alarms per 1,000
    assert alarm_stats(np.array([yes, yes, yes, no, no, no]), np.array([yes, yes, no, yes, no, no]),
                       np.array([no, no, yes, no, yes, yes])) == {
        "positives": 3, "negatives": 3, "alarms": 3, "false_alarms": 1, "recall": 2 / 3,
        "precision": 2 / 3, "false_alarms_per_1000": 1000 / 3}
    one_each = alarm_stats(np.array([yes, yes]), np.array([yes, no]), np.array([no, yes]))
    assert (one_each["alarms"], one_each["precision"]) == (2, 0.5)
    no_negative = alarm_stats(np.array([yes]), np.array([yes]), np.array([no]))
    assert (no_negative["precision"], no_negative["false_alarms_per_1000"]) == (1.0, None)


def test_a_scan_alarms_at_its_threshold_and_never_without_one():
    fired = alarms(np.array([[0.2, 1.0, 0.0, 0.0, 0.0], [0.19, 1.0, 0.0, 0.0, 0.0]]), {"gun": 0.2})
    assert fired[:, :2].tolist() == [[True, False], [False, False]]


def test_alarm_report_of_no_scans():
    empty = np.zeros((0, 5))
    report = alarm_report({"scores": {"fused": empty}, "labels": empty, "difficult": empty > 0}, {"gun": 0.5})
    assert report["any"] == {"positives": 0, "negatives": 0, "alarms": 0, "false_alarms": 0, "recall": None,
                             "precision": None, "false_alarms_per_1000": None}


def test_thresholds_json_round_trip_and_which_file_a_checkpoint_finds(tmp_path):
    run_dir, labels = tmp_path / "run", np.zeros((10, 5))
    labels[:5, 0] = 1
    val = {"scores": {"fused": np.tile(np.arange(10)[:, None] / 10, 5)}, "labels": labels,
           "difficult": labels < 0}
    fitted = fit_thresholds(val, 0.8)  # guns at 0.0 .. 0.4: 4 of 5 alarm from 0.1
    document = thresholds_document(fitted, 0.8, checkpoint=run_dir / "best.pt", epoch=3, val_count=10,
                                   val_fraction=0.1, held_out=True)
    assert document == {"target_recall": 0.8, "split": "val", "val_count": 10, "val_fraction": 0.1,
                        "held_out": True, "checkpoint": {"file": "best.pt", "epoch": 3}, "classes": fitted}
    run_dir.mkdir()
    in_run = write_thresholds(run_dir, document)
    assert in_run == run_dir / "thresholds.json"
    limits = read_thresholds(in_run)
    assert limits == {"gun": 0.1, "knife": None, "wrench": None, "pliers": None, "scissors": None}
    best = run_dir / "best.pt"
    assert find_thresholds(best, 3) == in_run and checkpoint_thresholds(best, 3) == (limits, str(in_run))
    assert find_thresholds(best, 2) is None and find_thresholds(run_dir / "last.pt", 3) is None
    assert checkpoint_thresholds(tmp_path / "other" / "best.pt", 3) == (None, None)
    (run_dir / "eval").mkdir()
    for unreadable in ("not json", "[1, 2]"):  # passed over for the run folder's file
        (run_dir / "eval" / "thresholds.json").write_text(unreadable)
        assert find_thresholds(best, 3) == in_run
    in_eval = write_thresholds(run_dir / "eval", document)
    assert find_thresholds(best, 3) == in_eval  # `model eval`'s folder first
    (tmp_path / "plain.json").write_text(json.dumps({"gun": 0.7}))
    assert checkpoint_thresholds(best, 3, tmp_path / "plain.json")[0]["gun"] == 0.7
    test = {"scores": {"fused": val["scores"]["fused"]}, "labels": labels, "difficult": labels < 0}
    assert alarm_summary(document, test) == {**document, "test": alarm_report(test, limits)}
    with pytest.raises(MissingInputError, match="no such thresholds file"):
        read_thresholds(tmp_path / "missing.json")


def test_unreadable_files_in_a_folder_are_status_rows(demo, tmp_path):
    _, checkpoint, _ = demo
    folder = bad_folder(tmp_path / "scans")
    result = CliRunner().invoke(model_cli, [
        "predict", "--checkpoint", str(checkpoint), "--input", str(folder), "--out", str(tmp_path / "out"),
        "--workers", "2", "--batch-size", "2", "--cams", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = table(tmp_path / "out" / "predictions.parquet")
    assert [(r["id"], r["status"]) for r in rows] == [
        ("a_big", "ok"), ("b_tiny", "ok"), ("c_other", "ok"), ("d_empty", "empty"),
        ("e_truncated", "truncated"), ("f_text", "not_jpeg"), ("g_dangling", "unreadable")]
    assert all((r["score_gun"] is None) == (r["status"] != "ok") for r in rows)
    assert all(r["error"].startswith(str(folder / r["id"])) for r in rows if r["status"] != "ok")
    assert "7 scans (1 empty, 1 not_jpeg, 3 ok, 1 truncated, 1 unreadable)" in result.output
    assert len(list((tmp_path / "out").glob("cam_0*.png"))) == 2


@pytest.mark.parametrize("args, message", [
    (["--input", "{empty}"], "no .jpg / .jpeg file"),
    (["--input", "{scans}", "--split", "test"], "has no splits"),
    (["--input", "{scans}", "--onnx", "{checkpoint}"], "exactly one of --checkpoint and --onnx"),
])
def test_input_mistakes_are_usage_errors(demo, tmp_path, args, message):
    _, checkpoint, _ = demo
    (tmp_path / "empty").mkdir()
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "x.jpg").write_bytes(jpeg_bytes(0))
    paths = {"empty": tmp_path / "empty", "scans": tmp_path / "scans", "checkpoint": checkpoint}
    args = [a.format(**paths) for a in args]
    result = CliRunner().invoke(model_cli, ["predict", "--checkpoint", str(checkpoint), "--out",
                                            str(tmp_path / "out"), *args])
    assert result.exit_code == 2 and message in result.output
