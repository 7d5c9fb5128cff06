"""`pipeline stats` on hand-made manifests: every number checked against a hand count."""

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from base.atomic import write_parquet
from pipeline.cli import main
from pipeline.schema import MANIFEST_SCHEMA, SUBSET_SCHEMA
from pipeline.stats import compute_stats, format_stats

NEG = (0, 0, 0, 0, 0)


def manifest_row(image_id, labels=NEG, split="train", status="ok", phash=None, width=100,
                 official=("10/train",)):
    gun, knife, wrench, pliers, scissors = labels
    readable = status not in ("no_image", "empty", "not_jpeg")
    return {"id": image_id, "path": f"JPEGImage/{image_id}.jpg", "bytes": width * 10, "checksum": "0" * 32,
            "width": width if readable else None, "height": width // 2 if readable else None, "mode": "RGB",
            "phash": phash, "gun": gun, "knife": knife, "wrench": wrench, "pliers": pliers,
            "scissors": scissors, "hammer": 0, "difficult": [], "boxes": [], "official": list(official),
            "split": split if status in ("ok", "no_boxes") else None, "status": status, "error": None}


ROWS = [
    manifest_row("P00001", (1, 0, 0, 0, 0), "train", phash=7, width=100),
    manifest_row("P00002", (1, 1, 0, 0, 0), "test", phash=7, width=200),  # leaks with P00001
    manifest_row("P00003", (0, 0, 0, 1, 0), "train", "no_boxes", width=300),
    manifest_row("P00004", (0, 0, 0, 0, 1), status="corrupt", width=400),  # unusable: not in Table 1
    manifest_row("P00005", (0, 1, 0, 0, 0), status="no_image", official=("10/test",)),
    manifest_row("N0000001", NEG, "test", phash=9, width=500, official=("10/test", "100/test")),
    manifest_row("N0000002", NEG, "train", phash=9, width=600),  # leaks with N0000001
    manifest_row("N0000003", NEG, "train", phash=11, width=700),
    manifest_row("N0000004", NEG, "train", phash=11, width=800),  # same phash, same split: no leak
]


@pytest.fixture
def manifests(tmp_path):
    write_parquet(tmp_path / "manifest.parquet", pa.Table.from_pylist(ROWS, schema=MANIFEST_SCHEMA))
    subset = [{**r, "shard": f"{r['split']}-000000", "order": k}
              for k, r in enumerate(ROWS) if r["id"] in ("P00001", "P00003", "N0000001")]
    write_parquet(tmp_path / "sixray10.parquet", pa.Table.from_pylist(subset, schema=SUBSET_SCHEMA))
    return tmp_path


def test_table1_and_counts_by_hand(manifests):
    report = compute_stats(manifests)
    assert list(report) == ["manifest", "sixray10"]
    t1 = report["manifest"]["table1"]
    assert t1["all"] == {"gun": 2, "knife": 1, "wrench": 0, "pliers": 1, "scissors": 0,
                         "positive": 3, "negative": 4, "total": 7}
    assert t1["test"] == {"gun": 1, "knife": 1, "wrench": 0, "pliers": 0, "scissors": 0,
                          "positive": 1, "negative": 1, "total": 2}
    assert t1["train"]["total"] == 5 and t1["train"]["negative"] == 3
    assert report["sixray10"]["table1"]["all"]["total"] == 3
    assert report["sixray10"]["table1"]["train"]["positive"] == 2
    assert report["manifest"]["status"] == {"corrupt": 1, "no_boxes": 1, "no_image": 1, "ok": 6}
    assert report["manifest"]["official"] == {"100/test": {"rows": 1, "usable": 1},
                                              "10/test": {"rows": 2, "usable": 1},
                                              "10/train": {"rows": 7, "usable": 6}}


def test_sizes_and_leakage_by_hand(manifests):
    rep = compute_stats(manifests)["manifest"]
    sizes = rep["sizes"]
    assert sizes["images"] == 8  # the no_image row has no header
    assert sizes["width"][0] == 100 and sizes["width"][-1] == 800 and sizes["width"][2] in (400, 500)
    assert sizes["height"][-1] == 400
    assert rep["leakage"] == {"groups": 2, "images": 4, "largest": 2, "train_test_pairs": 2,
                              "examples": [{"size": 2, "ids": ["N0000001", "N0000002"]},
                                           {"size": 2, "ids": ["P00001", "P00002"]}]}


def test_cli_readable_and_json(manifests):
    runner = CliRunner()
    as_json = runner.invoke(main, ["stats", "--manifests", str(manifests), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output) == compute_stats(manifests, full_leakage=True)
    text = runner.invoke(main, ["stats", "--manifests", str(manifests)])
    assert text.exit_code == 0 and text.output.strip() == format_stats(compute_stats(manifests)).strip()
    assert "== sixray10 ==" in text.output and "2 identical-dHash groups (4 images, largest 2)" in text.output


def leak_group(phash, first, train, test, status="ok"):
    """`train` then `test` negatives sharing one dHash, ids N<first>, N<first + 1>, ..."""
    splits = ["train"] * train + ["test"] * test
    return [manifest_row(f"N{first + k:07d}", split=split, phash=phash, status=status)
            for k, split in enumerate(splits)]


LEAK_ROWS = [
    *leak_group(1, 10, train=3, test=3),  # 6 images, 3 x 3 = 9 pairs
    *leak_group(2, 20, train=4, test=1),  # 5 images, 4 pairs
    *leak_group(3, 30, train=2, test=2),  # 4 images, 4 pairs
    *leak_group(4, 40, train=1, test=1, status="no_boxes"),  # 2 images, 1 pair (no_boxes is usable)
    *leak_group(5, 50, train=2, test=0),  # one split only: no leak
    *leak_group(6, 60, train=1, test=0),
    manifest_row("N0000061", split="test", phash=6, status="corrupt"),  # unusable: no leak
]


@pytest.fixture
def leaky_manifests(tmp_path):
    write_parquet(tmp_path / "manifest.parquet", pa.Table.from_pylist(LEAK_ROWS, schema=MANIFEST_SCHEMA))
    return tmp_path


def test_leakage_summary_by_hand(leaky_manifests):
    leak = compute_stats(leaky_manifests)["manifest"]["leakage"]
    assert (leak["groups"], leak["images"], leak["largest"], leak["train_test_pairs"]) == (4, 17, 6, 18)
    assert "all_groups" not in leak  # the text path never pulls every group out of duckdb
    assert leak["examples"] == [  # largest first, at most 3 groups of at most 4 ids
        {"size": 6, "ids": ["N0000010", "N0000011", "N0000012", "N0000013"]},
        {"size": 5, "ids": ["N0000020", "N0000021", "N0000022", "N0000023"]},
        {"size": 4, "ids": ["N0000030", "N0000031", "N0000032", "N0000033"]}]


def test_leakage_text_is_short_and_json_has_every_id(leaky_manifests):
    runner = CliRunner()
    text = runner.invoke(main, ["stats", "--manifests", str(leaky_manifests)]).output
    assert "4 identical-dHash groups (17 images, largest 6) span train and test, 18 train/test pairs" in text
    assert "  6 images: N0000010, N0000011, N0000012, N0000013 ... and 2 more" in text
    assert "  5 images: N0000020, N0000021, N0000022, N0000023 ... and 1 more" in text
    assert "  4 images: N0000030, N0000031, N0000032, N0000033\n" in text
    assert "N0000014" not in text and "N0000040" not in text
    assert "  ... and 1 more groups (--json lists every id)" in text
    report = json.loads(runner.invoke(main, ["stats", "--manifests", str(leaky_manifests), "--json"]).output)
    groups = ((10, 6), (20, 5), (30, 4), (40, 2))  # (first id, size), ordered by first id
    assert report["manifest"]["leakage"]["all_groups"] == [
        [f"N{i:07d}" for i in range(first, first + size)] for first, size in groups]


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest; run `pipeline ingest` first"):
        compute_stats(tmp_path)
