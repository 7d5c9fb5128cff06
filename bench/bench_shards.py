"""build-shards throughput as a ratio to GNU tar archiving the same JPEGs (both with a warm page cache).

    python3 -m bench.bench_shards --images 3000 --work /tmp/bench-shards

Prints images/s of both and RATIO = build-shards images/s / tar images/s (goal >= 0.8). build-shards
does more than tar: it selects the subset, verifies every JPEG's sha256 against the manifest, writes the
labels, JSON, DALI index and stats, and fsyncs every shard.
"""

import argparse
import hashlib
import io
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from base.vocabulary import ALL_CLASSES, CLASSES
from pipeline.schema import MANIFEST_SCHEMA
from pipeline.shards import build_shards


def scan_like_jpeg(rng: np.random.Generator, width: int = 632, height: int = 571) -> bytes:
    """A bag-like scan at the real median size: bright background, smooth blobs and some noise, so the
    JPEG's size and decoding cost resemble a real scan's rather than a flat image's."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.full((height, width, 3), 245, np.float32)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 160)
        blob = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))[..., None]
        image -= blob * rng.uniform(40, 200, 3)
    image += rng.normal(0, 6, image.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_dataset(root: Path, n: int, positive_share: float = 0.5) -> Path:
    """root/raw/JPEGImage + root/manifests/manifest.parquet for n images (reused when present)."""
    manifest = root / "manifests" / "manifest.parquet"
    if manifest.exists() and pq.read_metadata(manifest).num_rows == n:
        write_sorted(pq.read_table(manifest), manifest)  # folders made before manifests had to be sorted
        return manifest
    rng = np.random.default_rng(0)
    (root / "raw" / "JPEGImage").mkdir(parents=True, exist_ok=True)
    records = []
    for k in range(n):
        positive = k < n * positive_share
        image_id = f"P{k + 1:05d}" if positive else f"N{k + 1:07d}"
        data = scan_like_jpeg(rng)
        (root / "raw" / "JPEGImage" / f"{image_id}.jpg").write_bytes(data)
        cls = CLASSES[k % 5] if positive else None
        records.append(
            {
                "id": image_id,
                "path": f"JPEGImage/{image_id}.jpg",
                "bytes": len(data),
                "checksum": hashlib.sha256(data).hexdigest(),
                "width": 632,
                "height": 571,
                "mode": "RGB",
                "phash": 0,
                **{c: int(c == cls) for c in ALL_CLASSES},
                "difficult": [],
                "boxes": [{"cls": cls, "xmin": 10.0, "ymin": 10.0, "xmax": 90.0, "ymax": 90.0}]
                if cls
                else [],
                "official": [],
                "split": "test" if k % 5 == 0 else "train",
                "status": "ok",
                "error": None,
            }
        )
    table = pa.Table.from_pylist(records, schema=MANIFEST_SCHEMA)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    raw_root = str((root / "raw").resolve()).encode()
    write_sorted(table.replace_schema_metadata({b"raw_root": raw_root}), manifest)
    return manifest


def write_sorted(table: pa.Table, manifest: Path) -> None:
    """The manifest sorted by id, as ingest writes it (build-shards refuses another order)."""
    pq.write_table(table.sort_by("id"), manifest)


def warm(folder: Path) -> None:
    for path in folder.rglob("*.jpg"):
        path.read_bytes()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-shards"))
    parser.add_argument("--shard-size", type=int, default=1000)
    args = parser.parse_args()
    manifest = make_dataset(args.work, args.images)
    raw = args.work / "raw"
    warm(raw)
    total_bytes = sum(p.stat().st_size for p in raw.rglob("*.jpg"))

    tar_out = args.work / "gnu.tar"
    start = time.perf_counter()
    subprocess.run(["tar", "-cf", str(tar_out), "-C", str(raw), "JPEGImage"], check=True)
    tar_nosync_seconds = time.perf_counter() - start
    subprocess.run(
        ["sync", str(tar_out)], check=True
    )  # build-shards fsyncs its shards: compare durable writes
    tar_seconds = time.perf_counter() - start

    shutil.rmtree(args.work / "shards", ignore_errors=True)
    start = time.perf_counter()
    # SIXray1000 with every positive: the subset is the whole dataset, so both tools write the same JPEGs.
    result = build_shards(
        manifest.parent,
        args.work / "shards",
        1000,
        shard_size=args.shard_size,
        positives_per_class=args.images,
    )
    build_seconds = time.perf_counter() - start
    written = result["train"]["count"] + result["test"]["count"]
    assert written == args.images, written

    print(f"{args.images} JPEGs, {total_bytes / args.images / 1e3:.0f} kB each, {total_bytes / 1e6:.0f} MB")
    print(
        f"GNU tar:       {args.images / tar_seconds:8.0f} images/s ({tar_seconds:.2f} s incl. sync; "
        f"{tar_nosync_seconds:.2f} s into the page cache only)"
    )
    shards = result["shards"]
    print(
        f"build-shards:  {args.images / build_seconds:8.0f} images/s ({build_seconds:.2f} s, {shards} shards)"
    )
    print(f"RATIO build-shards / GNU tar+sync throughput: {tar_seconds / build_seconds:.2f}")
    print(
        f"RATIO build-shards / GNU tar (page cache only) throughput: {tar_nosync_seconds / build_seconds:.2f}"
    )


if __name__ == "__main__":
    main()
