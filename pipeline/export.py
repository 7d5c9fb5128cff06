"""`pipeline export`: a subset's boxes as COCO JSON or YOLO labels, for off-the-shelf detectors.

Reads `manifests/sixray<N>.parquet` (written by build-shards) a record batch at a time, so memory does
not grow with the subset; splits follow the subset manifest's split column. Layout of `<out>/`:

- coco: `train.json`, `test.json`; `file_name` is the image's path relative to the raw root (recorded
  as `info.image_root`), category ids 1..6 in ALL_CLASSES order, image and annotation ids 1.. in file
  order (the subset manifest's: split, then shard order).
- yolo: `labels/<split>/<id>.txt` (`class cx cy w h`, normalised, class 0..5 in ALL_CLASSES order;
  empty for a negative), `train.txt` / `test.txt` (absolute paths of the raw JPEGs, which are not
  copied) and `data.yaml` (written last).

Boxes are clipped to the image (real annotations overrun the edge by up to a pixel) and rounded to
1/1000 pixel, the precision of the release's XMLs; a box of zero area after clipping is dropped. Rows
with status `no_boxes` (a positive without box annotation) are left out and counted: exported as an
image without annotations they would teach a detector that the threat is background. Every file goes
out under a temporary name and is renamed into place; the same subset manifest gives the same bytes.
"""

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from base.atomic import atomic_path, writes_folder
from base.errors import DataError, MissingInputError, UsageError
from base.vocabulary import ALL_CLASSES, RATIOS
from pipeline.schema import SUBSET_SCHEMA, check_manifest
from pipeline.shards import manifest_raw_root
from pipeline.subsets import SPLITS

FORMATS = ("coco", "yolo")
SUBSETS = tuple(f"sixray{r}" for r in RATIOS)
COLUMNS = ["id", "path", "width", "height", "status", "split", "boxes"]
BATCH_ROWS = 16_384
CATEGORY_IDS = {c: k + 1 for k, c in enumerate(ALL_CLASSES)}  # COCO ids start at 1
DECIMALS = 3
COMPACT = (",", ":")


@writes_folder("out", "pipeline export")  # no legacy: an old export looks like anyone's dataset
def export_subset(manifests, out, fmt: str, subset: str = "sixray10", *, raw=None,
                  batch_rows: int = BATCH_ROWS) -> dict:
    """Export `<manifests>/<subset>.parquet` to `out` as `fmt` (coco | yolo); return per split the images,
    negatives (images without boxes), boxes per class, clipped and dropped boxes and skipped rows."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} ({' | '.join(FORMATS)})")
    if subset not in SUBSETS:
        raise UsageError(f"unknown subset {subset!r} ({' | '.join(SUBSETS)})")
    source = Path(manifests) / f"{subset}.parquet"
    if not source.exists():
        raise MissingInputError(f"{source}: no subset manifest; run `pipeline build-shards --ratio "
                                f"{subset.removeprefix('sixray')}` first")
    check_manifest(source, SUBSET_SCHEMA)
    raw_root = Path(raw).resolve() if raw else manifest_raw_root(source)
    if fmt == "yolo" and not raw_root.is_dir():
        raise UsageError(f"{raw_root}: raw root of {source} is not a folder; pass --raw DIR "
                                "(the YOLO lists hold absolute image paths)")
    out = Path(out)
    work = out / f".export-tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    writer = (CocoWriter if fmt == "coco" else YoloWriter)(out, work, raw_root, subset)
    try:
        counts = {split: new_counts() for split in SPLITS}
        for image in read_images(source, batch_rows):
            c = counts[image["split"]]
            if image["status"] == "no_boxes":
                c["skipped_unboxed"] += 1
                continue
            boxes = []
            for box in image["boxes"]:
                clipped, was_clipped = clip_box(box, image["width"], image["height"])
                if clipped is None:
                    c["dropped"] += 1
                    continue
                c["clipped"] += was_clipped
                c["boxes"][box["cls"]] += 1
                boxes.append(clipped)
            c["images"] += 1
            c["negatives"] += not image["boxes"]
            writer.add(image, boxes)
        files = writer.finish()
    finally:
        writer.close()
        shutil.rmtree(work, ignore_errors=True)
    return {"format": fmt, "subset": subset, "source": str(source), "out": str(out),
            "raw_root": str(raw_root), "files": files, **counts}


def new_counts() -> dict:
    return {"images": 0, "negatives": 0, "boxes": dict.fromkeys(ALL_CLASSES, 0), "clipped": 0,
            "dropped": 0, "skipped_unboxed": 0}


def read_images(source: Path, batch_rows: int):
    """The subset manifest's rows as dicts of COLUMNS, streamed a record batch at a time."""
    for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_rows, columns=COLUMNS):
        columns = [batch[c].to_pylist() for c in COLUMNS]
        for values in zip(*columns, strict=True):
            image = dict(zip(COLUMNS, values, strict=True))
            if image["split"] not in SPLITS:
                raise DataError(f"{source}: {image['id']} has split {image['split']!r}, not train or "
                                 "test; rerun `pipeline build-shards`")
            image["boxes"] = image["boxes"] or []
            yield image


def clip_box(box: dict, width: int, height: int) -> tuple[dict | None, bool]:
    """The box clipped to [0, width] x [0, height] and rounded to DECIMALS, and whether clipping moved
    it; None when nothing of positive area is left (outside the image, inverted or flat)."""
    x0, y0 = min(max(box["xmin"], 0.0), width), min(max(box["ymin"], 0.0), height)
    x1, y1 = min(max(box["xmax"], 0.0), width), min(max(box["ymax"], 0.0), height)
    moved = (x0, y0, x1, y1) != (box["xmin"], box["ymin"], box["xmax"], box["ymax"])
    x0, y0, x1, y1 = (round(v, DECIMALS) for v in (x0, y0, x1, y1))
    if x1 <= x0 or y1 <= y0:
        return None, moved
    return {"cls": box["cls"], "xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}, moved


def coco_bbox(box: dict) -> list[float]:
    """[x, y, w, h] of a clipped box."""
    return [box["xmin"], box["ymin"], round(box["xmax"] - box["xmin"], DECIMALS),
            round(box["ymax"] - box["ymin"], DECIMALS)]


def yolo_line(box: dict, width: int, height: int) -> str:
    """`class cx cy w h` of a clipped box, normalised by the image size, 6 decimals."""
    cx, cy = (box["xmin"] + box["xmax"]) / 2 / width, (box["ymin"] + box["ymax"]) / 2 / height
    w, h = (box["xmax"] - box["xmin"]) / width, (box["ymax"] - box["ymin"]) / height
    return f"{ALL_CLASSES.index(box['cls'])} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def write_file(path: Path, chunks) -> None:
    """Atomically write `chunks` (bytes, or open binary files copied through) to `path`, fsynced."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            if isinstance(chunk, bytes):
                f.write(chunk)
            else:
                shutil.copyfileobj(chunk, f, 2**20)
        f.flush()
        os.fsync(f.fileno())


class CocoWriter:
    """Per split, images and annotations stream into two part files; finish() joins them into one JSON."""

    def __init__(self, out: Path, work: Path, raw_root: Path, subset: str):
        self.out, self.work, self.raw_root, self.subset = out, work, raw_root, subset
        self.parts = {s: {k: open(work / f"{s}.{k}", "w+b") for k in ("images", "annotations")}
                      for s in SPLITS}
        self.next_id = {s: {"images": 1, "annotations": 1} for s in SPLITS}

    def _append(self, split: str, kind: str, entry: dict) -> None:
        f = self.parts[split][kind]
        if f.tell():
            f.write(b",\n")
        f.write(json.dumps(entry, separators=COMPACT).encode())
        self.next_id[split][kind] += 1

    def add(self, image: dict, boxes: list[dict]) -> None:
        split = image["split"]
        image_id = self.next_id[split]["images"]
        self._append(split, "images", {"id": image_id, "file_name": image["path"],
                                       "width": image["width"], "height": image["height"]})
        for box in boxes:
            bbox = coco_bbox(box)
            self._append(split, "annotations", {
                "id": self.next_id[split]["annotations"], "image_id": image_id,
                "category_id": CATEGORY_IDS[box["cls"]], "bbox": bbox,
                "area": round(bbox[2] * bbox[3], DECIMALS), "iscrowd": 0})

    def close(self) -> None:
        for parts in self.parts.values():
            for f in parts.values():
                f.close()

    def finish(self) -> list[str]:
        categories = [{"id": i, "name": c, "supercategory": "prohibited item"}
                      for c, i in CATEGORY_IDS.items()]
        files = []
        for split in SPLITS:
            info = {"description": f"{self.subset} {split} split (pipeline export), boxes clipped to the "
                                   "image", "image_root": str(self.raw_root)}
            parts = self.parts[split]
            for f in parts.values():
                f.seek(0)
            path = self.out / f"{split}.json"
            write_file(path, [
                f'{{"info":{json.dumps(info, separators=COMPACT)},\n"images":[\n'.encode(), parts["images"],
                b'\n],\n"annotations":[\n', parts["annotations"],
                f'\n],\n"categories":{json.dumps(categories, separators=COMPACT)}}}\n'.encode(),
            ])
            files.append(str(path))
        return files


class YoloWriter:
    """Label files go into a fresh folder that replaces `labels/` at the end (so labels of images no
    longer in the subset do not linger); the image lists stream into part files."""

    def __init__(self, out: Path, work: Path, raw_root: Path, subset: str):
        self.out, self.work, self.raw_root, self.subset = out, work, raw_root, subset
        self.labels = work / "labels"
        for split in SPLITS:
            (self.labels / split).mkdir(parents=True)
        self.lists = {s: open(work / f"{s}.txt", "w+b") for s in SPLITS}

    def add(self, image: dict, boxes: list[dict]) -> None:
        split = image["split"]
        text = "".join(yolo_line(b, image["width"], image["height"]) + "\n" for b in boxes)
        (self.labels / split / f"{image['id']}.txt").write_bytes(text.encode())
        self.lists[split].write(f"{self.raw_root / image['path']}\n".encode())

    def close(self) -> None:
        for f in self.lists.values():
            f.close()

    def finish(self) -> list[str]:
        labels, old = self.out / "labels", self.work / "labels-old"
        if labels.exists():
            labels.rename(old)
        self.labels.rename(labels)
        files = [str(labels)]
        for split, f in self.lists.items():
            f.seek(0)
            write_file(self.out / f"{split}.txt", [f])
            files.append(str(self.out / f"{split}.txt"))
        names = "".join(f"  {k}: {c}\n" for k, c in enumerate(ALL_CLASSES))
        yaml = (f"# pipeline export --format yolo --subset {self.subset}: labels/<split>/<id>.txt;\n"
                f"# images are not copied: the lists hold absolute paths under {self.raw_root}\n"
                f"path: {json.dumps(str(self.out.resolve()))}\ntrain: train.txt\ntest: test.txt\n"
                f"nc: {len(ALL_CLASSES)}\nnames:\n{names}")
        write_file(self.out / "data.yaml", [yaml.encode()])
        return [*files, str(self.out / "data.yaml")]
