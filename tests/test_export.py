"""pipeline export: COCO and YOLO files from a subset built through synth -> ingest -> build-shards."""

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from base.atomic import OWNER_MARK, WRITER_LOCK
from base.vocabulary import ALL_CLASSES
from pipeline.cli import main
from pipeline.export import export_subset
from pipeline.ingest import ingest
from pipeline.shards import build_shards
from pipeline.xray.synth import synthesize


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    synthesize(root / "raw", positives=24, negatives=120, size_factor=0.15, seed=3, workers=1)
    ingest(root / "raw", root / "manifests", workers=1)
    build_shards(root / "manifests", root / "shards", 10, workers=1)
    return root / "manifests"


@pytest.fixture(scope="module")
def edited(manifests, tmp_path_factory) -> tuple[Path, str, str]:
    """A copy of the subset manifest where one positive of each split is edited by hand: in train, a
    40x32 image with a known box, one past the right and bottom edges, one flat and one outside the
    image; in test, a positive whose boxes are gone (status no_boxes)."""
    folder = tmp_path_factory.mktemp("edited")
    table = pq.read_table(manifests / "sixray10.parquet")
    rows = table.to_pylist()
    train_id = next(r["id"] for r in rows if r["split"] == "train" and r["boxes"])
    test_id = next(r["id"] for r in rows if r["split"] == "test" and r["boxes"])
    for r in rows:
        if r["id"] == train_id:
            r["width"], r["height"] = 40, 32
            r["boxes"] = [
                {"cls": "gun", "xmin": 1.0, "ymin": 2.0, "xmax": 11.5, "ymax": 12.25},
                {"cls": "knife", "xmin": 30.0, "ymin": 20.0, "xmax": 40.75, "ymax": 32.5},  # past the edge
                {"cls": "pliers", "xmin": 5.0, "ymin": 5.0, "xmax": 5.0, "ymax": 9.0},  # zero width
                {"cls": "wrench", "xmin": 41.0, "ymin": 0.0, "xmax": 45.0, "ymax": 10.0},  # outside
            ]
        if r["id"] == test_id:
            r["boxes"], r["status"] = None, "no_boxes"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), folder / "sixray10.parquet")
    return folder, train_id, test_id


def subset_rows(folder: Path) -> list[dict]:
    return pq.read_table(folder / "sixray10.parquet").to_pylist()


def files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_coco_matches_the_subset_manifest(manifests, tmp_path):
    from pycocotools.coco import COCO

    summary = export_subset(manifests, tmp_path, "coco", "sixray10", batch_rows=50)
    rows = subset_rows(manifests)
    assert len(rows) > 100 and sum(bool(r["boxes"]) for r in rows) >= 20
    for split in ("train", "test"):
        expected = [r for r in rows if r["split"] == split]
        coco = COCO(str(tmp_path / f"{split}.json"))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(ALL_CLASSES)
        images = coco.loadImgs(coco.getImgIds())
        assert [(i["file_name"], i["width"], i["height"]) for i in images] == \
            [(r["path"], r["width"], r["height"]) for r in expected]
        anns = coco.loadAnns(coco.getAnnIds())
        per_class = Counter(coco.cats[a["category_id"]]["name"] for a in anns)
        want = Counter(b["cls"] for r in expected for b in r["boxes"] or ())
        assert per_class == want and summary[split]["boxes"] == {c: want[c] for c in ALL_CLASSES}
        assert len(anns) == sum(want.values())
        negatives = sum(not r["boxes"] for r in expected)
        assert sum(not coco.getAnnIds(imgIds=i["id"]) for i in images) == negatives > 0
        assert summary[split]["images"] == len(expected) and summary[split]["negatives"] == negatives
        assert all(a["iscrowd"] == 0 and a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3], abs=1e-3)
                   for a in anns)
        # One box by hand: the first positive's first box, [x, y, w, h].
        first = next(r for r in expected if r["boxes"])
        image_id = next(i["id"] for i in images if i["file_name"] == first["path"])
        ann = coco.loadAnns(coco.getAnnIds(imgIds=image_id))[0]
        b = first["boxes"][0]
        want_bbox = [b["xmin"], b["ymin"], b["xmax"] - b["xmin"], b["ymax"] - b["ymin"]]
        assert ann["bbox"] == pytest.approx(want_bbox, abs=1e-3)


def test_yolo_counts_and_a_box_by_hand(edited, tmp_path):
    folder, train_id, test_id = edited
    raw = folder.parent / "raw"  # any folder: export reads no image
    raw.mkdir(exist_ok=True)
    summary = export_subset(folder, tmp_path, "yolo", "sixray10", raw=raw)
    rows = [r for r in subset_rows(folder) if r["status"] != "no_boxes"]
    for split in ("train", "test"):
        expected = [r for r in rows if r["split"] == split]
        listed = (tmp_path / f"{split}.txt").read_text().splitlines()
        assert listed == [str(raw.resolve() / r["path"]) for r in expected]
        labels = sorted((tmp_path / "labels" / split).iterdir())
        assert [p.stem for p in labels] == sorted(r["id"] for r in expected)
        assert sum(p.stat().st_size == 0 for p in labels) == sum(not r["boxes"] for r in expected)
        lines = [line.split() for p in labels for line in p.read_text().splitlines()]
        assert sum(summary[split]["boxes"].values()) == len(lines)
        assert all(0 < float(v) <= 1 for line in lines for v in line[1:])
    assert not (tmp_path / "labels" / "test" / f"{test_id}.txt").exists()
    assert summary["test"]["skipped_unboxed"] == 1
    # 40x32: gun (1, 2)-(11.5, 12.25); knife (30, 20)-(40.75, 32.5) clipped to (30, 20)-(40, 32).
    known = (tmp_path / "labels" / "train" / f"{train_id}.txt").read_text().splitlines()
    assert [line.split()[0] for line in known] == ["0", "1"]
    assert [float(v) for v in known[0].split()[1:]] == pytest.approx(
        [6.25 / 40, 7.125 / 32, 10.5 / 40, 10.25 / 32], abs=1e-6)
    assert [float(v) for v in known[1].split()[1:]] == pytest.approx(
        [35 / 40, 26 / 32, 10 / 40, 12 / 32], abs=1e-6)
    assert (summary["train"]["clipped"], summary["train"]["dropped"]) == (1, 2)
    data = (tmp_path / "data.yaml").read_text()
    assert "train: train.txt\ntest: test.txt\nnc: 6\nnames:\n  0: gun\n" in data and "  5: hammer\n" in data


def test_coco_clips_and_drops_past_the_edge(edited, tmp_path):
    from pycocotools.coco import COCO

    folder, train_id, _ = edited
    summary = export_subset(folder, tmp_path, "coco", "sixray10")
    coco = COCO(str(tmp_path / "train.json"))
    image = next(i for i in coco.dataset["images"] if Path(i["file_name"]).stem == train_id)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
    assert [(coco.cats[a["category_id"]]["name"], a["bbox"], a["area"]) for a in anns] == [
        ("gun", [1.0, 2.0, 10.5, 10.25], 107.625),
        ("knife", [30.0, 20.0, 10.0, 12.0], 120.0),
    ]
    assert (summary["train"]["clipped"], summary["train"]["dropped"]) == (1, 2)
    assert summary["test"]["skipped_unboxed"] == 1


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_rerun_gives_the_same_bytes(manifests, tmp_path, fmt):
    export_subset(manifests, tmp_path, fmt, "sixray10")
    first = files(tmp_path)
    (tmp_path / "labels" / "train" / "stale.txt").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "labels" / "train" / "stale.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    export_subset(manifests, tmp_path, fmt, "sixray10", batch_rows=7)
    again = files(tmp_path)
    if fmt == "coco":
        again.pop("labels/train/stale.txt")  # not ours: COCO leaves other files alone
    assert again == first
    ours = {OWNER_MARK, WRITER_LOCK}  # the folder's mark and writer lock stay
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name not in ours], "temporaries"


def test_missing_subset_manifest_names_the_file(manifests, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sixray100\.parquet.*build-shards --ratio 100"):
        export_subset(manifests, tmp_path / "out", "coco", "sixray100")
    result = CliRunner().invoke(main, ["export", "--format", "yolo", "--subset", "sixray1000",
                                       "--manifests", str(manifests), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert f"{manifests / 'sixray1000.parquet'}: no subset manifest" in result.output
    assert "pipeline build-shards --ratio 1000" in result.output


def test_cli_prints_counts_per_split(manifests, tmp_path):
    result = CliRunner().invoke(main, ["export", "--format", "coco", "--subset", "sixray10",
                                       "--manifests", str(manifests), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "train.json").read_text())
    assert f"train: {len(train['images'])} images" in result.output
    assert "0 clipped, 0 dropped" in result.output and "  test: " in result.output
