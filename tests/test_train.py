import csv
import json
import os
import re
import socket
import warnings
from dataclasses import replace

import fake_data
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from sklearn.metrics import average_precision_score

from base.vocabulary import CLASSES
from model.checkpoint import load_checkpoint
from model.cli import main as model_cli
from model.config import OFFICIAL_EPSILON, ModelConfig, TrainConfig
from model.evaluate import evaluate_checkpoint
from model.report import format_tables
from model.train import RandomStartWarning, train, warn_if_random_start, write_metrics_csv


class FakeData:
    """fake_data with the loader contract's held-out split: "val" is VAL more samples (indices past the
    train and test ones) when a fraction is held out; train and test are fake_data's."""

    LoaderConfig, Batch = fake_data.LoaderConfig, fake_data.Batch
    VAL = 12

    @staticmethod
    def split_info(shards, split, val_fraction=0.0):
        if split == "val":
            return {"shards": [], "count": FakeData.VAL if val_fraction > 0 else 0}
        return fake_data.split_info(shards, split)

    @staticmethod
    def make_loader(shards, split, cfg, *, rank=0, world_size=1, epoch=0) -> list:
        if split != "val":
            return fake_data.make_loader(shards, split, cfg, rank=rank, world_size=world_size, epoch=epoch)
        return list(FakeData.val_batches(cfg, rank, world_size))

    @staticmethod
    def val_batches(cfg, rank, world_size):
        first = sum(fake_data.COUNTS.values())
        mine = list(range(first, first + FakeData.VAL))[rank::world_size]
        for start in range(0, len(mine), cfg.batch_size):
            chunk = mine[start:start + cfg.batch_size]
            images, labels, metas = zip(*(fake_data.sample(i, cfg.test_size) for i in chunk), strict=True)
            yield fake_data.Batch(torch.stack(images), torch.stack(labels),
                                  torch.zeros(len(chunk), 5, dtype=torch.bool), [f"V{i:05d}" for i in chunk],
                                  list(metas))


def config(tmp_path, **kw):
    model = ModelConfig(backbone="tiny", variant=kw.pop("variant", "chr"), epsilon=0.05)
    return TrainConfig(shards="fake", out=str(tmp_path / kw.pop("name", "run")), epochs=kw.pop("epochs", 2),
                       batch_size=8, lr=0.05, resize=72, crop=64, test_size=64, workers=0, device="cpu",
                       seed=kw.pop("seed", 0), model=model, **kw)


def weights(path):
    return load_checkpoint(path)["model"]


def test_train_selects_on_val_and_reports_that_epochs_test_numbers(tmp_path):
    cfg = config(tmp_path, epochs=2)
    summary = train(cfg, data=FakeData())
    out = tmp_path / "run"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {r["eval_split"] for r in rows} == {"val"} and {r["eval_count"] for r in rows} == {"12"}
    assert {"train_loss", "map", "ap_gun", "ap_scissors", "images_per_s"} <= set(rows[0])
    best_epoch = max(range(2), key=lambda e: float(rows[e]["map"] or 0)) + 1  # first of equals wins
    assert summary["selected"] == {"epoch": best_epoch, "of_epochs": 2, "on": "val", "by": "fused",
                                   "map": pytest.approx(max(float(r["map"] or 0) for r in rows))}
    assert summary["count"] == fake_data.COUNTS["test"] and summary["pointing"]
    assert json.load(open(out / "test.json")) == json.loads(json.dumps(summary))
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"] == json.load(open(out / "config.json"))["model"]
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(ckpt)
    assert load_checkpoint(out / "best.pt")["epoch"] == best_epoch
    # alarm thresholds for best.pt, fitted on the val split, beside it for `model predict`
    thresholds = json.load(open(out / "thresholds.json"))
    assert thresholds["checkpoint"] == {"file": "best.pt", "epoch": best_epoch}
    assert thresholds["val_count"] == FakeData.VAL
    assert summary["alarms"]["classes"] == thresholds["classes"] and "any" in summary["alarms"]["test"]
    # `model eval` rebuilds the model from the checkpoint alone and reproduces the run's test numbers.
    report = evaluate_checkpoint(out / "best.pt", "fake", tmp_path / "eval", batch_size=8, workers=0,
                                 device="cpu", data=fake_data)
    assert report["map"] == summary["map"] and report["pointing"] == summary["pointing"]
    assert set(report["ap"]) == {"fused", "stage1", "stage2", "stage3"}
    assert set(report["pointing"]) == {"fused", "fused-mean", "stage1", "stage2", "stage3"}
    hits_and_misses = sum(report["pointing"]["fused"]["hits"]) + sum(report["pointing"]["fused"]["misses"])
    assert hits_and_misses == sum(bin(i).count("1") for i in range(fake_data.COUNTS["test"]))  # one per label
    names = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"metrics.json", "ap.csv", "pointing.csv", "pr_curves.png", "predictions.parquet"} <= names
    assert any(n.startswith("cam_") for n in names)
    assert "Table 2" in format_tables(report) and "Table 3" in format_tables(report)


def test_eval_predictions_reproduce_the_ap_table_with_scikit_learn(tmp_path):
    train(config(tmp_path, epochs=1), data=FakeData())
    difficult = FakeData.make_loader  # every fake sample is plain; mark some difficult to exercise the mask

    def with_difficult(shards, split, cfg, **kw):
        for batch in difficult(shards, split, cfg, **kw):
            mask = batch.difficult.clone()
            mask[::3, 1] = batch.labels[::3, 1] > 0  # a third of the knives are difficult
            yield batch._replace(difficult=mask)

    data = FakeData()
    data.make_loader = with_difficult
    report = evaluate_checkpoint(tmp_path / "run" / "best.pt", "fake", tmp_path / "eval", batch_size=8,
                                 workers=0, device="cpu", pointing_tolerance=15, data=data)
    table = pq.read_table(tmp_path / "eval" / "predictions.parquet").to_pylist()
    assert len(table) == fake_data.COUNTS["test"] and len({r["id"] for r in table}) == len(table)
    assert sum(r["difficult_knife"] for r in table) > 0
    for output in ("fused", "stage1", "stage2", "stage3"):
        for c, name in enumerate(CLASSES):
            rows = [r for r in table if not r[f"difficult_{name}"]]
            labels = np.array([r[f"label_{name}"] for r in rows])
            scores = np.array([r[f"score_{output}_{name}"] for r in rows])
            assert average_precision_score(labels, scores) == pytest.approx(report["ap"][output][c], abs=1e-6)
    assert {"fused@15px", "stage3@15px"} <= set(report["pointing"])  # the tolerant pointing alongside


def test_select_by_the_top_stage_as_the_authors_do(tmp_path):
    train(config(tmp_path, epochs=3, select_by="stage1", select_on="test"), data=FakeData())
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    stage1, fused = [float(r["map_stage1"]) for r in rows], [float(r["map"]) for r in rows]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert max(stage1) != max(fused)  # the two rules read different numbers
    assert best["epoch"] == 1 + int(np.argmax(stage1)) and best["best_map"] == pytest.approx(max(stage1))


def test_select_on_test_keeps_the_authors_behaviour(tmp_path):
    summary = train(config(tmp_path, epochs=2, select_on="test"), data=FakeData())
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert {r["eval_split"] for r in rows} == {"test"}
    assert summary["map"]["fused"] == pytest.approx(max(float(r["map"]) for r in rows), abs=1e-6)


def test_an_empty_validation_split_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="holds out no train image.*--select-on test"):
        train(config(tmp_path, val_fraction=0.01), data=fake_data)  # holds out none


def test_random_start_of_an_imagenet_backbone_warns_loudly():
    loud = "(?s)resnet34 STARTS FROM RANDOM WEIGHTS.*--weights resnet34.pth"
    with pytest.warns(RandomStartWarning, match=loud):
        warn_if_random_start(TrainConfig(model=ModelConfig(backbone="resnet34")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_random_start(TrainConfig(model=ModelConfig(backbone="tiny")))
        warn_if_random_start(TrainConfig(weights="resnet34.pth", model=ModelConfig(backbone="resnet34")))


def test_weights_flag_loads_the_published_file_into_the_trained_backbone(tmp_path):
    import torchvision.models as tvm

    torch.manual_seed(1)
    published = tvm.resnet34(weights=None).state_dict()
    torch.save(published, tmp_path / "resnet34-b627a593.pth")
    cfg = config(tmp_path, epochs=1, weights=str(tmp_path / "resnet34-b627a593.pth"))
    cfg = replace(cfg, lr=0.0, model=replace(cfg.model, backbone="resnet34"))  # lr 0: weights stay the file's
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomStartWarning)
        train(cfg, data=FakeData())
    trained = load_checkpoint(tmp_path / "run" / "best.pt")["model"]
    assert torch.equal(trained["backbone.stages.2.0.conv1.weight"], published["layer4.0.conv1.weight"])
    assert torch.equal(trained["backbone.stages.0.0.weight"], published["conv1.weight"])


@pytest.mark.parametrize("args,expected", [
    (["--preset", "official"], {"loss_rule": "official", "epsilon": OFFICIAL_EPSILON,
                                "refinement": "official", "loss_normalisation": "mean", "batch_size": 320,
                                "select_on": "test", "select_by": "stage1", "epochs": 15, "lr": 0.01,
                                "lr_steps": (20,)}),
    (["--preset", "official", "--batch-size", "8", "--epsilon", "0.2"],
     {"loss_rule": "official", "batch_size": 8, "epsilon": 0.2}),  # typed flags win
    (["--preset", "paper"],
     {"loss_rule": "paper", "epsilon": 0.5, "refinement": "official", "select_on": "val"}),
    ([], {"loss_rule": "drop-easy", "epsilon": 0.1, "refinement": "official", "loss_normalisation": "mean",
          "batch_size": 16, "select_on": "val", "select_by": "fused", "val_fraction": 0.1,
          "pointing_fuse": "max", "crop": 224, "negatives_per_positive": None, "repeat_threshold": 0.0}),
    (["--backbone", "inception_v3"], {"crop": 299, "test_size": 299, "resize": 342, "transform_input": True}),
])
def test_train_flags_and_presets(monkeypatch, args, expected):
    seen = []
    monkeypatch.setattr("model.train.train", lambda cfg, resume: seen.append(cfg) or
                        {"count": 0, "ap": {}, "map": {}, "pointing": {}})
    result = CliRunner().invoke(model_cli, ["train", "--shards", "x", *args])
    assert result.exit_code == 0, result.output
    cfg = seen[0]
    got = {k: getattr(cfg.model, k, getattr(cfg, k, None)) for k in expected}
    assert got == expected


def test_output_to_a_file_is_one_line_per_epoch_and_no_bar(tmp_path, capsys):
    # capsys replaces stdout and stderr with captures that are not terminals, as a log file or a pipe is
    train(config(tmp_path, epochs=2), data=FakeData())
    out, err = capsys.readouterr()
    assert "\r" not in out + err  # no bar redraws
    epoch_lines = [line for line in (out + err).splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert re.fullmatch(r"epoch 2/2: loss \d+\.\d{4}, \d+ img/s, val mAP \d+\.\d", epoch_lines[-1])
    assert re.search(r"^test: epoch [12] \(best val mAP \d+\.\d\): mAP \d+\.\d$", out + err, re.M)
    evaluate_checkpoint(tmp_path / "run" / "last.pt", "fake", None, batch_size=8, workers=0, device="cpu",
                        data=fake_data)
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    assert re.fullmatch(rf"eval: {fake_data.COUNTS['test']} images in \d+\.\d s \(\d+ img/s\)\n", err)


class FlippingData(FakeData):
    """FakeData whose train batches are flipped at random from torch's global generator, as the real
    loader's workers draw their seeds from it: a resume that loses the RNG state diverges."""

    @staticmethod
    def make_loader(shards, split, cfg, *, rank=0, world_size=1, epoch=0) -> list:
        batches = FakeData.make_loader(shards, split, cfg, rank=rank, world_size=world_size, epoch=epoch)
        if split != "train":
            return batches
        flips = [torch.rand(len(b.images)) < 0.5 for b in batches]
        return [b._replace(images=torch.where(f[:, None, None, None], b.images.flip(-1), b.images))
                for b, f in zip(batches, flips, strict=True)]


def test_resume_over_an_lr_step_and_random_draws_equals_an_uninterrupted_run(tmp_path):
    """Killed after epoch 1 of 3 with the LR step at epoch 2: the resumed run must step the LR as the
    straight one did (scheduler state) and draw the same random numbers (RNG state)."""
    steps = {"lr_steps": (2,), "val_fraction": 0.2}
    train(config(tmp_path, name="straight", epochs=3, **steps), data=FlippingData())
    train(config(tmp_path, name="resumed", epochs=1, **steps), data=FlippingData())
    torch.manual_seed(12345)  # whatever a new process's generator holds: the resume must not depend on it
    train(config(tmp_path, name="resumed", epochs=3, **steps), resume=True, data=FlippingData())
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("straight", "resumed"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["scheduler"] == b["scheduler"] and a["epoch"] == b["epoch"] == 3
    rows = [list(csv.DictReader(open(tmp_path / n / "metrics.csv"))) for n in ("straight", "resumed")]
    for row in rows[0] + rows[1]:
        del row["images_per_s"]  # the only column that depends on the clock
    assert rows[0] == rows[1]
    assert [float(r["lr"]) for r in rows[0]] == pytest.approx([0.05, 0.05, 0.005])
    assert json.loads((tmp_path / "straight" / "test.json").read_text()) == json.loads(
        (tmp_path / "resumed" / "test.json").read_text())


def test_metrics_csv_keeps_the_columns_of_older_rows(tmp_path):
    write_metrics_csv(tmp_path / "m.csv", [{"epoch": 1, "test_count": 5}, {"epoch": 2, "eval_count": 6}])
    assert list(csv.DictReader(open(tmp_path / "m.csv"))) == [
        {"epoch": "1", "test_count": "5", "eval_count": ""},
        {"epoch": "2", "test_count": "", "eval_count": "6"},
    ]


def test_seed_makes_a_cpu_run_repeatable_and_matters(tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        train(config(tmp_path, name=name, epochs=1, seed=seed), data=FakeData())
    a, b, c = (weights(tmp_path / n / "last.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_learns_the_fake_task(tmp_path):
    summary = train(config(tmp_path, epochs=6, variant="chr"), data=FakeData())
    assert summary["map"]["fused"] > 0.7  # chance is about 0.5 on this balanced fake set


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, cfg, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    summary = train(cfg, data=FakeData())
    seen = [(split, ids) for split, r, ids in fake_data.SEEN if r == rank]
    torch.distributed.destroy_process_group()
    with open(results / f"rank{rank}.json", "w") as f:
        json.dump({"summary": summary, "seen": seen}, f)


def test_ddp_two_gloo_ranks_split_data_and_agree(tmp_path):
    cfg = config(tmp_path, epochs=1)
    mp.spawn(_ddp_worker, args=(2, _free_port(), cfg, tmp_path), nprocs=2, join=True)
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert ranks[0]["summary"] == ranks[1]["summary"]  # metrics computed over the gathered full test set
    assert ranks[0]["summary"]["count"] == fake_data.COUNTS["test"]
    train_ids = [{i for split, ids in r["seen"] if split == "train" for i in ids} for r in ranks]
    assert train_ids[0] and train_ids[1] and not train_ids[0] & train_ids[1]
    steps = [sum(1 for split, _ in r["seen"] if split == "train") for r in ranks]
    assert steps[0] == steps[1]


# ---- on real shards: ../shared/sixray-sample -> ingest -> build-shards (3 train shards, 1 test shard) ----


@pytest.fixture(scope="module")
def sample_shards(shared, tmp_path_factory):
    from click.testing import CliRunner

    from pipeline.cli import main as pipeline

    root = tmp_path_factory.mktemp("sample")
    for args in (["ingest", "--raw", str(shared / "sixray-sample"), "--out", str(root / "manifests")],
                 ["build-shards", "--ratio", "10", "--manifests", str(root / "manifests"), "--out",
                  str(root / "shards"), "--split", "official", "--shard-size", "2", "--workers", "1"]):
        result = CliRunner().invoke(pipeline, args)
        assert result.exit_code == 0, result.output
    return root / "shards" / "sixray10"


class Recording:
    """model.data with every batch's (split, ids) recorded, to see what each rank read."""

    def __init__(self):
        import model.data

        self.data, self.seen = model.data, []
        self.LoaderConfig, self.split_info = model.data.LoaderConfig, model.data.split_info

    def make_loader(self, shards, split, cfg, **kw) -> list:
        batches = list(self.data.make_loader(shards, split, cfg, **kw))
        self.seen += [(split, list(batch.ids)) for batch in batches]
        return batches


def real_config(tmp_path, shards, name="run", epochs=1):
    # The sample's few train images leave no room for a validation split: select on test.
    model = ModelConfig(backbone="tiny", variant="chr")
    return TrainConfig(shards=str(shards), out=str(tmp_path / name), epochs=epochs, batch_size=1, resize=80,
                       crop=64, test_size=64, workers=0, device="cpu", select_on="test", model=model)


def test_train_and_eval_on_real_shards(tmp_path, sample_shards):
    summary = train(real_config(tmp_path, sample_shards), data=Recording())
    assert summary["count"] == 2  # P00005 and N0052517 (the official test file)
    report = evaluate_checkpoint(tmp_path / "run" / "last.pt", sample_shards, tmp_path / "eval", batch_size=2,
                                 workers=0, device="cpu")
    knife = 1
    assert report["ap"]["fused"][knife] is not None and report["ap"]["fused"][0] is None  # no gun at all
    p = report["pointing"]["fused"]
    assert p["hits"][knife] + p["misses"][knife] == 1  # P00005's knife box
    assert any(f.name.startswith("cam_00_P00005") for f in (tmp_path / "eval").iterdir())


def _real_ddp_worker(rank, world_size, port, cfg, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = Recording()
    summary = train(cfg, data=data)
    torch.distributed.destroy_process_group()
    with open(results / f"rank{rank}.json", "w") as f:
        json.dump({"summary": summary, "seen": data.seen}, f)


def test_ddp_on_real_shards_ranks_read_disjoint_shards(tmp_path, sample_shards):
    cfg = real_config(tmp_path, sample_shards)
    mp.spawn(_real_ddp_worker, args=(2, _free_port(), cfg, tmp_path), nprocs=2, join=True)
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    assert ranks[0]["summary"] == ranks[1]["summary"] and ranks[0]["summary"]["count"] == 2
    train_ids = [{i for split, ids in r["seen"] if split == "train" for i in ids} for r in ranks]
    assert train_ids[0] and train_ids[1] and not train_ids[0] & train_ids[1]
    test_ids = [i for r in ranks for split, ids in r["seen"] if split == "test" for i in ids]
    # the exact epoch, split across the ranks, read twice: to choose the epoch, then for the final numbers
    assert sorted(test_ids) == ["N0052517", "N0052517", "P00005", "P00005"]


def test_train_with_the_dali_loader_on_real_shards(tmp_path, sample_shards):
    pytest.importorskip("nvidia.dali")
    data = Recording()
    summary = train(replace(real_config(tmp_path, sample_shards), loader="dali", workers=1), data=data)
    assert summary["count"] == 2 and (tmp_path / "run" / "last.pt").exists()
    test_ids = sorted(i for split, ids in data.seen if split == "test" for i in ids)
    assert test_ids == ["N0052517", "N0052517", "P00005", "P00005"]  # choosing the epoch, final numbers
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["loader"] == "dali"


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    from shard_helpers import sixray10_shards, synthetic_rows

    return sixray10_shards(tmp_path_factory.mktemp("small"), synthetic_rows(30, 120, seed=1), shard_size=12)


def balanced_config(tmp_path, shards, name, epochs):
    return TrainConfig(shards=str(shards), out=str(tmp_path / name), epochs=epochs, batch_size=5, lr=0.05,
                       lr_steps=(2,), resize=40, crop=32, test_size=32, workers=2, device="cpu",
                       negatives_per_positive=1.0, val_fraction=0.2,
                       model=ModelConfig(backbone="tiny", epsilon=0.05))


def test_balanced_epochs_resume_exactly_across_a_learning_rate_step(tmp_path, small_shards):
    straight = Recording()
    train(balanced_config(tmp_path, small_shards, "straight", 3), data=straight)
    train(balanced_config(tmp_path, small_shards, "resumed", 1))
    resumed = Recording()
    train(balanced_config(tmp_path, small_shards, "resumed", 3), resume=True, data=resumed)
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "resumed" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [list(csv.DictReader(open(tmp_path / n / "metrics.csv"))) for n in ("straight", "resumed")]
    for row in rows[0] + rows[1]:
        del row["images_per_s"]
    assert rows[0] == rows[1] and [float(r["lr"]) for r in rows[0]] == pytest.approx([0.05, 0.05, 0.005])
    batches = [[ids for split, ids in rec.seen if split == "train"] for rec in (straight, resumed)]
    per_epoch = len(batches[1]) // 2
    assert batches[0][per_epoch:] == batches[1]  # epochs 2 and 3 replayed batch for batch
    epochs = [sum(batches[0][e * per_epoch:(e + 1) * per_epoch], []) for e in range(3)]
    positives = [{i for i in ids if i.startswith("P")} for ids in epochs]
    negatives = [{i for i in ids if i.startswith("N")} for ids in epochs]
    assert all(sum(i.startswith("P") for i in ids) == len(positives[0]) for ids in epochs)  # each once
    assert positives[0] == positives[1] == positives[2] and not negatives[0] & negatives[1]
