"""`pipeline stats` on hand-made manifests: every number checked against a hand count."""

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from pipeline.atomic import write_parquet
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
    assert rep["leakage"] == {"groups": 2, "images": 4,
                              "examples": [["N0000001", "N0000002"], ["P00001", "P00002"]]}


def test_cli_readable_and_json(manifests):
    runner = CliRunner()
    as_json = runner.invoke(main, ["stats", "--manifests", str(manifests), "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.output) == compute_stats(manifests)
    text = runner.invoke(main, ["stats", "--manifests", str(manifests)])
    assert text.exit_code == 0 and text.output.strip() == format_stats(compute_stats(manifests)).strip()
    assert "== sixray10 ==" in text.output and "2 identical-dHash groups (4 images)" in text.output


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest; run `pipeline ingest` first"):
        compute_stats(tmp_path)
