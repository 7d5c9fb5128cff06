"""README promises that no other test checked directly (tests/README.md maps every promise to its test):
TIP placement (threat counts, classes, scale, mirroring, overlap, background order, JPEG quality), the
alarm thresholds against the val split's own scores, negatives left out of an epoch never read, the
subset and shard-order hash rules by hand, the reference preset, SIXRAY_DEBUG and --help."""

from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from model_helpers import fabricate_checkpoint
from PIL import Image
from shard_helpers import sixray10_shards, synthetic_rows, write_dataset

import model.data as model_data
from base.hashing import stable_hash
from base.vocabulary import CLASSES
from model.alarms import fit_thresholds, read_thresholds, threshold_for_recall
from model.cli import main as model_cli
from model.data import LoaderConfig, make_loader, split_info
from model.evaluate import evaluate_checkpoint
from model.predict import predict_command
from pipeline.cli import main as pipeline_cli
from pipeline.shards import build_shards
from pipeline.subsets import SubsetConfig, build_subset
from pipeline.tip import _iou, draw_layers, project, transform_layer

# ---------------------------------------------------------------- TIP placement


def test_tip_draws_one_to_three_threats_60_30_10_each_a_uniform_class():
    by_class = {c: [10 * k, 10 * k + 1] for k, c in enumerate(CLASSES)}  # two layers per class
    rng = np.random.default_rng(0)
    draws = [draw_layers(rng, by_class, 3) for _ in range(6000)]
    counts = Counter(len(d) for d in draws)
    assert set(counts) == {1, 2, 3}
    for n, share in ((1, 0.6), (2, 0.3), (3, 0.1)):
        assert counts[n] / len(draws) == pytest.approx(share, abs=0.025), counts
    picks = [p for d in draws for p in d]
    per_class = Counter(p // 10 for p in picks)
    for k in range(5):  # uniform class: a fifth each (sd ~0.005), then a uniform layer of it
        assert per_class[k] / len(picks) == pytest.approx(0.2, abs=0.02), per_class
    assert Counter(p % 10 for p in picks)[0] / len(picks) == pytest.approx(0.5, abs=0.02)
    # --max-threats 2: the allowed weights renormalised, 0.6 / 0.9 and 0.3 / 0.9; 1: always one
    two = Counter(len(draw_layers(rng, by_class, 2)) for _ in range(3000))
    assert set(two) == {1, 2} and two[1] / 3000 == pytest.approx(2 / 3, abs=0.03)
    assert {len(draw_layers(rng, by_class, 1)) for _ in range(200)} == {1}


def solid_layer(h: int, w: int) -> np.ndarray:
    layer = np.full((h, w, 3), 255, np.uint8)
    layer[:, :] = (60, 90, 120)  # opaque everywhere: its absorbing area is h * w times the scale squared
    return layer


def absorbing_area(layer: np.ndarray) -> int:
    return int((layer.min(axis=2) <= 254).sum())


@pytest.mark.parametrize("side, scan, ratio", [(8, 3000, 4.0), (330, 300, 0.25)])
def test_tip_resizes_a_layer_by_half_to_twice_at_most(side, scan, ratio):
    """An 8-px layer in a 3000-px scan wants over 2x to reach any real gun box area (0.18-29% of the
    scan), a 330-px layer in a 300-px scan under 0.5x (and fits at 0.5x at any angle): both clip, so the
    absorbing area is side^2 x 4 or x 0.25 (rotation keeps the area; bilinear edges add a rim)."""
    layer = solid_layer(side, side)
    for seed in range(20):
        placed = transform_layer(np.random.default_rng(seed), layer, "gun", scan, scan)
        got = absorbing_area(placed) / (side * side)
        assert ratio * 0.85 <= got <= ratio * 1.3 + 2.0 / side, (seed, got)


def chirality(layer: np.ndarray) -> float:
    """Sign of the turn red -> green -> blue marker centroids make (image coordinates): kept by rotation
    and scaling, reversed by a mirror flip."""
    points = []
    for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200)):
        near = np.abs(layer.astype(int) - colour).max(axis=2) < 40
        ys, xs = np.nonzero(near)
        assert len(xs), colour
        points.append((xs.mean(), ys.mean()))
    (ax, ay), (bx, by), (cx, cy) = points
    return np.sign((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))


def test_tip_mirrors_a_layer_half_the_time():
    layer = np.full((60, 60, 3), 255, np.uint8)
    layer[5:20, 5:20] = (200, 0, 0)  # red top left, green top right, blue bottom left: a handed triangle
    layer[5:20, 40:55] = (0, 200, 0)
    layer[40:55, 5:20] = (0, 0, 200)
    original = chirality(layer)
    flipped = [chirality(transform_layer(np.random.default_rng(s), layer, "knife", 800, 800)) != original
               for s in range(200)]
    assert 0.4 <= np.mean(flipped) <= 0.6, np.mean(flipped)  # binomial(200, 0.5): sd 0.035


def test_tip_boxes_overlap_by_iou_0_1_at_most_where_there_is_room():
    """A uniform scan is bag everywhere (no cell differs from the border), so only the overlap rule
    decides where three threats go; with room for them, no two boxes pass IoU 0.1."""
    scan = np.full((400, 400, 3), 150, np.uint8)
    layers = [("gun", solid_layer(40, 50)), ("knife", solid_layer(30, 60)), ("pliers", solid_layer(45, 35))]
    worst = 0.0
    for seed in range(40):
        _, boxes, used = project(np.random.default_rng(seed), scan, layers)
        assert used == [0, 1, 2]
        for a in range(3):
            for b in range(a + 1, 3):
                worst = max(worst, _iou(boxes[a][1:], boxes[b][1:]))
    assert worst <= 0.1, worst


@pytest.fixture(scope="module")
def tip_out(tmp_path_factory):
    """Five train negatives of 96 x 80 (write_dataset), a one-threat user library, seven TIP scans."""
    from pipeline.threats import build_threats
    from pipeline.tip import make_tip
    from pipeline.xray import physics

    root = tmp_path_factory.mktemp("tip")
    rows = [r for r in synthetic_rows(0, 10) if r["split"] == "train"]
    for r in rows:
        r["width"], r["height"] = 96, 80
    write_dataset(root, rows)
    user = root / "user"
    (user / "JPEGImage").mkdir(parents=True)
    (user / "Annotation").mkdir()
    belt = np.full((120, 160, 3), 236, np.uint8)
    layer = np.full((40, 60, 3), 255, np.uint8)
    layer[10:30, 5:55] = (60, 110, 150)
    belt[40:80, 50:110] = physics.composite(belt[40:80, 50:110], layer)
    Image.fromarray(belt).save(user / "JPEGImage" / "k.jpg", quality=95)
    (user / "Annotation" / "k.xml").write_text(
        "<annotation><object><name>Knife</name><bndbox><xmin>50</xmin><ymin>40</ymin><xmax>110</xmax>"
        "<ymax>80</ymax></bndbox></object></annotation>")
    build_threats(user, root / "lib", split="all", manifests=root / "none", workers=1)
    make_tip(root / "raw", root / "lib", root / "out", count=7, manifests=root / "manifests", seed=3,
             workers=1)
    return root, [r["id"] for r in rows]


def test_tip_scan_i_uses_the_negative_at_i_minus_1_mod_n_of_the_seeded_order(tip_out):
    root, negatives = tip_out
    index = pq.read_table(root / "out" / ".tip" / "index.parquet").to_pylist()
    order = sorted(negatives, key=lambda i: stable_hash(3, "tip-background", i))
    assert len(order) == 5
    assert [r["background"] for r in index] == [order[(i - 1) % 5] for i in range(1, 8)]


def test_tip_jpegs_are_quality_75(tip_out):
    root, _ = tip_out
    reference = root / "q75.jpg"
    Image.new("RGB", (16, 16), (128, 64, 32)).save(reference, quality=75)
    with Image.open(reference) as ref, Image.open(root / "out" / "JPEGImage" / "T0000001.jpg") as tip:
        assert tip.quantization == ref.quantization


# ---------------------------------------------------------------- alarm thresholds on val


def test_threshold_is_the_highest_reaching_the_target_recall_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 12, n) / 11  # many ties
        target = float(rng.choice([0.5, 0.8, 0.9, 0.95, 1.0]))
        t = threshold_for_recall(scores, np.ones(n, bool), target)
        assert (scores >= t).mean() >= target - 1e-9
        higher = scores[scores > t]
        if len(higher):  # the next score up would miss the target
            assert (scores >= higher.min()).mean() < target


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("alarms")
    write_dataset(root, synthetic_rows(40, 60, test_every=3))
    build_shards(root / "manifests", root / "shards", 10, shard_size=20, workers=1)
    checkpoint = fabricate_checkpoint(root / "run" / "best.pt", val_fraction=0.5, classifier_gain=30)
    evaluate_checkpoint(checkpoint, root / "shards" / "sixray10", root / "run" / "eval", batch_size=16,
                        workers=0, device="cpu", overlays=0)
    return root, checkpoint


def test_eval_thresholds_reach_the_target_recall_on_the_val_split(evaluated, tmp_path):
    """thresholds.json against the val split's own scores (predict --split val, eval's scores): each
    class's threshold puts 90% of its val positives at or above it, and no higher threshold would."""
    root, checkpoint = evaluated
    predict_command(root / "shards" / "sixray10", tmp_path, checkpoint=checkpoint, split="val", workers=0,
                    batch_size=16, device="cpu")
    rows = pq.read_table(tmp_path / "predictions.parquet").to_pylist()
    subset = {r["id"]: r for r in pq.read_table(root / "manifests" / "sixray10.parquet").to_pylist()}
    assert len(rows) == split_info(root / "shards" / "sixray10", "val", 0.5)["count"] > 10
    assert all(subset[r["id"]]["split"] == "train" for r in rows)  # val: held out of train, not test
    limits = read_thresholds(root / "run" / "eval" / "thresholds.json")
    scores = np.array([[r[f"score_{c}"] for c in CLASSES] for r in rows])
    labels = np.array([[subset[r["id"]][c] == 1 for c in CLASSES] for r in rows])
    fitted = fit_thresholds({"scores": {"fused": scores}, "labels": labels.astype(float),
                             "difficult": np.zeros_like(labels)}, 0.9)
    checked = 0
    for k, c in enumerate(CLASSES):
        pos = scores[labels[:, k], k]
        if not len(pos):
            assert limits[c] is None
            continue
        checked += 1
        assert limits[c] == pytest.approx(fitted[c]["threshold"], abs=1e-6)
        assert (pos >= limits[c] - 1e-6).mean() >= 0.9
        above = pos[pos > limits[c] + 1e-6]
        assert not len(above) or (pos >= above.min()).mean() < 0.9
    assert checked >= 3


# ---------------------------------------------------------------- what an epoch reads


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return sixray10_shards(tmp_path_factory.mktemp("reads"), synthetic_rows(20, 120, seed=2), shard_size=25)


def test_negatives_left_out_of_a_balanced_epoch_and_non_val_samples_are_never_read(shards, monkeypatch):
    read = []
    real = model_data.read_members

    def recording(f, path, key, offsets, sizes):
        read.append(str(key))
        return real(f, path, key, offsets, sizes)

    monkeypatch.setattr(model_data, "read_members", recording)
    cfg = LoaderConfig(batch_size=5, workers=0, resize=36, crop=32, test_size=32, negatives_per_positive=1.0)
    drawn = [i for b in make_loader(shards, "train", cfg) for i in b.ids]
    assert Counter(read) == Counter(drawn)  # one read per drawn sample, nothing else
    negatives = split_info(shards, "train")["count"] - 16  # 16 train positives
    assert sum(i.startswith("N") for i in set(read)) < negatives / 2
    read.clear()
    val = [i for b in make_loader(shards, "val", replace(cfg, val_fraction=0.1)) for i in b.ids]
    assert sorted(read) == sorted(val) and 0 < len(val) < split_info(shards, "train")["count"] / 3


# ---------------------------------------------------------------- subsets and shard order by hand


def test_subset_negatives_are_the_smallest_hashes_per_split_and_train_order_is_the_shuffle_hash(tmp_path):
    rows = synthetic_rows(10, 300)
    manifest = write_dataset(tmp_path, rows)
    out = tmp_path / "sixray10.parquet"
    build_subset(manifest, out, SubsetConfig(ratio=10, seed=5))
    table = pq.read_table(out).to_pylist()
    for split in ("train", "test"):
        positives = [r["id"] for r in rows if r["split"] == split and r["classes"]]
        pool = [r["id"] for r in rows if r["split"] == split and not r["classes"]]
        want = sorted(pool, key=lambda i: stable_hash(5, "negatives", i))[: 10 * len(positives)]
        got = [r["id"] for r in table if r["split"] == split and r["id"].startswith("N")]
        assert sorted(got) == sorted(want), split
    train = [r["id"] for r in table if r["split"] == "train"]
    assert train == sorted(train, key=lambda i: stable_hash(5, "shuffle", i))


def test_manifest_is_sorted_by_id_and_its_summary_counts_status_and_split(tmp_path):
    import json

    from test_ingest import make_raw

    from pipeline.ingest import ingest

    raw = make_raw(tmp_path / "raw", 4, 11)
    (raw / "JPEGImage" / "N0000003.jpg").write_bytes(b"")  # one unusable row: status empty, no split
    ingest(raw, tmp_path / "m", workers=2, chunk_size=4)
    table = pq.read_table(tmp_path / "m" / "manifest.parquet", columns=["id", "status", "split"]).to_pylist()
    ids = [r["id"] for r in table]
    assert ids == sorted(ids) and len(ids) == 15
    summary = json.loads((tmp_path / "m" / "manifest.summary.json").read_text())
    assert summary["by_status"] == dict(Counter(r["status"] for r in table)) == {"empty": 1, "ok": 14}
    assert summary["by_split"] == dict(Counter(r["split"] or "none" for r in table))
    assert summary["by_split"]["none"] == 1 and 2 <= summary["by_split"]["test"] <= 3  # a fifth of 4 + 10


# ---------------------------------------------------------------- the CLI


def test_reference_preset_fills_the_readme_recipe(monkeypatch):
    seen = []
    monkeypatch.setattr("model.train.train", lambda cfg, resume: seen.append(cfg) or
                        {"count": 0, "ap": {}, "map": {}, "pointing": {}})
    result = CliRunner().invoke(model_cli, ["train", "--shards", "x", "--preset", "reference"])
    assert result.exit_code == 0, result.output
    cfg = seen[0]
    got = {"backbone": cfg.model.backbone, "refinement": cfg.model.refinement,
           "loss_rule": cfg.model.loss_rule,
           "epsilon": cfg.model.epsilon, "loss_normalisation": cfg.model.loss_normalisation,
           "sizes": (cfg.resize, cfg.crop, cfg.test_size), "batch_size": cfg.batch_size, "lr": cfg.lr,
           "momentum": cfg.momentum, "weight_decay": cfg.weight_decay, "epochs": cfg.epochs,
           "lr_steps": tuple(cfg.lr_steps), "repeat_threshold": cfg.repeat_threshold,
           "negatives_per_positive": cfg.negatives_per_positive, "select": (cfg.select_on, cfg.select_by)}
    assert got == {"backbone": "small", "refinement": "official", "loss_rule": "drop-easy", "epsilon": 0.1,
                   "loss_normalisation": "mean", "sizes": (144, 128, 128), "batch_size": 32, "lr": 0.05,
                   "momentum": 0.9, "weight_decay": 1e-4, "epochs": 30, "lr_steps": (20, 27),
                   "repeat_threshold": 0.5, "negatives_per_positive": 1.0, "select": ("val", "fused")}


def test_sixray_debug_env_shows_the_traceback(tmp_path):
    plain = CliRunner().invoke(pipeline_cli, ["ingest", "--raw", str(tmp_path)])
    assert plain.exit_code == 2 and isinstance(plain.exception, SystemExit)
    debug = CliRunner().invoke(pipeline_cli, ["ingest", "--raw", str(tmp_path)], env={"SIXRAY_DEBUG": "1"})
    assert isinstance(debug.exception, FileNotFoundError), "the exception propagates, traceback and all"


@pytest.mark.parametrize("group", [pipeline_cli, model_cli], ids=["pipeline", "model"])
def test_every_help_lists_all_flags(group):
    for name, command in group.commands.items():
        text = CliRunner().invoke(group, [name, "--help"], terminal_width=200).output
        for param in command.params:
            for flag in getattr(param, "opts", []):
                if flag.startswith("-"):
                    assert flag in text, (name, flag)
        assert not [p.name for p in command.params if getattr(p, "hidden", False)], name
