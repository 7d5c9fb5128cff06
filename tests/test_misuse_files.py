"""Misuse round 2, files: a manifest, subset or shard summary that is not what it should be (truncated,
foreign, not JSON) is exit 1 with one `error:` line naming the file, before anything is written."""

import functools
import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from test_misuse import assert_clean, run, tree_bytes

from base.vocabulary import CLASSES
from model.cli import main as model_cli
from pipeline.cli import main as pipeline_cli


def copy_manifests(built, tmp_path):
    return shutil.copytree(built / "manifests", tmp_path / "manifests")


def truncate(path):
    path.write_bytes(path.read_bytes()[:300])


def foreign(path):
    pq.write_table(pa.table({"x": [1, 2]}), path)


@pytest.mark.parametrize("damage", [truncate, foreign], ids=["truncated", "foreign"])
def test_a_bad_subset_manifest_is_named_by_stats_export_threats_and_predict(built, trained, tmp_path, damage):
    manifests = copy_manifests(built, tmp_path)
    subset = manifests / "sixray10.parquet"
    damage(subset)
    before = tree_bytes(manifests)
    out = tmp_path / "out"
    cases = [
        (pipeline_cli, "stats", "--manifests", manifests),
        (pipeline_cli, "export", "--format", "coco", "--subset", "sixray10", "--manifests", manifests,
         "--out", out),
        (pipeline_cli, "threats", "--raw", built / "raw", "--out", out, "--manifests", manifests,
         "--subset", subset),
        (model_cli, "predict", "--checkpoint", trained / "best.pt", "--input", subset, "--out", out,
         "--device", "cpu", "--workers", "0"),
    ]
    for cli, *args in cases:
        assert_clean(run(cli, *args), 1, str(subset))
        assert not out.exists(), args[0]
    assert tree_bytes(manifests) == before


@pytest.mark.parametrize("columns", [{"x": [1, 2]}, {"id": ["a", "b"], "score": [0.5, 0.7]}])
def test_a_foreign_parquet_as_the_manifest_is_not_called_an_old_version(built, tmp_path, columns):
    manifests = copy_manifests(built, tmp_path)
    pq.write_table(pa.table(columns), manifests / "manifest.parquet")
    line = assert_clean(run(pipeline_cli, "stats", "--manifests", manifests), 1, "manifest.parquet",
                        "not a manifest of this tool")
    assert "older version" not in line


@pytest.mark.parametrize("text", ["not json {", "{}", "[1, 2]", '{"train": {}, "test": {}}'])
def test_a_damaged_shard_summary_is_named_by_train_and_eval(built, tmp_path, text):
    shards = shutil.copytree(built / "shards/sixray10", tmp_path / "sixray10")
    (shards / "_info.json").write_text(text)
    out = tmp_path / "run"
    result = run(model_cli, "train", "--shards", shards, "--out", out, "--backbone", "tiny", "--epochs", "1",
                 "--resize", "48", "--crop", "40", "--test-size", "40", "--workers", "0", "--device", "cpu")
    assert_clean(result, 1, str(shards / "_info.json"), "build-shards")
    assert not out.exists()


def test_a_json_file_given_as_a_subset_manifest(built, tmp_path):
    manifests = copy_manifests(built, tmp_path)
    bogus = tmp_path / "sixray1000.json"
    bogus.write_text(json.dumps({"not": "parquet"}))
    result = run(pipeline_cli, "threats", "--raw", built / "raw", "--out", tmp_path / "threats",
                 "--manifests", manifests, "--subset", bogus)
    assert_clean(result, 1, str(bogus), "not a readable Parquet")
    assert not (tmp_path / "threats").exists()


def test_eval_of_a_subset_with_an_empty_test_split_says_so(built, trained, tmp_path):
    shards = shutil.copytree(built / "shards/sixray10", tmp_path / "sixray10")
    info = json.loads((shards / "_info.json").read_text())
    info["test"] = {"shards": [], "counts": [], "count": 0}
    (shards / "_info.json").write_text(json.dumps(info))
    out = tmp_path / "eval"
    result = run(model_cli, "eval", "--checkpoint", trained / "best.pt", "--shards", shards, "--out", out,
                 "--workers", "0", "--device", "cpu")
    assert_clean(result, 2, str(shards), "nothing to evaluate")
    assert not out.exists()


def test_build_shards_of_a_manifest_without_a_usable_positive_says_so(built, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    table = pq.read_table(built / "manifests" / "manifest.parquet")
    positive = functools.reduce(pc.or_, [pc.fill_null(pc.equal(table[c], 1), False) for c in CLASSES])
    status = pc.if_else(positive, "corrupt", table["status"])
    pq.write_table(table.set_column(table.schema.get_field_index("status"), "status", status),
                   manifests / "manifest.parquet")
    before = tree_bytes(manifests)
    result = run(pipeline_cli, "build-shards", "--ratio", "10", "--manifests", manifests, "--out",
                 tmp_path / "shards", "--workers", "1")
    assert_clean(result, 1, str(manifests / "manifest.parquet"), "no usable positive")
    assert not (tmp_path / "shards").exists()
    assert {k: v for k, v in tree_bytes(manifests).items() if not k.startswith(".sixray-tools")} == before
