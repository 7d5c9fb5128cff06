"""Threat image projection: compositing physics, the threat library, TIP scans (ids, splits, boxes),
determinism and resume, and subsets with and without TIP scans."""

import filecmp
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from base.errors import UsageError
from base.vocabulary import CLASSES
from pipeline.cli import main
from pipeline.ingest import ingest
from pipeline.layout import JPEG_QUALITY, read_annotation, tip_id
from pipeline.library import read_library
from pipeline.shards import build_shards
from pipeline.stats import compute_stats, format_stats
from pipeline.threats import build_threats, extract_layer
from pipeline.tip import absorbing_box, make_tip, project
from pipeline.xray import physics
from pipeline.xray.alone import synth_collection
from pipeline.xray.synth import synthesize


def threat_layer(h=40, w=60) -> np.ndarray:
    """An 8-bit layer: a metal-like bar with a hole, on transparent (255) surroundings."""
    layer = np.full((h, w, 3), 255, np.uint8)
    layer[10:30, 5:55] = (60, 110, 150)
    layer[15:25, 40:50] = 255
    layer[28:36, 20:26] = (120, 160, 90)
    return layer


def smooth_bag(h=120, w=160, seed=0) -> np.ndarray:
    """A threat-free 'bag': a smooth colour gradient of transmissions 0.45..0.95."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    base = [0.95 - 0.3 * xs - 0.2 * ys * rng.uniform(0.5, 1) for _ in range(3)]
    return physics.to_pixels(np.stack(base, axis=-1))


# ---------------------------------------------------------------- compositing


def test_composite_over_white_returns_the_layer():
    layer = threat_layer()
    white = np.full_like(layer, 255)
    np.testing.assert_array_equal(physics.composite(white, layer), layer)
    float_layer = physics.to_transmission(layer)
    np.testing.assert_allclose(physics.composite(np.ones_like(float_layer), float_layer), float_layer)


def test_composite_multiplies_transmissions_and_adds_in_the_log_domain():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.05, 1, (2, 30, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(physics.composite(a, b), a * b, rtol=1e-6)
    log_sum = -np.log(a) - np.log(b)  # stacked objects: their attenuations (-ln T) add
    np.testing.assert_allclose(-np.log(physics.composite(a, b)), log_sum, rtol=1e-5)
    ua, ub = (rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(2))
    exact = ua.astype(np.float64) * ub / 255
    assert np.abs(physics.composite(ua, ub).astype(np.float64) - exact).max() <= 0.5 + 1e-9  # rounded


def test_composite_over_a_bag_never_brightens_a_pixel():
    rng = np.random.default_rng(2)
    for _ in range(20):
        bag = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
        layer = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
        assert (physics.composite(bag, layer) <= bag).all()
        scan = smooth_bag(seed=int(rng.integers(100)))
        out, boxes, _ = project(rng, scan, [("gun", threat_layer()), ("knife", threat_layer(30, 30))])
        assert (out <= scan).all() and boxes


def test_boxes_land_where_the_threat_is():
    for seed in range(30):
        rng = np.random.default_rng(seed)
        scan = np.full((240, 320, 3), 200, np.uint8)
        out, boxes, used = project(rng, scan, [("wrench", threat_layer()), ("pliers", threat_layer(50, 30))])
        assert used == [0, 1] and len(boxes) == 2
        changed = (out < scan).any(axis=2)  # where a layer absorbs
        inside = np.zeros_like(changed)
        for _, x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240 and x0 == int(x0)
            inside[int(y0) : int(y1), int(x0) : int(x1)] = True
            region = changed[int(y0) : int(y1), int(x0) : int(x1)]
            # tight: the box's border rows and columns each hold absorbing pixels
            assert region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
        assert not (changed & ~inside).any()  # nothing absorbs outside the boxes


def test_threats_lie_on_the_bags_not_across_their_edges_on_the_belt():
    """Two bags with empty belt between and around them: the bags' bounding rectangle holds belt, yet
    every threat's absorbing pixels land on a bag."""
    scan = np.full((480, 640, 3), 235, np.uint8)  # the empty belt
    bags = np.zeros((480, 640), bool)
    bags[60:420, 20:300] = bags[60:420, 360:620] = True  # each roomy enough for a layer at 2x
    scan[bags] = (150, 140, 120)
    on_belt = []
    for seed in range(40):
        out, boxes, used = project(np.random.default_rng(seed), scan,
                                   [("wrench", threat_layer()), ("pliers", threat_layer(50, 30))])
        changed = (out < scan).any(axis=2)
        assert used == [0, 1] and changed.any()
        on_belt.append(changed[~bags].sum() / changed.sum())
    assert max(on_belt) <= 0.02, on_belt


def test_extracting_a_composited_threat_gives_its_layer_back():
    layer = threat_layer()
    for seed in range(3):
        bag = smooth_bag(seed=seed)
        scan = bag.copy()
        scan[40:80, 50:110] = physics.composite(scan[40:80, 50:110], layer)
        got, facts = extract_layer(scan, (50.0, 40.0, 110.0, 80.0))
        assert got is not None, facts
        error = np.abs(got.astype(int) - layer.astype(int))
        assert error.mean() < 4 and np.median(error) <= 2, (error.mean(), facts)
        assert got[0:5, 0:5].min() >= 250  # the bag behind was divided out: empty parts are transparent


def test_cluttered_or_tiny_crops_are_dropped_with_a_reason():
    rng = np.random.default_rng(3)
    clutter = rng.integers(30, 256, (120, 160, 3), dtype=np.uint8)
    clutter[40:80, 50:110] = physics.composite(clutter[40:80, 50:110], threat_layer())
    layer, facts = extract_layer(clutter, (50, 40, 110, 80))
    assert layer is None and facts["drop"] == "cluttered"
    assert extract_layer(smooth_bag(), (10, 10, 14, 30))[1]["drop"] == "small"
    assert extract_layer(smooth_bag(), (40, 40, 100, 90))[1]["drop"] == "faint"  # nothing there


# ---------------------------------------------------------------- the stages


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small synthetic raw folder, ingested, its train threats cut, 40 TIP scans written into it and
    ingested again; the manifest before TIP is kept for comparison."""
    root = tmp_path_factory.mktemp("tip")
    raw, manifests, threats = root / "raw", root / "manifests", root / "threats"
    synthesize(raw, positives=40, negatives=90, size_factor=0.3, seed=4, workers=1, chunk_size=50)
    ingest(raw, manifests, workers=1)
    before = pq.read_table(manifests / "manifest.parquet").to_pylist()
    cut = build_threats(raw, threats, manifests=manifests, workers=1, chunk_size=7)
    tip = make_tip(raw, threats, raw, count=40, manifests=manifests, seed=1, chunk_size=15, workers=1,
                   preview=root / "preview.png")
    ingest(raw, manifests, workers=1)
    after = pq.read_table(manifests / "manifest.parquet").to_pylist()
    return {"root": root, "raw": raw, "manifests": manifests, "threats": threats, "cut": cut, "tip": tip,
            "before": {r["id"]: r for r in before}, "after": {r["id"]: r for r in after}}


def tip_index(out: Path) -> list[dict]:
    return pq.read_table(out / ".tip" / "index.parquet").to_pylist()


def test_threat_library_takes_train_scans_only_and_counts_drops(dataset):
    library = read_library(dataset["threats"]).to_pylist()
    cut, before = dataset["cut"], dataset["before"]
    assert library and cut["layers"] == len(library)
    assert cut["boxes"] == len(library) + sum(cut["dropped"].values())
    train_boxes = sum(len(r["boxes"]) for r in before.values() if r["split"] == "train")
    assert cut["boxes"] == train_boxes  # every box of every train positive, kept or dropped
    for row in library:
        assert before[row["scan"]]["split"] == "train" and row["split"] == "train"
        with Image.open(dataset["threats"] / row["layer"]) as im:
            assert im.mode == "RGB" and im.size == (row["width"], row["height"])
    summary = json.loads((dataset["threats"] / "raw" / "summary.json").read_text())
    assert summary["layers"] == len(library) and summary["dropped"] == cut["dropped"]


def test_tip_ids_splits_and_sources(dataset):
    before, after, raw = dataset["before"], dataset["after"], dataset["raw"]
    tips = sorted(i for i in after if i.startswith("T"))
    assert tips == [tip_id(n) for n in range(1, 41)] and tips[0] == "T0000001"
    assert not set(tips) & set(before)  # T + 7 digits: never a real P##### or N####### id
    for image_id in tips:
        row = after[image_id]
        assert (row["source"], row["split"], row["status"]) == ("tip", "train", "ok")
        assert any(row[c] for c in CLASSES)
    for image_id, row in before.items():  # the real rows keep their split: TIP rows are outside the rule
        assert after[image_id]["split"] == row["split"] and after[image_id]["source"] == "synth"
    index = tip_index(raw)
    for r in index:  # never a test-split scan, never a positive, never a TIP scan as a background
        bg = before[r["background"]]
        assert bg["split"] == "train" and not any(bg[c] for c in (*CLASSES, "hammer"))
        assert 1 <= len(r["boxes"]) <= 3
        boxes, _ = read_annotation(raw / "Annotation" / f"{r['id']}.xml", raw)
        assert [b["cls"] for b in boxes] == r["classes"]
        assert [[b[k] for k in ("xmin", "ymin", "xmax", "ymax")] for b in boxes] == r["boxes"]
        labels = after[r["id"]]
        assert {c for c in CLASSES if labels[c]} == set(r["classes"])
    lines = (raw / "ImageSet" / "tip" / "train.csv").read_bytes().split(b"\r\n")
    assert lines[0] == b"name,Gun,Knife,Wrench,Pliers,Scissors" and len([x for x in lines if x]) == 41


def test_stats_count_tip_scans_apart(dataset):
    report = compute_stats(dataset["manifests"])
    train = sum(r["split"] == "train" for r in dataset["before"].values())
    test = sum(r["split"] == "test" for r in dataset["before"].values())
    assert report["manifest"]["sources"] == {"synth": {"train": train, "test": test}, "tip": {"train": 40}}
    assert "Usable rows by source" in format_stats(report)


def test_tip_scans_hold_their_background_and_threats(dataset):
    """Outside the JPEG blocks its boxes touch, a TIP scan is its background re-encoded, bit for bit;
    inside, the threats absorb."""
    raw = dataset["raw"]
    for r in tip_index(raw)[:10]:
        with Image.open(raw / "JPEGImage" / f"{r['id']}.jpg") as im:
            tip = np.asarray(im.convert("RGB")).astype(int)
        with Image.open(raw / "JPEGImage" / f"{r['background']}.jpg") as im:
            buffer = io.BytesIO()
            im.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)  # the same generation loss
        with Image.open(buffer) as im:
            bg = np.asarray(im).astype(int)
        assert tip.shape == bg.shape
        blocks = np.zeros(tip.shape[:2], dtype=bool)  # the 16-pixel MCUs (4:2:0) a box touches, and the
        for x0, y0, x1, y1 in r["boxes"]:  # pixel around them (the decoder upsamples chroma across)
            top, left = max(int(y0) // 16 * 16 - 1, 0), max(int(x0) // 16 * 16 - 1, 0)
            blocks[top : -(-int(y1) // 16) * 16 + 1, left : -(-int(x1) // 16) * 16 + 1] = True
            assert (bg - tip)[int(y0) : int(y1), int(x0) : int(x1)].max() > 40  # a threat absorbs there
        assert (tip == bg)[~blocks].all()


def test_test_split_threats_are_never_projected(dataset, tmp_path):
    """A collection cut from the test split sits in the library: TIP leaves it out."""
    threats = tmp_path / "threats"
    build_threats(dataset["raw"], threats, manifests=dataset["manifests"], split="test", workers=1,
                  name="test-threats")
    assert {r["split"] for r in read_library(threats).to_pylist()} == {"test"}
    with pytest.raises(ValueError, match="no usable threat layer"):
        make_tip(dataset["raw"], threats, tmp_path / "o", count=5, manifests=dataset["manifests"], workers=1)
    build_threats(dataset["raw"], threats, manifests=dataset["manifests"], workers=1, name="train-threats")
    make_tip(dataset["raw"], threats, tmp_path / "out", count=12, manifests=dataset["manifests"], workers=1)
    used = {t.split("/")[0] for r in tip_index(tmp_path / "out") for t in r["threats"]}
    assert used == {"train-threats"}


def test_tip_needs_the_raw_folders_manifest(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="pipeline ingest"):
        make_tip(dataset["raw"], dataset["threats"], tmp_path / "o", count=3, manifests=tmp_path / "none")
    with pytest.raises(ValueError, match="--split all"):
        build_threats(dataset["raw"], tmp_path / "t", manifests=tmp_path / "none")


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "chunk-" not in p.name)


def same_tree(a: Path, b: Path) -> bool:
    files = tree(a)
    return files == tree(b) and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)


def test_tip_is_deterministic_whatever_the_chunks_and_workers(dataset, tmp_path):
    kw = {"count": 30, "manifests": dataset["manifests"], "seed": 1}
    make_tip(dataset["raw"], dataset["threats"], tmp_path / "a", chunk_size=30, workers=1, **kw)
    make_tip(dataset["raw"], dataset["threats"], tmp_path / "b", chunk_size=4, workers=2, **kw)
    assert same_tree(tmp_path / "a", tmp_path / "b")
    ours = {r["id"]: r for r in tip_index(dataset["raw"])}
    for r in tip_index(tmp_path / "a"):  # the same scans as the fixture's first 30 (same seed, inputs)
        assert r == ours[r["id"]]
        assert filecmp.cmp(tmp_path / "a" / "JPEGImage" / f"{r['id']}.jpg",
                           dataset["raw"] / "JPEGImage" / f"{r['id']}.jpg", shallow=False)
    make_tip(dataset["raw"], dataset["threats"], tmp_path / "c", count=30, manifests=dataset["manifests"],
             seed=2, workers=1)
    assert not filecmp.cmp(tmp_path / "a" / "JPEGImage" / "T0000001.jpg", tmp_path / "c" / "JPEGImage" /
                           "T0000001.jpg", shallow=False)


def test_tip_resumes_and_grows(dataset, tmp_path):
    out = tmp_path / "out"
    kw = {"manifests": dataset["manifests"], "seed": 1, "chunk_size": 10, "workers": 1}
    first = make_tip(dataset["raw"], dataset["threats"], out, count=30, **kw)
    assert (first["written"], first["skipped_chunks"]) == (30, 0)
    stamp = (out / "JPEGImage" / "T0000001.jpg").stat().st_mtime_ns
    (out / ".tip" / "chunk-000001.json").unlink()  # as if killed while writing chunk 1
    (out / "JPEGImage" / "T0000015.jpg").unlink()
    again = make_tip(dataset["raw"], dataset["threats"], out, count=30, **kw)
    assert (again["written"], again["skipped_chunks"]) == (10, 2)
    assert (out / "JPEGImage" / "T0000015.jpg").exists()
    more = make_tip(dataset["raw"], dataset["threats"], out, count=45, **kw)
    assert (more["written"], more["skipped_chunks"]) == (15, 3)
    assert (out / "JPEGImage" / "T0000001.jpg").stat().st_mtime_ns == stamp  # finished scans untouched
    make_tip(dataset["raw"], dataset["threats"], tmp_path / "fresh", count=45, **kw)
    assert same_tree(out, tmp_path / "fresh")
    make_tip(dataset["raw"], dataset["threats"], out, count=12, **kw)
    assert sorted(p.stem for p in (out / "JPEGImage").iterdir()) == [tip_id(n) for n in range(1, 13)]
    assert len(tip_index(out)) == 12


def test_tip_never_replaces_a_scan_it_did_not_write_and_writes_alone(dataset, tmp_path):
    out = tmp_path / "out"
    kw = {"manifests": dataset["manifests"], "seed": 1, "chunk_size": 10, "workers": 1}
    make_tip(dataset["raw"], dataset["threats"], out, count=10, **kw)
    theirs = out / "JPEGImage" / "T0000012.jpg"  # a user's own file where T12 would go
    theirs.write_bytes(b"their scan")
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(UsageError, match="T0000012.jpg exists and `pipeline tip` did not write it"):
        make_tip(dataset["raw"], dataset["threats"], out, count=20, **kw)
    assert theirs.read_bytes() == b"their scan" and sorted(p.name for p in out.rglob("*")) == before
    theirs.unlink()
    make_tip(dataset["raw"], dataset["threats"], out, count=20, **kw)  # its own T1..T10 are rewritten freely
    holder = subprocess.Popen(  # another process writing TIP scans there
        [sys.executable, "-c", "import time; from base.atomic import locked\n"
         f"with locked({str(out)!r}, 'pipeline tip'):\n    print('ready', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(UsageError, match=rf"another `pipeline tip` \(pid {holder.pid}\) is writing here"):
            make_tip(dataset["raw"], dataset["threats"], out, count=20, **kw)
    finally:
        holder.kill()
        holder.wait()


def test_threats_are_deterministic_and_resume(dataset, tmp_path):
    kw = {"manifests": dataset["manifests"], "workers": 1}
    first = build_threats(dataset["raw"], tmp_path / "t", chunk_size=7, **kw)
    assert first["skipped_chunks"] == 0
    assert same_tree(tmp_path / "t" / "raw", dataset["threats"] / "raw")
    markers = sorted((tmp_path / "t" / "raw" / ".threats").glob("chunk-*.json"))
    markers[0].unlink()
    again = build_threats(dataset["raw"], tmp_path / "t", chunk_size=7, **kw)
    assert again["skipped_chunks"] == len(markers) - 1
    assert same_tree(tmp_path / "t" / "raw", dataset["threats"] / "raw")
    with pytest.raises(ValueError, match="another --name"):
        build_threats(dataset["raw"], tmp_path / "t", split="test", **kw)


def test_user_threat_scans_and_synth_threats_join_the_library(dataset, tmp_path):
    """A user's threat scans on an empty belt (no labels, no manifest: --split all) and the generator's
    threats drawn alone go into the same library; TIP draws from every collection."""
    user = tmp_path / "user"
    (user / "JPEGImage").mkdir(parents=True)
    (user / "Annotation").mkdir()
    belt = np.full((120, 160, 3), 236, np.uint8)  # a grey belt: divided out as well
    belt[40:80, 50:110] = physics.composite(belt[40:80, 50:110], threat_layer())
    Image.fromarray(belt).save(user / "JPEGImage" / "myknife.jpg", quality=95)
    (user / "Annotation" / "myknife.xml").write_text(
        "<annotation><object><name>Knife</name><bndbox><xmin>50</xmin><ymin>40</ymin><xmax>110</xmax>"
        "<ymax>80</ymax></bndbox></object></annotation>")
    library = tmp_path / "lib"
    build_threats(user, library, split="all", manifests=tmp_path / "none", workers=1)
    synth_collection(library, positives=6, seed=3, size_factor=0.3, workers=1)
    rows = read_library(library).to_pylist()
    assert {r["collection"] for r in rows} == {"user", "synth-3"}
    (mine,) = [r for r in rows if r["collection"] == "user"]
    assert (mine["threat"], mine["cls"], mine["split"]) == ("myknife-0", "knife", None)
    with Image.open(library / mine["layer"]) as im:
        layer = np.asarray(im)
    assert np.abs(layer.astype(int) - threat_layer()).mean() < 6  # the belt's grey is divided out
    for r in rows:
        if r["collection"] == "synth-3":
            with Image.open(library / r["layer"]) as im:
                pixels = np.asarray(im)
            assert absorbing_box(pixels) is not None and pixels.max() == 255  # a threat, no bag
    make_tip(dataset["raw"], library, tmp_path / "out", count=20, manifests=dataset["manifests"], workers=1)
    used = {t.split("/")[0] for r in tip_index(tmp_path / "out") for t in r["threats"]}
    assert used == {"user", "synth-3"}


def test_subsets_with_and_without_tip(dataset, tmp_path):
    manifests = dataset["manifests"]
    kw = {"positives_per_class": 4, "workers": 1}
    with_tip = build_shards(manifests, tmp_path / "with", 1000, **kw)
    without = build_shards(manifests, tmp_path / "without", 1000, exclude_sources=("tip",), **kw)
    assert with_tip["selection"]["train"]["tip"] == 40 and without["selection"]["train"]["tip"] == 0
    assert with_tip["selection"]["test"]["tip"] == 0
    for split in ("train", "test"):  # TIP scans come on top: the real selection is the same
        for key in ("positives", "negatives", "per_class"):
            assert with_tip["selection"][split][key] == without["selection"][split][key]
    assert with_tip["test"] == without["test"]
    assert with_tip["train"]["count"] == without["train"]["count"] + 40
    subset = pq.read_table(manifests / "sixray1000.parquet", columns=["id", "source"]).to_pylist()
    assert not any(r["id"].startswith("T") for r in subset)  # the last build excluded them
    assert pq.read_schema(manifests / "sixray1000.parquet").metadata[b"exclude_sources"] == b"tip"
    # threats of the subset's few train positives only (a fair TIP arm of SIXray1000: no other positive)
    cut = build_threats(dataset["raw"], tmp_path / "lib", manifests=manifests, workers=1,
                        subset=manifests / "sixray1000.parquet")
    subset_rows = pq.read_table(manifests / "sixray1000.parquet", columns=["id", "split", "boxes"])
    subset_rows = subset_rows.to_pylist()
    train_boxes = sum(len(r["boxes"]) for r in subset_rows if r["split"] == "train")
    assert cut["boxes"] == train_boxes and cut["scans"] == without["selection"]["train"]["positives"]
    assert {r["scan"] for r in read_library(tmp_path / "lib").to_pylist()} <= {
        r["id"] for r in subset_rows if r["split"] == "train"}


def test_the_commands_and_the_preview(dataset, tmp_path):
    with Image.open(dataset["root"] / "preview.png") as im:
        assert im.format == "PNG" and im.size[0] >= 640
    runner = CliRunner()
    raw, manifests = str(dataset["raw"]), str(dataset["manifests"])
    result = runner.invoke(main, ["threats", "--raw", raw, "--out", str(tmp_path / "lib"), "--manifests",
                                  manifests, "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "layers from" in result.output and "dropped" in result.output
    preview = tmp_path / "sheet.png"
    result = runner.invoke(main, ["tip", "--raw", raw, "--threats", str(tmp_path / "lib"), "--count", "8",
                                  "--out", str(tmp_path / "out"), "--manifests", manifests, "--workers", "1",
                                  "--preview", str(preview)])
    assert result.exit_code == 0, result.output
    assert "8 TIP scans" in result.output and preview.exists()
    result = runner.invoke(main, ["tip", "--raw", raw, "--threats", str(tmp_path / "lib"), "--count", "8",
                                  "--out", str(tmp_path / "o2"), "--manifests", str(tmp_path / "none")])
    assert result.exit_code == 2 and "pipeline ingest" in result.output and "Traceback" not in result.output
    root = ET.parse(tmp_path / "out" / "Annotation" / "T0000001.xml").getroot()
    assert root.findtext("filename") == "T0000001.jpg" and root.findall("object")
