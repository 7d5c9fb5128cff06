"""`pipeline tip`: threat image projection, new positives made by compositing threat layers into negatives.

Each TIP scan `T0000001`.. (TIP_PREFIX + 7 digits: the release's ids are P + 5 and N + 7 digits, so none
can collide) is a negative scan of the raw folder's train split with 1 to `max_threats` threat layers
from the library (`pipeline threats`) multiplied in (physics.composite: Beer-Lambert, transmissions
multiply), each at a random position on the bag's footprint (its absorbing pixels on the attenuating
cells, not across the bag's edge on the empty belt), a random scale (its box covers an area drawn from
the real boxes of its class, the layer resized by 0.5x to 2x at most), a random rotation and a random
mirror flip. Its box is the tight box of the placed layer's absorbing pixels.

Which negatives: the usable rows of the raw folder's manifest (`pipeline ingest`, our split) with split
'train', no class present (hammer included) and no TIP id: a test-split scan is never used, and a TIP
scan is never composited again. Which threats: every layer of the library whose split is not 'test'
(`pipeline threats` takes the train split by default), of the five trained classes; each threat picks
its class uniformly, then a layer of that class, so the new positives balance the classes.

Determinism: scan i uses the negative at position (i - 1) mod n of the negatives ordered by
stable_hash(seed, 'tip-background', id), and a generator seeded by stable_hash(seed, 'tip', id) for
everything else; its bytes depend only on the seed, the negatives, the library and its number, so
`--count 2000` after `--count 1000` adds T0001001..T0002000 and keeps the first thousand.

Output (`--out`, the real layout; it may be the raw folder itself): `JPEGImage/T*.jpg` (quality 75, as
the release), `Annotation/T*.xml` (the composited boxes), `ImageSet/tip/train.csv` (the labels) and
`.tip/` (params, per-chunk markers written last, `index.parquet`: each scan's background and threats).
`pipeline ingest` gives TIP rows `source = 'tip'` and always the train split, outside the split rule,
so the real rows' split does not move.
"""

import hashlib
import io
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from base.atomic import atomic_path, locked, read_json, write_bytes_unsynced, write_json, write_parquet
from base.distribute import Chunk, mark_done, run_chunks
from base.errors import MissingInputError, UsageError
from base.hashing import content_key, stable_hash, stable_hashes
from base.vocabulary import CLASSES
from pipeline.layout import (
    ANNOTATION_DIR,
    IMAGE_DIR,
    JPEG_QUALITY,
    LABEL_DIR,
    LABEL_HEADER,
    TIP_PREFIX,
    annotation_xml,
    label_row,
    tip_id,
)
from pipeline.library import read_library
from pipeline.schema import USABLE_STATUSES
from pipeline.xray import physics
from pipeline.xray.synth import box_area

FORMAT = 3
"""Bump when a TIP scan's bytes change for the same inputs: chunk keys hold it."""
MAX_COUNT = 9_999_999
THREAT_COUNTS = {1: 0.6, 2: 0.3, 3: 0.1}
"""Threats per TIP scan (up to --max-threats; the weights of the ones allowed are renormalised)."""
SCALE_RANGE = (0.5, 2.0)
"""A layer is resized by at most this much: further would invent or lose detail."""
BOX_LEVEL = 254
"""A placed layer's pixel with a channel at or below this absorbs: the box holds every one of them."""
BAG_MARGIN = 10
"""Grey levels under the belt's (the median of the scan's border) that mark the bag."""
MASK_REDUCE = 8
PLACE_TRIES = 32
MAX_OVERLAP = 0.1
"""Boxes of one scan overlap by at most this IoU when PLACE_TRIES allow."""
MIN_INSIDE = 0.98
"""A placement is taken when this share of the layer's absorbing pixels lies on the bag (its attenuating
cells, not the empty belt) and its box overlaps no other; else the try with the most on the bag (a threat
over another beats a threat on the belt)."""
INDEX_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("background", pa.string()),  # the negative's id
        ("threats", pa.list_(pa.string())),  # '<collection>/<threat>' per box, in box order
        ("classes", pa.list_(pa.string())),
        ("boxes", pa.list_(pa.list_(pa.float32()))),  # xmin, ymin, xmax, ymax
    ]
)


# ---------------------------------------------------------------- one scan


def transform_layer(rng: np.random.Generator, layer: np.ndarray, cls: str, width: int, height: int):
    """The layer at a random scale (box area from the real boxes of `cls`, resize 0.5x..2x), mirrored
    half the time and rotated by a uniform angle, fitting in width x height: 8-bit, 255 transparent."""
    lh, lw = layer.shape[:2]
    area = box_area(rng, cls, 0.5)
    scale = float(np.clip(math.sqrt(area * width * height / (lw * lh)), *SCALE_RANGE))
    flip = -1.0 if rng.random() < 0.5 else 1.0
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    out_w, out_h = lw * abs(c) + lh * abs(s), lw * abs(s) + lh * abs(c)  # the rotated layer's extent
    scale = min(scale, 0.95 * width / out_w, 0.95 * height / out_h)
    size = (max(1, math.ceil(out_w * scale)), max(1, math.ceil(out_h * scale)))
    # one affine pass, output pixel -> layer pixel: centre, unrotate, unscale, unflip, back to the corner
    a, b = c / scale * flip, s / scale * flip
    d, e = -s / scale, c / scale
    ox, oy = size[0] / 2, size[1] / 2
    matrix = (a, b, lw / 2 - a * ox - b * oy, d, e, lh / 2 - d * ox - e * oy)
    image = Image.fromarray(layer).transform(size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR,
                                             fillcolor=(255, 255, 255))
    return np.asarray(image)


def absorbing_box(layer: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1, exclusive ends) of the layer's absorbing pixels, None if it has none."""
    absorbs = np.minimum(np.minimum(layer[..., 0], layer[..., 1]), layer[..., 2]) <= BOX_LEVEL
    rows, cols = np.flatnonzero(absorbs.any(axis=1)), np.flatnonzero(absorbs.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def bag_cells(scan: Image.Image) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The bag, not empty belt, from one pixel per MASK_REDUCE cell: a bool mask of the cells darker than
    the belt by BAG_MARGIN, and the rectangle (x0, y0, x1, y1, in pixels) of the rows and columns holding
    at least two of them. The belt's level is the median of the border cells (the belt runs along the
    edges; bags may be tinted, and edge enhancement leaves halos brighter than the belt). Every cell
    when none is (a scan that is all bag or all belt)."""
    width, height = scan.size
    cells = (-(-width // MASK_REDUCE), -(-height // MASK_REDUCE))
    sample = np.asarray(scan.resize(cells, Image.Resampling.NEAREST), dtype=np.int16)
    grey = (sample[..., 0] + sample[..., 1] + sample[..., 2]) // 3
    belt = np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]]))
    bag = grey < belt - BAG_MARGIN
    if bag.sum() < 4:
        bag[:] = True
    rows, cols = np.flatnonzero(bag.sum(axis=1) >= 2), np.flatnonzero(bag.sum(axis=0) >= 2)
    if not len(rows) or not len(cols):
        rows, cols = np.flatnonzero(bag.any(axis=1)), np.flatnonzero(bag.any(axis=0))
    rect = (int(cols[0]) * MASK_REDUCE, int(rows[0]) * MASK_REDUCE,
            min((int(cols[-1]) + 1) * MASK_REDUCE, width), min((int(rows[-1]) + 1) * MASK_REDUCE, height))
    return bag, rect


def absorbing_points(layer: np.ndarray, limit: int = 2000) -> np.ndarray:
    """(row, col) of up to `limit` of the layer's absorbing pixels, evenly taken."""
    points = np.argwhere(np.minimum(np.minimum(layer[..., 0], layer[..., 1]), layer[..., 2]) <= BOX_LEVEL)
    return points[:: max(1, len(points) // limit)]


def share_on_bag(bag: np.ndarray, points: np.ndarray, x: int, y: int) -> float:
    """The share of a layer's absorbing points that fall on bag cells when its corner is at (x, y)."""
    rows = np.minimum((points[:, 0] + y) // MASK_REDUCE, bag.shape[0] - 1)
    cols = np.minimum((points[:, 1] + x) // MASK_REDUCE, bag.shape[1] - 1)
    return float(bag[rows, cols].mean())


def _iou(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def project(rng: np.random.Generator, scan, layers: list[tuple[str, np.ndarray]]):
    """Composite the (class, layer) threats into an 8-bit RGB scan (an array or a PIL image, not
    modified): the new scan (of the same kind), one (class, xmin, ymin, xmax, ymax) box in pixels per
    threat placed, and the indices of those threats (a layer that absorbs nowhere after resampling is
    left out). Only the threats' regions become arrays: the whole scan never does (that copy would
    cost as much as compositing)."""
    as_array = isinstance(scan, np.ndarray)
    out = Image.fromarray(scan) if as_array else scan.copy()
    width, height = out.size
    mask, bag = bag_cells(out)
    cells = np.argwhere(mask)
    boxes, used = [], []
    for k, (cls, layer) in enumerate(layers):
        placed = transform_layer(rng, layer, cls, width, height)
        tight = absorbing_box(placed)
        if tight is None:
            continue
        ph, pw = placed.shape[:2]
        points = absorbing_points(placed)
        # the layer stays inside the bag's rectangle where it fits, else inside the image
        lo_x, hi_x = (bag[0], bag[2]) if bag[2] - bag[0] >= pw else (0, width)
        lo_y, hi_y = (bag[1], bag[3]) if bag[3] - bag[1] >= ph else (0, height)
        best = (-1.0, False, 0, 0)
        for _ in range(PLACE_TRIES):
            cy, cx = (cells[rng.integers(len(cells))] + rng.random(2)) * MASK_REDUCE
            x = int(np.clip(round(cx - pw / 2), lo_x, hi_x - pw))
            y = int(np.clip(round(cy - ph / 2), lo_y, hi_y - ph))
            box = (x + tight[0], y + tight[1], x + tight[2], y + tight[3])
            free = all(_iou(box, b[1:]) <= MAX_OVERLAP for b in boxes)
            on_bag = share_on_bag(mask, points, x, y)
            best = max(best, (min(on_bag, MIN_INSIDE), free, x, y))
            if free and on_bag >= MIN_INSIDE:
                break
        _, _, x, y = best
        box = (x + tight[0], y + tight[1], x + tight[2], y + tight[3])
        region = (x, y, x + pw, y + ph)
        out.paste(Image.fromarray(physics.composite(np.asarray(out.crop(region)), placed)), region)
        boxes.append((cls, *map(float, box)))
        used.append(k)
    return (np.asarray(out) if as_array else out), boxes, used


def draw_layers(rng: np.random.Generator, by_class: dict[str, list[int]], max_threats: int) -> list[int]:
    """Library rows of one scan's threats: 1..max_threats of them, each a uniform class, then a uniform
    layer of that class."""
    counts = [k for k in THREAT_COUNTS if k <= max_threats]
    weights = np.array([THREAT_COUNTS[k] for k in counts])
    n = counts[rng.choice(len(counts), p=weights / weights.sum())]
    classes = sorted(by_class, key=CLASSES.index)
    picks = []
    for _ in range(n):
        rows = by_class[classes[rng.integers(len(classes))]]
        picks.append(rows[rng.integers(len(rows))])
    return picks


# ---------------------------------------------------------------- chunks


@lru_cache(maxsize=4)
def _library(threats: str, mtime_ns: int) -> tuple[list[dict], dict[str, list[int]]]:
    """The usable library rows and the row numbers per class (cached per process: every chunk of a run
    reads the same library)."""
    rows = usable_layers(read_library(threats))
    by_class: dict[str, list[int]] = {}
    for k, r in enumerate(rows):
        by_class.setdefault(r["cls"], []).append(k)
    return rows, by_class


def usable_layers(library: pa.Table) -> list[dict]:
    """The library rows TIP may use: the five trained classes, split not 'test'."""
    return [r for r in library.select(["collection", "threat", "cls", "layer", "split"]).to_pylist()
            if r["cls"] in CLASSES and r["split"] != "test"]


@dataclass(frozen=True)
class TipChunk(Chunk):
    out: str
    raw: str
    threats: str
    ids: tuple[str, ...]
    backgrounds: tuple[tuple[str, str], ...]  # (id, path) of each TIP scan's negative
    seed: int
    max_threats: int
    library_mtime: int

    def __len__(self) -> int:
        return len(self.ids)


def tip_chunk(chunk: TipChunk) -> dict:
    """Write one chunk of TIP scans (JPEG and XML each), then its marker."""
    out, raw, threats = Path(chunk.out), Path(chunk.raw), Path(chunk.threats)
    rows, by_class = _library(str(threats), chunk.library_mtime)
    records, total = [], 0
    for image_id, (background, path) in zip(chunk.ids, chunk.backgrounds, strict=True):
        rng = np.random.default_rng(stable_hash(chunk.seed, "tip", image_id))
        picks = draw_layers(rng, by_class, chunk.max_threats)
        layers = [(rows[k]["cls"], _load_layer(threats / rows[k]["layer"])) for k in picks]
        with Image.open(raw / path) as im:  # project copies it: one copy of the scan, not two
            image, boxes, used = project(rng, im.convert("RGB") if im.mode != "RGB" else im, layers)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        write_bytes_unsynced(out / IMAGE_DIR / f"{image_id}.jpg", buffer.getvalue())
        xml = annotation_xml(image_id, image.width, image.height, boxes)
        write_bytes_unsynced(out / ANNOTATION_DIR / f"{image_id}.xml", xml.encode())
        total += buffer.tell()
        placed = [rows[picks[k]] for k in used]
        records.append({"id": image_id, "background": background,
                        "threats": [f"{r['collection']}/{r['threat']}" for r in placed],
                        "classes": [b[0] for b in boxes],
                        "boxes": [[round(c, 3) for c in b[1:]] for b in boxes]})
    mark_done(chunk, {"records": records})
    return {"count": len(records), "bytes": total}


_LAYERS: dict = {}  # path -> decoded layer, and "bytes": their total
LAYER_CACHE_BYTES = 256 * 2**20
"""Decoded layers a worker process keeps (a chunk draws from the whole library, so most repeat)."""


def _load_layer(path: Path) -> np.ndarray:
    key = str(path)
    layer = _LAYERS.get(key)
    if layer is None:
        with Image.open(path) as im:
            layer = np.asarray(im.convert("RGB"))
        if _LAYERS.get("bytes", 0) + layer.nbytes > LAYER_CACHE_BYTES:
            _LAYERS.clear()
        _LAYERS[key] = layer
        _LAYERS["bytes"] = _LAYERS.get("bytes", 0) + layer.nbytes
    return layer


def _marker(out: Path, chunk: int) -> Path:
    return out / ".tip" / f"chunk-{chunk:06d}.json"


# ---------------------------------------------------------------- inputs


def train_negatives(manifests: Path, raw: Path) -> tuple[list[str], list[str]]:
    """(ids, paths) of the manifest's usable train-split negatives that are not TIP scans, by id."""
    path = Path(manifests) / "manifest.parquet"
    if not path.exists():
        raise MissingInputError(f"{path}: no manifest; run `pipeline ingest --raw {raw} --out {manifests}` "
                                "first (TIP takes its negatives from our train split)")
    meta = pq.read_schema(path).metadata or {}
    if meta.get(b"raw_root", b"").decode() != str(raw):
        raise UsageError(f"{path} was made from {meta.get(b'raw_root', b'?').decode()}, not {raw}: run "
                         f"`pipeline ingest --raw {raw}` into the --manifests folder first")
    columns = ["id", "path", "status", "split", "hammer", *CLASSES]
    ids, paths = [], []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=columns):
        b = batch.to_pydict()
        for k, image_id in enumerate(b["id"]):
            if (b["status"][k] in USABLE_STATUSES and b["split"][k] == "train"
                    and not image_id.startswith(TIP_PREFIX)
                    and not any(b[c][k] for c in (*CLASSES, "hammer"))):
                ids.append(image_id)
                paths.append(b["path"][k])
    return ids, paths


def _digest(items) -> str:
    return hashlib.md5("\n".join(items).encode()).hexdigest()


# ---------------------------------------------------------------- the stage


def make_tip(raw, threats, out, *, count: int, manifests="manifests", seed: int = 0, max_threats: int = 3,
             chunk_size: int = 200, preview=None, workers: int | None = None, scheduler=None) -> dict:
    """Write (or finish writing) `count` TIP scans into `out`; return a summary."""
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"count must be in 1..{MAX_COUNT} (7-digit ids), got {count}")
    if not 1 <= max_threats <= max(THREAT_COUNTS):
        raise UsageError(f"max threats must be in 1..{max(THREAT_COUNTS)}, got {max_threats}")
    raw, out, threats = Path(raw).resolve(), Path(out), Path(threats)
    ids, paths = train_negatives(Path(manifests), raw)
    if not ids:
        raise UsageError(f"{manifests}: no usable train-split negative to composite into")
    layers = usable_layers(read_library(threats))
    if not layers:
        raise UsageError(f"{threats}: no usable threat layer (of {', '.join(CLASSES)}, split not test); run "
                         "`pipeline threats` first")
    order = np.argsort(stable_hashes(seed, "tip-background", ids), kind="stable")
    with locked(out, "pipeline tip"):
        refuse_foreign_scans(out, count)
        params = {"format": FORMAT, "raw": str(raw), "seed": seed, "max_threats": max_threats,
                  "negatives_md5": _digest(ids),
                  "library_md5": _digest(f"{r['collection']}/{r['threat']}" for r in layers)}
        write_json(out / ".tip" / "params.json", params)  # a record; chunk keys hold the parameters
        claim_ids(out, count)
        remove_beyond(out, count)
        library_mtime = max(p.stat().st_mtime_ns for p in threats.glob("*/index.parquet"))
        chunks, n_chunks = [], -(-count // chunk_size)
        for number in range(n_chunks):
            numbers = range(number * chunk_size + 1, min((number + 1) * chunk_size, count) + 1)
            chunk_ids = [tip_id(n) for n in numbers]
            backgrounds = [(ids[j], paths[j]) for j in (int(order[(n - 1) % len(ids)]) for n in numbers)]
            key = content_key([params, chunk_ids, backgrounds], 12)
            chunks.append(TipChunk(key, str(_marker(out, number)), str(out), str(raw), str(threats),
                                   tuple(chunk_ids), tuple(backgrounds), seed, max_threats, library_mtime))
        started = time.perf_counter()
        results, skipped = run_chunks(tip_chunk, chunks, desc="tip", workers=workers, scheduler=scheduler)
        written = sum(r["count"] for r in results)
        seconds = time.perf_counter() - started
        index = finish(out, n_chunks)
        if preview:
            contact_sheet(out, index[:16], preview)
        per_class = Counter(c for r in index for c in r["classes"])
        return {"out": str(out), "count": count, "written": written, "skipped_chunks": skipped,
                "seconds": round(seconds, 2), "scans_per_s": round(written / seconds, 1) if written else 0.0,
                "negatives": len(ids), "layers": len(layers), "boxes": {c: per_class[c] for c in CLASSES}}


def refuse_foreign_scans(out: Path, count: int) -> None:
    """UsageError naming a file of T1..T<count> that `pipeline tip` did not write (the ids an earlier run
    claimed, or that its markers list, are its own), before anything is written."""
    claimed = _claimed(out)
    listed = {r["id"] for marker in (out / ".tip").glob("chunk-*.json")
              for r in read_json(marker, "a TIP chunk's marker").get("records", [])}
    for n in range(claimed + 1, count + 1):
        image_id = tip_id(n)
        for path in (out / IMAGE_DIR / f"{image_id}.jpg", out / ANNOTATION_DIR / f"{image_id}.xml"):
            if image_id not in listed and path.exists():
                raise UsageError(f"{path} exists and `pipeline tip` did not write it; it never replaces a "
                                 "file it did not write: move it, or write the TIP scans into another --out")


def _claimed(out: Path) -> int:
    """How many TIP ids (T1..) runs into `out` have claimed: written, or about to be."""
    path = out / ".tip" / "claimed.json"
    return read_json(path, "the TIP ids claimed").get("count", 0) if path.exists() else 0


def claim_ids(out: Path, count: int) -> None:
    """Record, before any scan is written, that T1..T<count> are ours (an interrupted chunk's scans
    included), so that a rerun does not take them for a user's files."""
    if count > _claimed(out):
        write_json(out / ".tip" / "claimed.json", {"count": count})


def remove_beyond(out: Path, count: int) -> None:
    """Delete the scans numbered past `count` that earlier runs' markers list (a larger --count), before
    the markers are rewritten; markers of chunks past the last are deleted by finish."""
    for marker in sorted((out / ".tip").glob("chunk-*.json")):
        for r in json.loads(marker.read_text())["records"]:
            if int(r["id"][len(TIP_PREFIX) :]) > count:
                (out / IMAGE_DIR / f"{r['id']}.jpg").unlink(missing_ok=True)
                (out / ANNOTATION_DIR / f"{r['id']}.xml").unlink(missing_ok=True)


def finish(out: Path, n_chunks: int) -> list[dict]:
    """Delete the markers past the last chunk, then write the label file and the index from the
    markers; return the index rows."""
    for marker in sorted((out / ".tip").glob("chunk-*.json")):
        if int(marker.stem.split("-")[1]) >= n_chunks:
            marker.unlink()
    index = [r for chunk in range(n_chunks) for r in json.loads(_marker(out, chunk).read_text())["records"]]
    lines = [label_row(r["id"], r["classes"]) for r in index]
    with atomic_path(out / LABEL_DIR / "tip" / "train.csv") as tmp:
        tmp.write_text(LABEL_HEADER + "".join(lines), newline="")
    write_parquet(out / ".tip" / "index.parquet", pa.Table.from_pylist(index, schema=INDEX_SCHEMA))
    return index


# ---------------------------------------------------------------- pictures


CLASS_COLOURS = {"gun": (230, 25, 75), "knife": (245, 130, 48), "wrench": (145, 30, 180),
                 "pliers": (0, 130, 200), "scissors": (60, 180, 75), "hammer": (128, 128, 0)}


def contact_sheet(out: Path, records: list[dict], path, *, tile: int = 320, columns: int = 4) -> Path:
    """A PNG grid of the scans in `records` (index rows) with their boxes and classes drawn."""
    rows = max(1, -(-len(records) // columns))
    sheet = Image.new("RGB", (columns * tile, rows * tile), (64, 64, 64))
    for k, r in enumerate(records):
        with Image.open(Path(out) / IMAGE_DIR / f"{r['id']}.jpg") as im:
            image = im.convert("RGB")
        pen = ImageDraw.Draw(image)
        for cls, box in zip(r["classes"], r["boxes"], strict=True):
            pen.rectangle(box, outline=CLASS_COLOURS[cls], width=max(2, image.width // 200))
            pen.text((box[0] + 3, box[1] + 2), cls, fill=CLASS_COLOURS[cls])
        image.thumbnail((tile - 8, tile - 8))
        ImageDraw.Draw(image).text((4, 4), r["id"], fill=(0, 0, 0))
        sheet.paste(image, ((k % columns) * tile + 4, (k // columns) * tile + 4))
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)
