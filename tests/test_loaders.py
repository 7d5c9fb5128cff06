import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from shard_helpers import row, sixray10_shards, synthetic_rows

from base.vocabulary import CLASSES
from model.data import LoaderConfig, ShardError, make_loader, split_info
from model.pixels import model_input


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rows = synthetic_rows(30, 120, seed=1) + [row("P00099", "test", ["gun", "knife"], difficult=["knife"])]
    return sixray10_shards(root, rows, shard_size=12, corrupt=("N0000002",))


def config(**kw) -> LoaderConfig:
    return LoaderConfig(**{"batch_size": 5, "workers": 0, "resize": 36, "crop": 32, "test_size": 32, **kw})


def epoch_ids(shards, split, cfg, world_size, epoch=0):
    return [
        [
            i
            for batch in make_loader(shards, split, cfg, rank=r, world_size=world_size, epoch=epoch)
            for i in batch.ids
        ]
        for r in range(world_size)
    ]


SKIPS_CORRUPT = pytest.mark.filterwarnings("ignore:.*skipping corrupt sample N0000002")


@SKIPS_CORRUPT
@pytest.mark.parametrize("world_size,workers", [(1, 0), (1, 2), (2, 1), (3, 2), (2, 8)])
def test_test_epoch_sees_every_sample_exactly_once(shards, world_size, workers):
    seen = epoch_ids(shards, "test", config(workers=workers), world_size)
    expected = set(
        pq.read_table(
            shards.parent.parent / "manifests" / "sixray10.parquet", filters=[("split", "==", "test")]
        )["id"].to_pylist()
    ) - {"N0000002"}
    flat = [i for ids in seen for i in ids]
    assert len(flat) == len(set(flat)) and set(flat) == expected


@SKIPS_CORRUPT
def test_more_ranks_than_test_shards_is_still_exact(shards):
    n_test_shards = len(split_info(shards, "test")["shards"])
    seen = epoch_ids(shards, "test", config(workers=2), n_test_shards + 2)
    flat = [i for ids in seen for i in ids]
    assert seen[-1] == [] and len(flat) == len(set(flat)) == split_info(shards, "test")["count"] - 1
    assert set(flat) == set(i for ids in epoch_ids(shards, "test", config(), 1) for i in ids)


def train_ids(shards) -> tuple[set, set]:
    """(positives, negatives) of the train split, from the subset manifest."""
    rows = pq.read_table(shards.parent.parent / "manifests" / "sixray10.parquet",
                         filters=[("split", "==", "train")]).to_pylist()
    positive = {r["id"] for r in rows if any(r[c] == 1 for c in CLASSES)}
    return positive, {r["id"] for r in rows} - positive


def batch_ids(shards, cfg, world_size, epoch=0) -> list[list[list[str]]]:
    """Per rank, the ids of each train batch."""
    return [[b.ids for b in make_loader(shards, "train", cfg, rank=r, world_size=world_size, epoch=epoch)]
            for r in range(world_size)]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 8 workers on 2 cores, on purpose
@pytest.mark.parametrize("negatives_per_positive", [None, 1.0])
def test_train_epoch_is_exact_across_ranks_and_workers(shards, negatives_per_positive):
    positives, negatives = train_ids(shards)
    assert len(positives) == 20 and len(negatives) == 95
    for world_size in (1, 2, 3):
        cfg = config(negatives_per_positive=negatives_per_positive)
        per_worker_count = [batch_ids(shards, replace(cfg, workers=w), world_size) for w in (0, 2, 3, 8)]
        assert all(p == per_worker_count[0] for p in per_worker_count)  # the same batches for any workers
        ranks = per_worker_count[0]
        assert len({len(r) for r in ranks}) == 1 and all(len(b) == 5 for r in ranks for b in r)
        for rank in ranks:  # at most one batch of repeats on a rank, to fill its last batch
            on_rank = Counter(i for b in rank for i in b)
            assert sum(on_rank.values()) - len(on_rank) < 5
        seen = Counter(i for r in ranks for b in r for i in b)
        assert {i: seen[i] for i in positives} == dict.fromkeys(positives, 1)
        drawn = sum(seen[i] for i in negatives)
        if negatives_per_positive is None:  # every negative, and a few again to fill the last batches
            assert set(seen) == positives | negatives and drawn - len(negatives) < 5 * world_size
        else:  # 20 negatives, rounded up to full batches on every rank
            assert drawn == -(-40 // (5 * world_size)) * 5 * world_size - 20 and max(seen.values()) == 1


def test_train_negatives_rotate_and_follow_the_seed(shards):
    _, negatives = train_ids(shards)
    cfg = config(workers=2, negatives_per_positive=1.0)

    def drawn(epoch, seed=0):
        ranks = batch_ids(shards, replace(cfg, seed=seed), 1, epoch)
        return {i for r in ranks for b in r for i in b} & negatives

    first = [drawn(e) for e in range(5)]  # 20 of the 95 negatives an epoch
    assert all(not (first[a] & first[b]) for a in range(4) for b in range(a + 1, 4))
    assert set().union(*first) == negatives and drawn(0) == first[0] and drawn(0, seed=1) != first[0]


@SKIPS_CORRUPT
def test_batches_carry_labels_masks_meta_and_uint8_images_the_device_normalises(shards):
    manifest = {
        r["id"]: r for r in pq.read_table(shards.parent.parent / "manifests" / "sixray10.parquet").to_pylist()
    }
    batches = list(make_loader(shards, "test", config()))
    for batch in batches:
        assert batch.images.dtype == torch.uint8 and batch.images.shape[1:] == (3, 32, 32)
        normalised = model_input(batch.images, "cpu")
        assert normalised.dtype == torch.float32 and normalised.shape == batch.images.shape
        torch.testing.assert_close(normalised[:, 0], (batch.images[:, 0].float() / 255 - 0.485) / 0.229)
        for k, image_id in enumerate(batch.ids):
            assert batch.labels[k].tolist() == [float(manifest[image_id][c] == 1) for c in CLASSES]
            assert len(batch.meta[k]["boxes"]) == int(batch.labels[k].sum())
    p99 = next(b for b in batches if "P00099" in b.ids)
    k = p99.ids.index("P00099")
    assert p99.difficult[k].tolist() == [False, True, False, False, False]
    assert p99.meta[k] == {"width": 40, "height": 32, "boxes": p99.meta[k]["boxes"]}


def test_corrupt_samples_are_skipped_with_a_warning(shards):
    loader = make_loader(shards, "test", config())
    with pytest.warns(UserWarning, match="test-000000.tar: skipping corrupt sample N0000002"):
        n = sum(len(b.ids) for b in loader)
    assert loader.skipped == 1 and n == split_info(shards, "test")["count"] - 1


@SKIPS_CORRUPT
def test_corrupt_samples_are_counted_across_worker_processes(shards):
    loader = make_loader(shards, "test", config(workers=2))
    n = sum(len(b.ids) for b in loader)
    assert loader.skipped == 1 and n == split_info(shards, "test")["count"] - 1


@SKIPS_CORRUPT
def test_truncated_or_missing_shard_fails_naming_it(shards, tmp_path):
    broken = tmp_path / "sixray10"
    shutil.copytree(shards, broken)
    name = split_info(broken, "test")["shards"][1]
    data = (broken / name).read_bytes()
    (broken / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match=name):
        list(make_loader(broken, "test", config()))
    (broken / name).write_bytes(data[: 512 * 40])  # cut on a member boundary: tar itself sees no error
    with pytest.raises(ShardError, match=f"{name}: sample .* lies past the end of the tar; truncated shard"):
        list(make_loader(broken, "test", config()))
    (broken / name).unlink()
    with pytest.raises(ShardError, match=name):
        list(make_loader(broken, "test", config(workers=2)))


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not dali_available(), reason="nvidia-dali is not installed")
def test_dali_cpu_only_matches_the_cpu_loader(tmp_path, shards):
    # DALI does not skip corrupt samples; give it shards without the corrupt one.
    clean = sixray10_shards(tmp_path / "data", synthetic_rows(30, 120, seed=1), shard_size=12)
    cfg = config(backend="dali", workers=2)
    per_rank = [list(make_loader(clean, "test", cfg, rank=r, world_size=2)) for r in range(2)]
    dali = {
        i: (b.labels[k].tolist(), b.difficult[k].tolist(), b.meta[k])
        for bs in per_rank
        for b in bs
        for k, i in enumerate(b.ids)
    }
    assert sum(len(b.ids) for bs in per_rank for b in bs) == len(dali) == split_info(clean, "test")["count"]
    cpu = {
        i: (b.labels[k].tolist(), b.difficult[k].tolist(), b.meta[k])
        for b in make_loader(clean, "test", config())
        for k, i in enumerate(b.ids)
    }
    assert dali == cpu
    assert per_rank[0][0].images.shape[1:] == (3, 32, 32) and per_rank[0][0].images.dtype == torch.float32
    for k in (None, 1.0):  # the same planned train batches as the CPU loader
        dali_cfg = replace(cfg, negatives_per_positive=k)
        dali_train = list(make_loader(clean, "train", dali_cfg, rank=1, world_size=2))
        cpu_train = make_loader(clean, "train", config(negatives_per_positive=k), rank=1, world_size=2)
        assert [b.ids for b in dali_train] == [b.ids for b in cpu_train]
        assert dali_train[0].images.shape == (5, 3, 32, 32)
    # The same pixels, id by id and channel by channel (measured: <= 0.002 apart on average; red and blue
    # swapped: 0.49): same decode, colour order, resize and normalisation.
    dali_images = {i: b.images[k] for bs in per_rank for b in bs for k, i in enumerate(b.ids)}
    cpu_images = {i: model_input(b.images, "cpu")[k]
                  for b in make_loader(clean, "test", config()) for k, i in enumerate(b.ids)}
    for i, image in cpu_images.items():
        per_channel = (dali_images[i] - image).abs().mean(dim=(1, 2))
        assert (per_channel < 0.02).all(), (i, per_channel)


def test_split_info_reads_the_epoch_length_without_opening_tars(shards):
    info = json.loads((Path(shards) / "_info.json").read_text())
    assert split_info(shards, "train")["count"] == sum(info["train"]["counts"])
    assert split_info(shards, "test")["classes"] == list(CLASSES)
    with pytest.raises(FileNotFoundError, match="build-shards"):
        split_info(shards.parent, "test")
