"""Builds small raw datasets and their manifests directly (tiny JPEGs + a MANIFEST_SCHEMA table), so the
subset, shard and loader tests do not depend on ingest."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from base.vocabulary import ALL_CLASSES, CLASSES
from pipeline.schema import MANIFEST_SCHEMA


def jpeg_bytes(seed: int, width: int = 40, height: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def row(
    image_id: str,
    split: str = "train",
    classes=(),
    difficult=(),
    status: str = "ok",
    official=(),
    width: int = 40,
    height: int = 32,
) -> dict:
    """A manifest row; the image is written by write_dataset. Boxes: one per class, in the top-left."""
    return {
        "id": image_id,
        "split": split,
        "status": status,
        "official": list(official),
        "classes": tuple(classes),
        "difficult": list(difficult),
        "width": width,
        "height": height,
    }


def synthetic_rows(n_pos: int, n_neg: int, test_every: int = 5, seed: int = 0) -> list[dict]:
    """Positives cycling through the five classes (every third also holding the next class), negatives;
    every `test_every`-th block of five images of each kind in the test split (blocks hold every class)."""
    rows = []
    for i in range(n_pos):
        classes = {CLASSES[i % 5]} | ({CLASSES[(i + 1) % 5]} if i % 3 == 0 else set())
        rows.append(row(f"P{i + 1:05d}", "test" if (i // 5) % test_every == 0 else "train", sorted(classes)))
    for i in range(n_neg):
        rows.append(row(f"N{i + 1:07d}", "test" if (i // 5) % test_every == 0 else "train"))
    return rows


def write_dataset(root: Path, rows: list[dict], corrupt: tuple[str, ...] = ()) -> Path:
    """Write root/raw/JPEGImage/<id>.jpg and root/manifest.parquet (raw_root in its metadata).
    Ids in `corrupt` get bytes that are not a decodable JPEG (with a matching checksum)."""
    raw = root / "raw"
    (raw / "JPEGImage").mkdir(parents=True, exist_ok=True)
    records = []
    for k, r in enumerate(rows):
        data = jpeg_bytes(k, r["width"], r["height"])
        if r["id"] in corrupt:
            data = data[:200] + b"\x00" * 50
        rel = f"JPEGImage/{r['id']}.jpg"
        (raw / rel).write_bytes(data)
        records.append(
            {
                "id": r["id"],
                "path": rel,
                "bytes": len(data),
                "checksum": hashlib.sha256(data).hexdigest(),
                "mtime_ns": (raw / rel).stat().st_mtime_ns,
                "width": r["width"],
                "height": r["height"],
                "mode": "RGB",
                "phash": 0,
                **{c: int(c in r["classes"]) for c in ALL_CLASSES},
                "difficult": r["difficult"],
                "boxes": [
                    {"cls": c, "xmin": 1.0, "ymin": 2.0, "xmax": 11.5, "ymax": 12.25} for c in r["classes"]
                ],
                "official": r["official"],
                "split": r["split"],
                "status": r["status"],
                "error": None if r["status"] == "ok" else "test row",
            }
        )
    records.sort(key=lambda r: r["id"])  # a manifest is sorted by id, as ingest writes it
    table = pa.Table.from_pylist(records, schema=MANIFEST_SCHEMA)
    table = table.replace_schema_metadata({b"raw_root": str(raw.resolve()).encode()})
    (root / "manifests").mkdir(exist_ok=True)
    path = root / "manifests" / "manifest.parquet"
    pq.write_table(table, path)
    return path


def sixray10_shards(root: Path, rows: list[dict], *, shard_size: int, corrupt: tuple[str, ...] = ()) -> Path:
    """write_dataset, then build-shards --ratio 10 over it: the shard folder root/shards/sixray10."""
    from pipeline.shards import build_shards

    write_dataset(root, rows, corrupt)
    build_shards(root / "manifests", root / "shards", 10, shard_size=shard_size, workers=1)
    return root / "shards" / "sixray10"

