import csv
import json
import os
import re
import socket
from dataclasses import replace

import fake_data
import pytest
import torch
import torch.multiprocessing as mp

from model.config import ModelConfig, TrainConfig
from model.evaluate import evaluate_checkpoint, format_tables, load_checkpoint
from model.train import train


def config(tmp_path, **kw):
    model = ModelConfig(backbone="tiny", variant=kw.pop("variant", "chr"), epsilon=0.05)
    return TrainConfig(shards="fake", out=str(tmp_path / kw.pop("name", "run")), epochs=kw.pop("epochs", 2),
                       batch_size=8, lr=0.05, resize=72, crop=64, test_size=64, workers=0, device="cpu",
                       seed=kw.pop("seed", 0), model=model, **kw)


def weights(path):
    return load_checkpoint(path)["model"]


def test_train_writes_run_folder_and_config_round_trips(tmp_path):
    cfg = config(tmp_path, epochs=2)
    summary = train(cfg, data=fake_data)
    out = tmp_path / "run"
    assert summary["count"] == fake_data.COUNTS["test"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train_loss", "map", "ap_gun", "ap_scissors", "images_per_s"} <= set(rows[0])
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"] == json.load(open(out / "config.json"))["model"]
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(ckpt)
    assert (out / "best.pt").exists()
    # `model eval` rebuilds the model from the checkpoint alone and reproduces the training-time mAP.
    report = evaluate_checkpoint(out / "last.pt", "fake", tmp_path / "eval", batch_size=8, workers=0,
                                 device="cpu", data=fake_data)
    assert report["map"]["fused"] == pytest.approx(float(rows[-1]["map"]), abs=1e-6)
    assert set(report["ap"]) == {"fused", "stage1", "stage2", "stage3"}
    hits_and_misses = sum(report["pointing"]["fused"]["hits"]) + sum(report["pointing"]["fused"]["misses"])
    assert hits_and_misses == sum(bin(i).count("1") for i in range(fake_data.COUNTS["test"]))  # one per label
    names = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"metrics.json", "ap.csv", "pointing.csv", "pr_curves.png"} <= names
    assert any(n.startswith("cam_") for n in names)
    assert "Table 2" in format_tables(report) and "Table 3" in format_tables(report)


def test_output_to_a_file_is_one_line_per_epoch_and_no_bar(tmp_path, capsys):
    # capsys replaces stdout and stderr with captures that are not terminals, as a log file or a pipe is
    train(config(tmp_path, epochs=2), data=fake_data)
    out, err = capsys.readouterr()
    assert "\r" not in out + err  # no bar redraws
    epoch_lines = [line for line in (out + err).splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert re.fullmatch(r"epoch 2/2: loss \d+\.\d{4}, \d+ img/s, mAP \d+\.\d", epoch_lines[-1])
    evaluate_checkpoint(tmp_path / "run" / "last.pt", "fake", None, batch_size=8, workers=0, device="cpu",
                        data=fake_data)
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    assert re.fullmatch(rf"eval: {fake_data.COUNTS['test']} images in \d+\.\d s \(\d+ img/s\)\n", err)


def test_resume_continues_exactly(tmp_path):
    train(config(tmp_path, name="straight", epochs=2), data=fake_data)
    train(config(tmp_path, name="resumed", epochs=1), data=fake_data)
    train(config(tmp_path, name="resumed", epochs=2), resume=True, data=fake_data)
    a, b = weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "resumed" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [list(csv.DictReader(open(tmp_path / n / "metrics.csv"))) for n in ("straight", "resumed")]
    for row in rows[0] + rows[1]:
        del row["images_per_s"]  # the only column that depends on the clock
    assert rows[0] == rows[1] and len(rows[0]) == 2


def test_seed_makes_a_cpu_run_repeatable_and_matters(tmp_path):
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        train(config(tmp_path, name=name, epochs=1, seed=seed), data=fake_data)
    a, b, c = (weights(tmp_path / n / "last.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_training_learns_the_fake_task(tmp_path):
    summary = train(config(tmp_path, epochs=6, variant="chr"), data=fake_data)
    assert summary["map"]["fused"] > 0.7  # chance is about 0.5 on this balanced fake set


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, cfg, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    summary = train(cfg, data=fake_data)
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

    def make_loader(self, shards, split, cfg, **kw):
        for batch in self.data.make_loader(shards, split, cfg, **kw):
            self.seen.append((split, list(batch.ids)))
            yield batch


def real_config(tmp_path, shards, name="run", epochs=1):
    model = ModelConfig(backbone="tiny", variant="chr")
    return TrainConfig(shards=str(shards), out=str(tmp_path / name), epochs=epochs, batch_size=1, resize=80,
                       crop=64, test_size=64, workers=0, device="cpu", model=model)


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
    assert sorted(test_ids) == ["N0052517", "P00005"]  # the exact epoch, split across the ranks


def test_train_with_the_dali_loader_on_real_shards(tmp_path, sample_shards):
    pytest.importorskip("nvidia.dali")
    data = Recording()
    summary = train(replace(real_config(tmp_path, sample_shards), loader="dali", workers=1), data=data)
    assert summary["count"] == 2 and (tmp_path / "run" / "last.pt").exists()
    assert sorted(i for split, ids in data.seen if split == "test" for i in ids) == ["N0052517", "P00005"]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["loader"] == "dali"
