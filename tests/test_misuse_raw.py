"""Misuse round 2, raw folders as they come: a symlink loop named .jpg, an XML in an unknown encoding and a
box with a non-finite coordinate each become a status row (or a dropped box), never a crash; no NaN reaches
a manifest or a COCO file, which a strict JSON parser reads back."""

import json
import math
import os
import shutil

import pyarrow.parquet as pq
import pytest
from test_misuse import assert_clean, run

from model.cli import main as model_cli
from pipeline.cli import main as pipeline_cli
from pipeline.schema import STATUSES

BAD_NAME = b"N\xff0000.jpg"
"""A file name that is not UTF-8 (Latin-1 'ÿ'), as a copy from an old Windows share may carry."""
BAD_ID = "N\\xff0000"
"""Its id as the manifest prints it."""


def strict_json(path):
    """json.loads that refuses NaN and Infinity (Python's own parser accepts them; JSON does not)."""
    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def odd_raw(built, tmp_path_factory):
    """A copy of the built raw folder with a symlink loop, an XML in an unknown encoding and a NaN box."""
    raw = shutil.copytree(built / "raw", tmp_path_factory.mktemp("odd") / "raw", symlinks=True)
    os.symlink("N9999999.jpg", raw / "JPEGImage" / "N9999999.jpg")  # points at itself: ELOOP
    negative = sorted((raw / "JPEGImage").glob("N*.jpg"))[0]
    shutil.copy(negative, raw / "JPEGImage" / os.fsdecode(BAD_NAME))
    shutil.copy(negative, raw / "JPEGImage" / "N00.00001.jpg")  # a dot in the id
    xmls = sorted((raw / "Annotation").glob("P*.xml"))
    text = xmls[0].read_text()
    xmls[0].write_text('<?xml version="1.0" encoding="x-no-such-encoding"?>\n' + text)
    start = xmls[1].read_text().index("<xmin>") + len("<xmin>")
    nan_box = xmls[1].read_text()
    xmls[1].write_text(nan_box[:start] + "nan" + nan_box[nan_box.index("</xmin>"):])
    return raw, xmls[0].stem, xmls[1].stem


def test_odd_raw_files_are_status_rows_and_the_rest_is_ingested(odd_raw, tmp_path):
    raw, encoding_id, nan_id = odd_raw
    result = run(pipeline_cli, "ingest", "--raw", raw, "--out", tmp_path / "manifests", "--workers", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output  # 1: unusable rows
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "manifests" / "manifest.parquet").to_pylist()}
    assert rows["N9999999"]["status"] == "unreadable" and "symbolic links" in rows["N9999999"]["error"]
    assert rows[encoding_id]["status"] == "bad_xml" and "encoding" in rows[encoding_id]["error"]
    assert rows[nan_id]["status"] == "bad_xml" and "non-finite" in rows[nan_id]["error"]
    assert rows[BAD_ID]["status"] == "bad_name" and "not valid UTF-8" in rows[BAD_ID]["error"]
    assert rows[BAD_ID]["path"] == f"JPEGImage/{BAD_ID}.jpg"
    assert rows["N00.00001"]["status"] == "bad_name" and "dot" in rows["N00.00001"]["error"]
    assert all(math.isfinite(v) for r in rows.values() for b in r["boxes"] or []
               for v in (b["xmin"], b["ymin"], b["xmax"], b["ymax"]))
    assert {r["status"] for r in rows.values()} <= set(STATUSES)  # the one vocabulary
    usable = [r for r in rows.values() if r["status"] in ("ok", "no_boxes")]
    assert len(usable) == len(rows) - 5


def test_coco_export_of_odd_raw_is_strict_json(odd_raw, tmp_path):
    raw, _, _ = odd_raw
    manifests = tmp_path / "manifests"
    run(pipeline_cli, "ingest", "--raw", raw, "--out", manifests, "--workers", "1")
    assert run(pipeline_cli, "build-shards", "--ratio", "10", "--manifests", manifests, "--out",
               tmp_path / "shards", "--workers", "1").exit_code == 0
    result = run(pipeline_cli, "export", "--format", "coco", "--subset", "sixray10", "--manifests", manifests,
                 "--out", tmp_path / "coco")
    assert result.exit_code == 0, result.output
    for split in ("train", "test"):
        doc = strict_json(tmp_path / "coco" / f"{split}.json")
        assert all(math.isfinite(v) for a in doc["annotations"] for v in a["bbox"])


def test_predict_gives_a_symlink_loop_its_row_and_scores_a_name_that_is_not_utf8(odd_raw, trained, tmp_path):
    raw, _, _ = odd_raw
    out = tmp_path / "predict"
    result = run(model_cli, "predict", "--checkpoint", trained / "best.pt", "--input", raw, "--out", out,
                 "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in pq.read_table(out / "predictions.parquet").to_pylist()}
    assert rows["N9999999"]["status"] == "unreadable" and rows["N9999999"]["score_gun"] is None
    assert {r["status"] for r in rows.values()} <= set(STATUSES)
    assert rows[BAD_ID]["status"] == "ok" and rows[BAD_ID]["score_gun"] is not None  # scored, id printable
    assert rows[BAD_ID]["file"].endswith(f"JPEGImage/{BAD_ID}.jpg")
    assert sum(r["status"] == "ok" for r in rows.values()) == len(rows) - 1  # predict scores a dotted id


def test_a_checkpoint_that_is_not_a_file_we_wrote(tmp_path):
    fake = tmp_path / "best.pt"
    fake.write_text("not a checkpoint")
    assert_clean(run(model_cli, "export", "--checkpoint", fake, "--onnx", tmp_path / "m.onnx"), 1, str(fake))
    assert not (tmp_path / "m.onnx").exists()
