"""A stand-in for model.data with the loader contract's shapes, for tests of the trainer and evaluator.

Samples are deterministic functions of their index: a class is present when its bit is set in the
index, and a present class paints a bright square in a class-specific corner so a model can learn it.
Train batches are shuffled by (seed, epoch) only, so runs are repeatable; ranks take disjoint samples.
"""

import torch

import model.data as real_data

# The contract's own types: the trainer builds LoaderConfig with every field and reads Batch fields.
LoaderConfig, Batch = real_data.LoaderConfig, real_data.Batch


COUNTS = {"train": 48, "test": 20}
SIZE = 200  # the "original" image side used for boxes and pointing


def sample(index: int, side: int):
    labels = torch.tensor([(index >> c) & 1 for c in range(5)], dtype=torch.float32)
    g = torch.Generator().manual_seed(index)
    image = torch.randn(3, side, side, generator=g) * 0.3
    boxes = []
    for c in range(5):
        if labels[c]:
            x0, y0 = (c % 3) * side // 3, (c // 3) * side // 2
            image[:, y0:y0 + side // 4, x0:x0 + side // 4] += 2.0
            s = SIZE / side
            boxes.append({"cls": ("gun", "knife", "wrench", "pliers", "scissors")[c], "xmin": x0 * s,
                          "ymin": y0 * s, "xmax": (x0 + side // 4) * s, "ymax": (y0 + side // 4) * s})
    return image, labels, {"width": SIZE, "height": SIZE, "boxes": boxes}


def split_info(shards, split, val_fraction=0.0):
    return {"shards": [], "count": COUNTS.get(split, 0)}  # no "val" split: nothing is held out


SEEN = []  # (split, rank, ids) of every batch, for the tests to inspect


def make_loader(shards, split, cfg, *, rank=0, world_size=1, epoch=0) -> list:
    """The epoch's batches (a list: the trainer takes the loader's len for its progress bar)."""
    return list(batches(split, cfg, rank, world_size, epoch))


def batches(split, cfg, rank, world_size, epoch):
    indices = list(range(COUNTS[split]))
    side = cfg.crop if split == "train" else cfg.test_size
    if split == "train":
        order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        indices = [indices[i] for i in order]
    mine = indices[rank::world_size]
    if split == "train":
        per_rank = COUNTS[split] // world_size // cfg.batch_size * cfg.batch_size
        mine = mine[:per_rank]
    for start in range(0, len(mine), cfg.batch_size):
        chunk = mine[start:start + cfg.batch_size]
        images, labels, metas = zip(*(sample(i, side) for i in chunk), strict=True)
        ids = [f"P{i:05d}" for i in chunk]
        SEEN.append((split, rank, ids))
        yield Batch(torch.stack(images), torch.stack(labels), torch.zeros(len(chunk), 5, dtype=torch.bool),
                    ids, list(metas))
