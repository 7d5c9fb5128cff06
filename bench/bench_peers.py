"""Our shard writer and CPU loader against their peers (webdataset, MosaicML streaming, LitData, GNU tar,
torchvision ImageFolder, a bare loop), writing and reading the same JPEGs, as ratios in one run.

    bash bench/peers_setup.sh      # the peers, without downgrading numpy or replacing Pillow-SIMD
    python3 -m bench.bench_peers --work /tmp/bench-peers --positives 2000 --negatives 20000 --workers 2

Input: `pipeline synth --size-factor 0.5` scans (skipped when --work already holds a manifest of that
many rows), then `pipeline ingest` (incremental: nothing to do on a current manifest). The SIXray10
subset (every positive and 10x as many negatives) is selected once; every writer gets exactly its
files, in its order, with the same labels (float32[5]).

Writers, each with --workers processes and each ending with every file it wrote fsynced:
`pipeline build-shards` run as a user types it (the CLI in a fresh process: start-up, subset selection,
the check of each JPEG against the manifest and the extra members .dif/.json and DALI indexes included);
GNU tar (--workers tars over contiguous parts, JPEGs only); webdataset ShardWriter and MosaicML
MDSWriter (one writer per process over a contiguous part; MDS partitions merged with merge_index);
LitData optimize(num_workers=--workers).
Peers' shards hold about as many samples as ours (--shard-size).

Readers, each a full pass over every sample once, in a fresh Python process, at 1 and 2 workers (torch
DataLoader num_workers, batches of 32): ours is make_loader over the test split plus the train shards
read as split "val" with val_fraction=1.0 (every train sample held out, read once, no augmentation).
Every reader decodes with model.pixels.load_pixels(data, 224) and collates to the same batches (uint8
images [B, 3, 224, 224], float32 labels [B, 5]) as model.data.collate; the sample count and the label
sums of every reader must match.

Page cache: every run's input files (the JPEGs for the writers, ImageFolder and the bare loop; each
format's output for its reader) are evicted from it before the run (posix_fadvise DONTNEED: no root
needed, and unlike drop_caches it leaves Python and the libraries cached), so all read their input cold.
Peers' modules are imported before their timers start (MosaicML streaming's import alone takes
seconds); build-shards is timed as the CLI, its interpreter start-up and imports included.
"""

import argparse
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from base.vocabulary import CLASSES
from model.pixels import load_pixels
from pipeline.subsets import SubsetConfig, build_subset

SIZE = 224
BATCH = 32
RATIO = 10
WRITERS = ("ours", "tar", "webdataset", "mds", "litdata")
READERS = ("ours", "webdataset", "mds", "litdata", "imagefolder", "bare")
NAMES = {
    "ours": "ours",
    "tar": "GNU tar + sync (JPEGs only)",
    "webdataset": "webdataset",
    "mds": "MosaicML streaming",
    "litdata": "LitData",
    "imagefolder": "torchvision ImageFolder",
    "bare": "bare loop over the files",
}
PEERS = ("litdata", "mosaicml-streaming", "webdataset", "torch", "torchvision", "pillow-simd", "pillow")


# --- input ---


def make_input(work: Path, positives: int, negatives: int, workers: int) -> Path:
    """work/raw (synth, half size) and work/manifests (ingest), reused when the manifest has every row
    (ingest runs anyway: incremental, it does nothing on a current manifest and updates an older one)."""
    manifest = work / "manifests" / "manifest.parquet"
    common = ["--workers", str(workers)]
    if not (manifest.exists() and pq.read_metadata(manifest).num_rows == positives + negatives):
        shutil.rmtree(work / "manifests", ignore_errors=True)
        shutil.rmtree(work / "raw", ignore_errors=True)
        subprocess.run(["pipeline", "synth", "--out", str(work / "raw"), "--positives", str(positives),
                        "--negatives", str(negatives), "--size-factor", "0.5", *common], check=True)
    subprocess.run(["pipeline", "ingest", "--raw", str(work / "raw"), "--out", str(work / "manifests"),
                    *common], check=True)
    return manifest


def subset_items(work: Path, manifest: Path) -> list[tuple[str, str, bytes]]:
    """(id, absolute JPEG path, labels float32[5] little-endian) of the SIXray10 subset, in the order
    build-shards writes it (split, then its order), as `pipeline build-shards` selects it."""
    subset = work / "subset" / f"sixray{RATIO}.parquet"
    subset.parent.mkdir(parents=True, exist_ok=True)
    build_subset(manifest, subset, SubsetConfig(RATIO))
    raw = (pq.read_schema(manifest).metadata or {})[b"raw_root"].decode()
    rows = pq.read_table(subset, columns=["id", "path", *CLASSES]).to_pylist()
    return [(r["id"], os.path.join(raw, r["path"]), struct.pack("<5f", *(float(r[c] == 1) for c in CLASSES)))
            for r in rows]


def image_folder_tree(work: Path, items) -> Path:
    """work/imagefolder/<label bits>/<id>.jpg: hard links to the same JPEGs, one class folder per label
    combination (ImageFolder's target maps back to the five labels)."""
    root = work / "imagefolder"
    if root.exists() and sum(1 for _ in root.rglob("*.jpg")) == len(items):
        return root
    shutil.rmtree(root, ignore_errors=True)
    for image_id, path, lbl in items:
        folder = root / "".join(str(int(v)) for v in np.frombuffer(lbl, "<f4"))
        folder.mkdir(parents=True, exist_ok=True)
        os.link(path, folder / f"{image_id}.jpg")
    return root


# --- page cache ---


def evict(paths) -> None:
    """Drop these files' pages from the page cache (posix_fadvise DONTNEED; they are clean: inputs, or
    outputs already fsynced), so the next run reads them from disk. Python and its libraries stay cached
    for every run alike."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def sync_tree(folder: Path) -> None:
    """fsync every file under folder and every folder: the output is on disk, whoever wrote it."""
    for path in [*files_under(folder), *(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- writers: each writes items into out with `workers` processes; returns samples written ---


def parts(items: list, workers: int) -> list[list]:
    """Contiguous parts, one per process."""
    bounds = np.linspace(0, len(items), workers + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def in_processes(fn, jobs: list) -> list:
    """fn over jobs, one process each (inline when there is one job, as build-shards --workers 1 runs)."""
    if len(jobs) == 1:
        return [fn(jobs[0])]
    with ProcessPoolExecutor(len(jobs), mp_context=get_context("fork")) as pool:
        return list(pool.map(fn, jobs))


def write_ours(out: Path, items, workers: int, manifests: Path, shard_size: int, log: Path) -> int:
    cmd = ["pipeline", "build-shards", "--ratio", str(RATIO), "--manifests", str(manifests),
           "--out", str(out), "--workers", str(workers)]
    if shard_size != SubsetConfig.shard_size:
        cmd += ["--shard-size", str(shard_size)]
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    info = json.loads((out / f"sixray{RATIO}" / "_info.json").read_text())
    return info["train"]["count"] + info["test"]["count"]


def write_tar(out: Path, items, workers: int) -> int:
    jobs = []
    for k, part in enumerate(parts(items, workers)):
        listing = out.parent / f"tar-list-{k}"
        listing.write_text("".join(path + "\n" for _, path, _ in part))  # listed before, not timed: tiny
        jobs.append(["tar", "-cf", str(out / f"part-{k}.tar"), "-P", "-T", str(listing)])
    procs = [subprocess.Popen(cmd) for cmd in jobs]
    if any(p.wait() for p in procs):
        raise RuntimeError("tar failed")
    return len(items)


def wds_part(job) -> int:
    import webdataset as wds

    out, k, part, shard_size = job
    with wds.ShardWriter(f"{out}/part{k}-%06d.tar", maxcount=shard_size, verbose=0) as sink:
        for image_id, path, lbl in part:
            with open(path, "rb") as f:
                sink.write({"__key__": image_id, "jpg": f.read(), "lbl": lbl})
    return len(part)


def write_wds(out: Path, items, workers: int, shard_size: int) -> int:
    return sum(in_processes(wds_part, [(out, k, p, shard_size) for k, p in enumerate(parts(items, workers))]))


def mds_part(job) -> int:
    from streaming import MDSWriter

    out, part, shard_bytes = job
    with MDSWriter(out=str(out), columns={"jpg": "bytes", "lbl": "bytes"}, size_limit=shard_bytes) as sink:
        for _, path, lbl in part:
            with open(path, "rb") as f:
                sink.write({"jpg": f.read(), "lbl": lbl})
    return len(part)


def write_mds(out: Path, items, workers: int, shard_bytes: int) -> int:
    from streaming.base.util import merge_index

    jobs = [(out / str(k), p, shard_bytes) for k, p in enumerate(parts(items, workers))]
    written = sum(in_processes(mds_part, jobs))
    merge_index(str(out), keep_local=True)
    return written


def litdata_sample(item) -> dict:
    path, lbl = item
    with open(path, "rb") as f:
        return {"jpg": f.read(), "lbl": lbl}


def write_litdata(out: Path, items, workers: int, shard_bytes: int) -> int:
    import litdata

    litdata.optimize(fn=litdata_sample, inputs=[(path, lbl) for _, path, lbl in items], output_dir=str(out),
                     num_workers=workers, chunk_bytes=shard_bytes, verbose=False)
    return len(items)


# --- readers: each a full pass in a fresh process; returns (samples, label sums) ---


def pixels(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(load_pixels(data, SIZE).transpose(2, 0, 1)))


def labels(lbl: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(lbl, "<f4").copy())


def collate(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """What our loader's collate does to the images and the labels: stack them (uint8 images, normalised
    later on the device)."""
    images, lbls = zip(*samples, strict=True)
    return torch.stack(images), torch.stack(lbls)


def loader(dataset, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=collate,
                                       shuffle=False, prefetch_factor=4 if workers else None)


def count(batches) -> tuple[int, np.ndarray]:
    n, sums = 0, np.zeros(len(CLASSES))
    for _, lbls in batches:
        n += len(lbls)
        sums += lbls.sum(0).numpy()
    return n, sums


def read_ours(out: Path, items, workers: int):
    from model.data import LoaderConfig, make_loader

    shards, n, sums = out / f"sixray{RATIO}", 0, np.zeros(len(CLASSES))
    for split, fraction in (("test", 0.0), ("val", 1.0)):
        cfg = LoaderConfig(batch_size=BATCH, workers=workers, test_size=SIZE, val_fraction=fraction)
        k, s = count((b.images, b.labels) for b in make_loader(shards, split, cfg))
        n, sums = n + k, sums + s
    return n, sums


def wds_sample(sample: dict):
    return pixels(sample["jpg"]), labels(sample["lbl"])


def read_wds(out: Path, items, workers: int):
    import webdataset as wds

    urls = [str(p) for p in sorted(out.glob("*.tar"))]
    return count(loader(wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(wds_sample), workers))


def read_mds(out: Path, items, workers: int):
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    class Pixels(StreamingDataset):
        def __getitem__(self, idx):
            sample = super().__getitem__(idx)
            return pixels(sample["jpg"]), labels(sample["lbl"])

    clean_stale_shared_memory()
    return count(loader(Pixels(local=str(out), batch_size=BATCH, shuffle=False), workers))


def read_litdata(out: Path, items, workers: int):
    import litdata

    class Pixels(litdata.StreamingDataset):
        def __getitem__(self, index):
            sample = super().__getitem__(index)
            return pixels(sample["jpg"]), labels(sample["lbl"])

    return count(loader(Pixels(input_dir=str(out)), workers))


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_imagefolder(out: Path, items, workers: int):
    from torchvision import datasets

    classes = sorted(p.name for p in out.iterdir())
    bits = [torch.tensor([float(c) for c in name]) for name in classes]
    dataset = datasets.ImageFolder(str(out), loader=read_bytes, transform=pixels,
                                   target_transform=bits.__getitem__)
    return count(loader(dataset, workers))


def bare_part(part) -> tuple[int, np.ndarray]:
    sums = np.zeros(len(CLASSES))
    for _, path, lbl in part:
        load_pixels(read_bytes(path), SIZE)
        sums += np.frombuffer(lbl, "<f4")
    return len(part), sums


def read_bare(out: Path, items, workers: int):
    done = in_processes(bare_part, parts(items, max(workers, 1)))
    return sum(n for n, _ in done), sum(s for _, s in done)


PRELOAD = {"ours": "model.data", "webdataset": "webdataset", "mds": "streaming.base.util",
           "litdata": "litdata", "imagefolder": "torchvision.datasets", "bare": "model.pixels"}
READ = {"ours": read_ours, "webdataset": read_wds, "mds": read_mds, "litdata": read_litdata,
        "imagefolder": read_imagefolder, "bare": read_bare}


def reader_child(args) -> None:
    """--read NAME: one reader's pass in this fresh process; prints its JSON on the last line."""
    torch.set_num_threads(1)
    importlib.import_module(PRELOAD[args.read])
    items = read_items(args.work)
    start = time.perf_counter()
    n, sums = READ[args.read](Path(args.read_from), items, args.read_workers)
    seconds = time.perf_counter() - start
    print(json.dumps({"n": n, "seconds": seconds, "sums": [round(float(s)) for s in sums]}))


def read_items(work: Path):
    rows = pq.read_table(work / "subset" / "items.parquet").to_pylist()
    return [(r["id"], r["path"], r["lbl"]) for r in rows]


# --- the run ---


def versions() -> str:
    found = []
    for name in PEERS:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-peers"))
    parser.add_argument("--positives", type=int, default=2000)
    parser.add_argument("--negatives", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="writer processes")
    parser.add_argument("--read-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shard-size", type=int, default=SubsetConfig.shard_size)
    parser.add_argument("--read", choices=READERS, help=argparse.SUPPRESS)  # the reader child's own flags
    parser.add_argument("--read-from", help=argparse.SUPPRESS)
    parser.add_argument("--read-workers-child", dest="read_workers_child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        args.read_workers = args.read_workers_child
        reader_child(args)
        return

    work = args.work.resolve()
    manifest = make_input(work, args.positives, args.negatives, args.workers)
    items = subset_items(work, manifest)
    pq.write_table(pa.Table.from_pylist([{"id": i, "path": p, "lbl": lbl} for i, p, lbl in items]),
                   work / "subset" / "items.parquet")
    jpeg_bytes = sum(os.path.getsize(p) for _, p, _ in items)
    shard_bytes = int(args.shard_size * (jpeg_bytes / len(items) + 64))  # about shard-size samples a shard
    folder = image_folder_tree(work, items)
    out = work / "out"
    for module in PRELOAD.values():  # imported here, not in the timed writes (forked workers inherit them)
        importlib.import_module(module)

    writers = {
        "ours": lambda o: write_ours(o, items, args.workers, work / "manifests", args.shard_size,
                                     work / "build-shards.log"),
        "tar": lambda o: write_tar(o, items, args.workers),
        "webdataset": lambda o: write_wds(o, items, args.workers, args.shard_size),
        "mds": lambda o: write_mds(o, items, args.workers, shard_bytes),
        "litdata": lambda o: write_litdata(o, items, args.workers, shard_bytes),
    }
    wrote = {}
    for name, write in writers.items():
        target = out / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        evict(p for _, p, _ in items)
        start = time.perf_counter()
        n = write(target)
        sync_tree(target)
        wrote[name] = time.perf_counter() - start
        assert n == len(items), (name, n, len(items))
        print(f"wrote {NAMES[name]}: {wrote[name]:.2f} s", file=sys.stderr)

    sources = {"ours": out / "ours", "webdataset": out / "webdataset", "mds": out / "mds",
               "litdata": out / "litdata", "imagefolder": folder, "bare": folder}
    read, sums = {}, {}
    for workers in args.read_workers:
        for name in READERS:
            source = sources[name]
            evict(files_under(source))
            cmd = [sys.executable, "-m", "bench.bench_peers", "--work", str(work), "--read", name,
                   "--read-from", str(source), "--read-workers-child", str(workers)]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            assert result["n"] == len(items), (name, workers, result["n"], len(items))
            read[name, workers], sums[name, workers] = result["seconds"], result["sums"]
            print(f"read {NAMES[name]}, {workers} workers: {result['seconds']:.2f} s", file=sys.stderr)
    assert len({tuple(s) for s in sums.values()}) == 1, sums

    n = len(items)
    print(f"SIXray10 subset of {args.positives} positives + {args.negatives} negatives (synth --size-factor "
          f"0.5): {n} scans, {jpeg_bytes / n / 1e3:.0f} kB each, {jpeg_bytes / 1e6:.0f} MB; "
          f"{os.cpu_count()} cores")
    print("page cache: each run's input files evicted before it (cold reads); peers imported before timing")
    print(f"every reader saw {n} samples with label sums {sums[next(iter(sums))]}")
    print(f"{'':50s} {'seconds':>8s} {'images/s':>9s} {'ratio':>6s}  (peer seconds / ours: > 1 ours ahead)")
    print(f"WRITING, {args.workers} processes each, ending with fsync")
    for name in WRITERS:
        label = "ours: pipeline build-shards CLI (with start-up)" if name == "ours" else NAMES[name]
        print(f"  {label:48s} {wrote[name]:8.2f} {n / wrote[name]:9.0f} {wrote[name] / wrote['ours']:6.2f}")
    for workers in args.read_workers:
        print(f"READING every sample once, load_pixels({SIZE}), batches of {BATCH}, {workers} DataLoader "
              f"workers (bare loop: {workers} processes)")
        for name in READERS:
            label = "ours: model.data.make_loader (test + val 1.0)" if name == "ours" else NAMES[name]
            s = read[name, workers]
            print(f"  {label:48s} {s:8.2f} {n / s:9.0f} {s / read['ours', workers]:6.2f}")
    print(f"versions: {versions()}")


if __name__ == "__main__":
    main()
