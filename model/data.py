"""Loaders over `pipeline build-shards` output: CPU (samples read by their offsets in the tars, Pillow
draft decoding, uint8 batches) and NVIDIA DALI, both yielding the same `Batch`.

Epoch contract: for split="test" (and "val") every sample appears exactly once across ranks x workers,
in shard order, shard by shard, each sample read by its offsets (the DALI index beside the tar). For
split="train" the epoch is planned up front (model/epochs.py):
every train positive once, every negative or a rotating sample of them, shuffled by hash, cut into equal
full batches per rank so DDP ranks never wait on each other; samples are read by their offsets in the tars,
so a negative left out of the epoch is never read, let alone decoded.

Validation: with `val_fraction` > 0, the train shards' samples whose id hashes below that fraction form
split="val" (read like the test split: once, no augmentation) and are left out of split="train". The
choice depends on the id alone, so it is the same for every seed, subset, rank and loader; per-shard
counts come from the DALI index files beside the tars, which list every sample's key.
"""

import atexit
import functools
import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from base.atomic import read_json
from base.distribute import die_with_parent
from base.errors import DataError, MissingInputError, UsageError
from base.hashing import stable_hash
from model import epochs
from model.config import TrainConfig
from model.pixels import DECODE_ERRORS, IMAGENET_MEAN, IMAGENET_STD, augment, load_pixels

SPLITS = ("train", "val", "test")


@dataclass
class LoaderConfig:
    backend: str = "cpu"  # "cpu" (reads by offset + Pillow) | "dali"
    batch_size: int = 32
    workers: int = 2  # DataLoader workers (cpu) / DALI threads
    resize: int = 256  # train: square resize to this, then random crop `crop`, random h-flip
    crop: int = 224
    test_size: int = 224  # test: square resize to this (no crop)
    seed: int = 0
    negatives_per_positive: float | None = None  # train: None = every negative each epoch (model/epochs.py)
    repeat_threshold: float = 0.0  # train: repeat-factor sampling of rare classes' positives (0 = off)
    device: str = "cpu"  # where batches land ("cuda:0" for DALI mixed decoding)
    val_fraction: float = 0.0  # train samples held out as split "val" (see the module docstring)

    @classmethod
    def of_run(cls, cfg: TrainConfig, **overrides) -> "LoaderConfig":
        """The loaders' settings of a training run `cfg`, the one place they are taken from a TrainConfig
        (`model train` with the run's flags; `model eval` with its own batch size, workers and device)."""
        return cls(**{"backend": cfg.loader, "batch_size": cfg.batch_size, "workers": cfg.workers,
                      "resize": cfg.resize, "crop": cfg.crop, "test_size": cfg.test_size, "seed": cfg.seed,
                      "negatives_per_positive": cfg.negatives_per_positive,
                      "repeat_threshold": cfg.repeat_threshold, "val_fraction": cfg.held_out, **overrides})


class Batch(NamedTuple):
    images: torch.Tensor  # [B, 3, H, W]: uint8 (CPU loader) or float32 normalised (DALI): see model_input
    labels: torch.Tensor  # float32 [B, 5]: 1 present (difficult included), 0 absent
    difficult: torch.Tensor  # bool [B, 5]
    ids: list[str]
    meta: list[dict]  # {"width", "height", "boxes"} in original image pixels (boxes: test split)

    def to(self, device: str) -> "Batch":
        move = {"non_blocking": True}
        return self._replace(
            images=self.images.to(device, **move),
            labels=self.labels.to(device, **move),
            difficult=self.difficult.to(device, **move),
        )


class ShardError(DataError):
    """A shard is missing, truncated or unreadable; the message names it."""


def split_info(shards, split: str, val_fraction: float = 0.0) -> dict:
    """The split's shards and sample counts: {"shards", "counts", "count"} (what the split reads of each
    shard), "stored" (what each shard holds), plus the run's classes and ratio. "train" and "val" read the
    train shards, keeping the samples out of or in the validation fraction."""
    if split not in SPLITS:
        raise UsageError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(shards) / "_info.json"
    if not path.exists():
        raise MissingInputError(f"{path}: missing; run (or finish) `pipeline build-shards`")
    info = read_json(path, "the shard folder's summary, written by `pipeline build-shards`")
    missing = [k for k in ("train", "test", "classes", "ratio") if k not in info]
    entry = info.get("test" if split == "test" else "train")
    if missing or not isinstance(entry, dict) or not {"shards", "counts"} <= entry.keys():
        raise DataError(f"{path}: no {', '.join(missing) or 'shards or counts'} in it: not a `pipeline "
                        "build-shards` summary (or damaged); run build-shards again into a new --out")
    counts = entry["counts"]
    if split != "test":
        held = held_out_counts(str(shards), tuple(entry["shards"]), val_fraction)
        counts = list(held) if split == "val" else [n - h for n, h in zip(counts, held, strict=True)]
    return {"shards": entry["shards"], "counts": counts, "count": sum(counts), "stored": entry["counts"],
            "classes": info["classes"], "ratio": info["ratio"]}


def in_validation(key: str, fraction: float) -> bool:
    """Whether a train sample is held out: a fixed hash of its id, independent of every seed."""
    return stable_hash(0, "validation", key) < fraction * 2**64


def keeps(key: str, fraction: float, validation: bool) -> bool:
    return in_validation(key, fraction) == validation


def sample_filter(split: str, fraction: float):
    """The split's test on a sample key, or None where it keeps every sample."""
    if split == "test" or fraction <= 0:
        return None
    return functools.partial(keeps, fraction=fraction, validation=split == "val")


def index_entries(tar: Path) -> list[tuple[str, str]]:
    """(sample key, index line) for each sample of a shard, in order, from its DALI index: `v1.2 N`,
    then per sample a line of `ext offset size <key>.<ext>` groups."""
    lines = tar.with_suffix(".idx").read_text().splitlines()[1:]
    return [(line.split()[3].split(".")[0], line) for line in lines]


@functools.lru_cache(maxsize=16)
def held_out_counts(shards: str, names: tuple[str, ...], fraction: float) -> tuple[int, ...]:
    """Per train shard, how many samples the validation fraction holds out (read once per process)."""
    if fraction <= 0:
        return (0,) * len(names)
    return tuple(sum(in_validation(k, fraction) for k, _ in index_entries(Path(shards) / n)) for n in names)


def make_loader(shards, split: str, cfg: LoaderConfig, *, rank: int = 0, world_size: int = 1, epoch: int = 0):
    """An iterable of Batch over one epoch of `split` for this rank (see the module docstring)."""
    if not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} outside world_size {world_size}")
    info = split_info(shards, split, cfg.val_fraction)
    loaders = {"cpu": CpuLoader, "dali": DaliLoader}
    if cfg.backend not in loaders:
        raise UsageError(f"unknown loader backend {cfg.backend!r} (cpu | dali)")
    return loaders[cfg.backend](Path(shards), split, info, cfg, rank, world_size, epoch)


def train_catalogue(shards: Path, info: dict, val_fraction: float) -> epochs.Catalogue:
    return read_catalogue(tuple(str(shards / name) for name in info["shards"]), val_fraction)


@functools.lru_cache(maxsize=4)
def read_catalogue(paths: tuple[str, ...], val_fraction: float) -> epochs.Catalogue:
    """The train split's catalogue, read once per process from the DALI indexes and each sample's label
    member (read at its offset; the JPEGs are not touched). Samples held out as val are left out."""
    shard, keys, offsets, sizes, labels = [], [], [], [], []
    for i, path in enumerate(paths):
        try:
            entries = [epochs.parse_index_line(line) for _, line in index_entries(Path(path))]
            entries = [e for e in entries if not in_validation(e[0], val_fraction)]
            with open(path, "rb") as f:
                raw = [os.pread(f.fileno(), epochs.LABEL_BYTES, off[3]) for _, off, _ in entries]
        except (OSError, KeyError, IndexError, ValueError) as error:
            raise ShardError(f"{path}: unreadable shard or index ({type(error).__name__}: {error})"
                             ) from error
        if any(len(r) != epochs.LABEL_BYTES for r in raw):
            raise ShardError(f"{path}: a label member lies past the end of the tar; truncated shard?")
        shard += [i] * len(entries)
        for key, off, size in entries:
            keys.append(key)
            offsets.append(off)
            sizes.append(size)
        labels.append(np.frombuffer(b"".join(raw), "<f4").reshape(-1, 5))
    return epochs.Catalogue(
        paths, np.array(shard, np.int32), np.array(keys, dtype=str),
        np.array(offsets, np.int64).reshape(-1, 4), np.array(sizes, np.int64).reshape(-1, 4),
        np.concatenate(labels) if labels else np.zeros((0, 5), np.float32),
    )


def planned_batches(shards: Path, info: dict, cfg: LoaderConfig, rank: int, world_size: int, epoch: int
                    ) -> tuple[epochs.Catalogue, list[np.ndarray]]:
    """This rank's batches of the train epoch (catalogue rows), as model/epochs.py plans them."""
    cat = train_catalogue(shards, info, cfg.val_fraction)
    sampling = epochs.Sampling(cfg.seed, cfg.negatives_per_positive, cfg.repeat_threshold)
    samples = epochs.epoch_samples(cat, sampling, epoch, world_size * cfg.batch_size)
    return cat, epochs.rank_batches(samples, rank, world_size, cfg.batch_size)


class TarReader:
    """Reads catalogued samples by offset (one pread per sample), keeping each tar open once."""

    def __init__(self, cat: epochs.Catalogue):
        self.cat, self.files = cat, {}

    def __call__(self, row: int) -> dict:
        cat = self.cat
        path = cat.paths[cat.shard[row]]
        if path not in self.files:
            try:
                self.files[path] = open(path, "rb")  # noqa: SIM115 (closed by close(), or with the reader)
            except OSError as error:
                raise ShardError(f"{path}: unreadable shard ({error})") from error
        return read_members(self.files[path], path, cat.keys[row], cat.offsets[row], cat.sizes[row])

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


# --- CPU: reads by offset + Pillow ---


class CpuLoader:
    """Train: this rank's planned batches, dealt to DataLoader workers in turn. Test and val: this rank's
    shards (every world_size-th), split again by worker, streamed in order."""

    def __init__(self, shards: Path, split, info, cfg: LoaderConfig, rank, world_size, epoch):
        self.split, self.cfg = split, cfg
        if split == "train":
            cat, batches = planned_batches(shards, info, cfg, rank, world_size, epoch)
            self.batches = len(batches)
            self.workers = min(cfg.workers, len(batches))
            self.dataset = PlannedBatches(cat, batches, cfg, (cfg.seed, epoch, rank), self.workers)
            return
        # Shards whose samples the split leaves all out are not read at all.
        mine = [i for i in range(rank, len(info["shards"]), world_size) if info["counts"][i] > 0]
        urls = [str(shards / info["shards"][i]) for i in mine]
        counts = [info["counts"][i] for i in mine]
        # Never more workers than shards, so no worker idles and the epoch stays exact.
        self.workers = min(cfg.workers, len(urls))
        streams = max(self.workers, 1)  # 0 workers: one stream in this process
        per_worker = [sum(counts[w::streams]) for w in range(streams)]
        self.batches = sum(-(-n // cfg.batch_size) for n in per_worker)
        stored = [info["stored"][i] for i in mine]
        self.dataset = ShardStream(urls, stored, split, cfg, workers=self.workers)

    @property
    def skipped(self) -> int:
        """Corrupt samples skipped so far by this loader's workers."""
        return int(self.dataset.skipped.sum())

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[Batch]:
        if not self.batches:
            return iter(())
        planned = self.split == "train"  # the dataset yields whole batches
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=None if planned else self.cfg.batch_size,
            num_workers=self.workers,
            collate_fn=None if planned else collate,
            pin_memory=self.cfg.device.startswith("cuda"),
            prefetch_factor=4 if self.workers else None,
            worker_init_fn=functools.partial(die_with_parent, os.getpid()),
        )
        return (b.to(self.cfg.device) for b in loader)


class SkipCounter:
    """One slot per worker in shared memory: workers count their skipped samples, the main process sums."""

    def __init__(self, workers: int):
        self.skipped = torch.zeros(max(workers, 1), dtype=torch.int64).share_memory_()

    def decoded(self, samples, wid: int, size: int, crop: int | None, rng: np.random.Generator):
        for sample in samples:
            item = decode(sample, size, crop, rng)
            if item is None:
                self.skipped[wid] += 1
            else:
                yield item


class PlannedBatches(SkipCounter, torch.utils.data.IterableDataset):
    """A rank's planned train batches; worker w decodes batches w, w + workers, ... (the DataLoader takes
    them back in that turn), each with its own crop RNG, so the batches do not depend on the worker count.
    A corrupt JPEG is skipped (its batch is one short)."""

    def __init__(self, cat: epochs.Catalogue, batches: list[np.ndarray], cfg: LoaderConfig, seed: tuple,
                 workers: int):
        super().__init__(workers)
        self.cat, self.batches, self.cfg, self.seed = cat, batches, cfg, seed

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        read = TarReader(self.cat)
        try:
            for b in range(wid, len(self.batches), nworkers):
                rng = np.random.default_rng([*self.seed, b])
                samples = (read(row) for row in self.batches[b])
                kept = list(self.decoded(samples, wid, self.cfg.resize, self.cfg.crop, rng))
                if kept:
                    yield collate(kept)
        finally:
            read.close()


class ShardStream(SkipCounter, torch.utils.data.IterableDataset):
    """A split read once in shard order (test, val): worker w reads shards w, w + workers, ..."""

    def __init__(self, urls, stored, split, cfg: LoaderConfig, workers: int):
        super().__init__(workers)
        self.urls, self.stored, self.cfg = urls, stored, cfg
        self.keep = sample_filter(split, cfg.val_fraction)

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        shards = list(zip(self.urls, self.stored, strict=True))[wid::nworkers]
        # No augmentation: the RNG is never drawn from.
        yield from self.decoded(read_shards(shards, self.keep), wid, self.cfg.test_size, None, None)


def read_shards(shards: list, keep=None):
    """Raw samples of each (url, stored count) shard in order, those whose key passes `keep` if given (all
    otherwise), each read by its offsets in one pread (the DALI index beside the tar): no tar parsing, and
    a filtered read (val: a tenth of the train shards) never reads the samples it leaves out. A missing,
    unreadable or short shard raises ShardError."""
    for url, expected in shards:
        yield from read_indexed(url, expected, keep)


def read_indexed(url: str, expected: int, keep=None):
    """The samples of one shard whose key passes `keep` (every one when None), in order, each read by its
    offsets (DALI index)."""
    try:
        indexed = index_entries(Path(url))
        entries = [epochs.parse_index_line(line) for key, line in indexed if keep is None or keep(key)]
        count = len(indexed)
        f = open(url, "rb")  # noqa: SIM115 (closed below, also when the consumer stops early)
    except (OSError, KeyError, IndexError, ValueError) as error:
        raise ShardError(f"{url}: unreadable shard or index ({type(error).__name__}: {error})") from error
    if count != expected:
        f.close()
        raise ShardError(f"{url}: {count} samples where _info.json lists {expected}; truncated shard?")
    with f:
        for key, offsets, sizes in entries:
            yield read_members(f, url, key, offsets, sizes)


def read_members(f, path: str, key: str, offsets, sizes) -> dict:
    """One sample's members (MEMBERS order) from an open tar, read in one pread across them."""
    start, end = int(offsets[0]), int(offsets[-1]) + int(sizes[-1])
    span = os.pread(f.fileno(), end - start, start)
    if len(span) != end - start:
        raise ShardError(f"{path}: sample {key} lies past the end of the tar; truncated shard?")
    members = {m: span[o - start : o - start + n]
               for m, o, n in zip(epochs.MEMBERS, offsets, sizes, strict=True)}
    return {"__key__": str(key), "__url__": path, **members}


def decode(sample: dict, size: int, crop: int | None, rng: np.random.Generator) -> dict | None:
    """A shard sample's image through the pixel transform (model/pixels.py: `load_pixels` to `size`, then
    for training `augment` to `crop`) with its labels and meta. None (with a warning) when the JPEG is
    corrupt."""
    try:
        pixels = load_pixels(sample["jpg"], size)
        meta = json.loads(sample["json"])
    except (*DECODE_ERRORS, KeyError) as error:
        warnings.warn(
            f"{sample.get('__url__')}: skipping corrupt sample {sample.get('__key__')}: {error}", stacklevel=2
        )
        return None
    if crop is not None:
        pixels = augment(pixels, crop, rng)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))),
        "labels": torch.from_numpy(np.frombuffer(sample["lbl"], "<f4").copy()),
        "difficult": torch.from_numpy(np.frombuffer(sample["dif"], np.uint8).astype(bool)),
        "id": meta["id"],
        "meta": {"width": meta["width"], "height": meta["height"], "boxes": meta.get("boxes", [])},
    }


def collate(samples: list[dict]) -> Batch:
    return Batch(
        images=torch.stack([s["image"] for s in samples]),  # uint8: normalised on the device
        labels=torch.stack([s["labels"] for s in samples]),
        difficult=torch.stack([s["difficult"] for s in samples]),
        ids=[s["id"] for s in samples],
        meta=[s["meta"] for s in samples],
    )


# --- DALI ---


class DaliLoader:
    """Train: this rank's planned batches (model/epochs.py) fed to DALI by an external source that reads
    each sample by its offset. Test and val: fn.readers.webdataset over the shards with the DALI indexes,
    split into world_size contiguous, disjoint parts. Decoding is "mixed" (nvJPEG) on a CUDA device,
    "cpu" otherwise; everything else is the same code on both."""

    def __init__(self, shards: Path, split, info, cfg: LoaderConfig, rank, world_size, epoch):
        self.split, self.cfg, self.info, self.world_size = split, cfg, info, world_size
        self.rank, self.seed = rank, cfg.seed * 1_000_003 + epoch * 1009 + rank
        if split == "train":
            cat, batches = planned_batches(shards, info, cfg, rank, world_size, epoch)
            self.source, self.batches = PlannedSource(cat, batches), len(batches)
            return
        read = [name for name, n in zip(info["shards"], info["counts"], strict=True) if n > 0]
        self.paths = [str(shards / name) for name in read]
        self.index_paths = None
        if sample_filter(split, cfg.val_fraction) is not None:
            self.index_paths = filtered_indexes(tuple(self.paths), split, cfg.val_fraction)
        n = info["count"]
        share = (rank + 1) * n // world_size - rank * n // world_size
        self.batches = -(-share // cfg.batch_size)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[Batch]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        if not self.batches:
            return iter(())
        if self.split == "train":
            pipe = dali_pipeline(self.source, True, self.cfg, self.seed)
            reader = {}  # the external source ends the epoch with StopIteration
        else:
            pipe = dali_pipeline(webdataset_reader(self.paths, self.rank, self.world_size, self.index_paths),
                                 False, self.cfg, self.seed)
            reader = {"reader_name": "reader"}
        pipe.build()
        outputs = DALIGenericIterator(pipe, ["images", "labels", "difficult", "json"], **reader,
                                      last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False)
        batches = (self.to_batch(out[0]) for out in outputs)
        return itertools.islice(batches, len(self))

    def to_batch(self, out: dict) -> Batch:
        metas = [json.loads(bytes(row.cpu().numpy()).rstrip(b"\0")) for row in out["json"]]
        return Batch(
            images=out["images"],
            labels=out["labels"].float(),
            difficult=out["difficult"].bool(),
            ids=[m["id"] for m in metas],
            meta=[{"width": m["width"], "height": m["height"], "boxes": m.get("boxes", [])} for m in metas],
        ).to(self.cfg.device)


class PlannedSource:
    """DALI external source (batch mode): batch i of a rank's plan as (jpg, lbl, dif, json) arrays."""

    def __init__(self, cat: epochs.Catalogue, batches: list[np.ndarray]):
        self.batches, self.read = batches, TarReader(cat)

    def __call__(self, info) -> tuple[list[np.ndarray], ...]:
        if info.iteration >= len(self.batches):
            self.read.close()
            raise StopIteration
        samples = [self.read(row) for row in self.batches[info.iteration]]
        dtypes = {"jpg": np.uint8, "lbl": "<f4", "dif": np.uint8, "json": np.uint8}
        return tuple([np.frombuffer(s[m], dtype).copy() for s in samples] for m, dtype in dtypes.items())


def webdataset_reader(paths: list[str], rank: int, world_size: int, index_paths: list[str] | None):
    """A function of the pipeline's graph: DALI's reader over the shards in order, padded to full batches
    (the iterator drops the padding). index_paths: None for the DALI indexes beside the tars."""
    from nvidia.dali import fn, types

    def read():
        return fn.readers.webdataset(
            paths=paths,
            index_paths=index_paths or [str(Path(p).with_suffix(".idx")) for p in paths],
            ext=["jpg", "lbl", "dif", "json"],
            dtypes=[types.UINT8, types.FLOAT, types.UINT8, types.UINT8],
            missing_component_behavior="error",
            shard_id=rank,
            num_shards=world_size,
            pad_last_batch=True,
            name="reader",
        )

    return read


@functools.lru_cache(maxsize=16)
def filtered_indexes(paths: tuple[str, ...], split: str, fraction: float) -> list[str]:
    """DALI index files listing only the split's samples of each shard (DALI reads exactly the samples
    an index lists), written once per process into a temporary folder removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="sixray-idx-"))
    atexit.register(shutil.rmtree, folder, True)
    keep = sample_filter(split, fraction)
    written = []
    for i, path in enumerate(paths):
        lines = [line for key, line in index_entries(Path(path)) if keep(key)]
        target = folder / f"{i:06d}.idx"
        target.write_text(f"v1.2 {len(lines)}\n" + "".join(line + "\n" for line in lines))
        written.append(str(target))
    return written


def dali_pipeline(source, train: bool, cfg: LoaderConfig, seed: int):
    """source: a PlannedSource (train), or a function returning the reader's (jpg, lbl, dif, json)."""
    from nvidia.dali import fn, pipeline_def, types

    gpu = cfg.device.startswith("cuda")
    device_id = (torch.device(cfg.device).index or 0) if gpu else None

    @pipeline_def(batch_size=cfg.batch_size, num_threads=max(cfg.workers, 1), device_id=device_id, seed=seed)
    def pipeline():
        if train:
            jpeg, labels, difficult, meta = fn.external_source(
                source=source, num_outputs=4, batch=True, batch_info=True,
                dtype=[types.UINT8, types.FLOAT, types.UINT8, types.UINT8])
        else:
            jpeg, labels, difficult, meta = source()
        images = fn.decoders.image(jpeg, device="mixed" if gpu else "cpu", output_type=types.RGB)
        size = cfg.resize if train else cfg.test_size
        images = fn.resize(images, resize_x=size, resize_y=size)
        normalise_args = dict(
            dtype=types.FLOAT,
            output_layout="CHW",
            mean=[m * 255 for m in IMAGENET_MEAN],
            std=[s * 255 for s in IMAGENET_STD],
        )
        if train:
            images = fn.crop_mirror_normalize(
                images,
                crop=(cfg.crop, cfg.crop),
                crop_pos_x=fn.random.uniform(range=(0.0, 1.0)),
                crop_pos_y=fn.random.uniform(range=(0.0, 1.0)),
                mirror=fn.random.coin_flip(),
                **normalise_args,
            )
        else:
            images = fn.crop_mirror_normalize(images, **normalise_args)
        # The JSON lengths differ: pad with NULs to the batch's longest so the iterator gets one tensor.
        return images, labels, difficult, fn.pad(meta, fill_value=0)

    return pipeline()
