"""The held-out validation split of model/data.py on real shards: a fixed function of the ids, disjoint
from what trains, exact per epoch, the same from the CPU and the DALI loaders."""

import pytest
from shard_helpers import sixray10_shards, synthetic_rows

from model.data import LoaderConfig, in_validation, make_loader, split_info

FRACTION = 0.25


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return sixray10_shards(tmp_path_factory.mktemp("val"), synthetic_rows(30, 120, seed=1), shard_size=12)


def config(**kw) -> LoaderConfig:
    return LoaderConfig(**{"batch_size": 5, "workers": 0, "resize": 36, "crop": 32, "test_size": 32,
                           "val_fraction": FRACTION, **kw})


def ids(shards, split, cfg, world_size=1, epoch=0) -> list[str]:
    ranks = range(world_size)
    loaders = [make_loader(shards, split, cfg, rank=r, world_size=world_size, epoch=epoch) for r in ranks]
    return [i for loader in loaders for batch in loader for i in batch.ids]


def test_val_is_the_hashed_share_of_train_and_counts_match(shards):
    everything = ids(shards, "val", config(val_fraction=1.0))  # every train sample, read once
    held = ids(shards, "val", config())
    assert sorted(held) == sorted(i for i in everything if in_validation(i, FRACTION))
    assert 0.1 < len(held) / len(everything) < 0.4
    info = {s: split_info(shards, s, FRACTION) for s in ("train", "val")}
    assert info["val"]["count"] == len(held)
    assert info["train"]["count"] + info["val"]["count"] == split_info(shards, "train")["count"]
    assert info["val"]["stored"] == info["train"]["stored"] == split_info(shards, "train")["counts"]


@pytest.mark.parametrize("world_size,workers", [(1, 2), (2, 1)])
def test_val_epoch_is_exact_across_ranks_and_workers(shards, world_size, workers):
    held = ids(shards, "val", config(workers=workers), world_size)
    assert len(held) == len(set(held)) == split_info(shards, "val", FRACTION)["count"]


def test_training_never_sees_a_held_out_sample_whatever_the_seed(shards):
    held = set(ids(shards, "val", config()))
    for seed in (0, 1):
        trained = ids(shards, "train", config(workers=2, seed=seed), epoch=seed)
        assert trained and not held & set(trained)
        assert len(trained) == split_info(shards, "train", FRACTION)["count"] // 5 * 5
    assert set(ids(shards, "val", config(seed=7))) == held  # the split does not follow the seed


def test_without_a_fraction_train_reads_everything_and_val_is_empty(shards):
    assert split_info(shards, "val")["count"] == 0 and ids(shards, "val", config(val_fraction=0.0)) == []
    assert split_info(shards, "train")["count"] == sum(split_info(shards, "train")["stored"])


def test_dali_reads_the_same_split(shards):
    pytest.importorskip("nvidia.dali")
    cfg = config(backend="dali", workers=1)
    assert sorted(ids(shards, "val", cfg, world_size=2)) == sorted(ids(shards, "val", config()))
    held = set(ids(shards, "val", config()))
    trained = ids(shards, "train", cfg)
    assert len(trained) == split_info(shards, "train", FRACTION)["count"] // 5 * 5
    assert not held & set(trained)
