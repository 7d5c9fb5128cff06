"""`pipeline synth`: write a SIXray-like raw dataset in exactly the real download's layout.

<out>/JPEGImage/<id>.jpg        positives P00001.. (5 digits), negatives N0000001.. (7 digits)
<out>/Annotation/<id>.xml       VOC boxes for every positive (Hammer boxes appear only here)
<out>/ImageSet/{10,100,1000}/{train,test}.csv   name,Gun,Knife,Wrench,Pliers,Scissors with 1/-1

Every image is a pure function of (seed, id, size factor, difficulty): its generator is seeded from
stable_hash(seed, id), so the bytes do not depend on chunking, workers or order. Images are written in
chunks of ids, one task per chunk on every core (or a Dask cluster); a chunk's marker JSON under
<out>/.synth/ is written last, so a rerun skips finished chunks and redoes interrupted ones. The label
files are rebuilt at the end from the ids and the seed alone.
"""

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base.atomic import atomic_path, write_bytes_unsynced, writes_folder
from base.distribute import Chunk, claim, mark_done, run_chunks
from base.errors import UsageError
from base.hashing import content_key, stable_hash
from base.vocabulary import CLASSES, RATIOS, RELEASE_NEGATIVES, RELEASE_POSITIVES
from pipeline.layout import (
    ANNOTATION_DIR,
    IMAGE_DIR,
    JPEG_QUALITY,
    LABEL_DIR,
    LABEL_HEADER,
    annotation_xml,
    label_row,
    negative_id,
    positive_id,
)
from pipeline.xray import real_stats as stats
from pipeline.xray.render import render_scan

TEST_SHARE = 0.2
"""The share of the positives (within each label combination) and of the negatives that the generated
label files list as test: the release's 80/20."""
MIN_SIDE = 32
"""The smallest image side drawn, in pixels, whatever the size factor."""


def image_rng(seed: int, salt: str, image_id: str) -> np.random.Generator:
    return np.random.default_rng(stable_hash(seed, salt, image_id))


# ---------------------------------------------------------------- per-image draws


def draw_threats(rng: np.random.Generator, difficulty: float) -> list[tuple[str, float]]:
    """One positive's boxes to draw: (class, box area fraction) pairs, from the real statistics.

    The class set comes first, from the real combinations, so labels do not depend on difficulty."""
    combos = list(stats.CLASS_COMBINATIONS)
    weights = np.array(list(stats.CLASS_COMBINATIONS.values()), dtype=np.float64)
    classes = list(combos[rng.choice(len(combos), p=weights / weights.sum())])
    if rng.random() < stats.HAMMER_SHARE:
        classes.append("hammer")
    threats = []
    for cls in classes:
        counts = stats.BOXES_PER_CLASS[cls]
        k = list(counts)[rng.choice(len(counts), p=np.array(list(counts.values())) / sum(counts.values()))]
        threats += [(cls, box_area(rng, cls, difficulty)) for _ in range(k)]
    return threats


def box_area(rng: np.random.Generator, cls: str, difficulty: float) -> float:
    """Inverse-CDF draw from the class's real box-area quantiles; difficulty above 0.5 skews it small.

    At difficulty 0.5 the draw follows the real distribution; the exponent 4**(difficulty-0.5) pushes
    the quantile level toward 0 (smaller boxes) for harder data and toward 1 for easier data."""
    level = rng.random() ** (4.0 ** (difficulty - 0.5))
    return float(np.interp(level, stats.QUANTILE_LEVELS, stats.BOX_AREA_QUANTILES[cls]))


def image_size(rng: np.random.Generator, size_factor: float) -> tuple[int, int]:
    """(width, height) from the real marginals, tied by a Gaussian copula with the real log correlation."""
    z1, z2 = rng.standard_normal(2)
    z2 = stats.LOG_SIZE_CORRELATION * z1 + math.sqrt(1 - stats.LOG_SIZE_CORRELATION**2) * z2
    sides = []
    for z, table in ((z1, stats.WIDTH_QUANTILES), (z2, stats.HEIGHT_QUANTILES)):
        level = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        sides.append(
            max(MIN_SIDE, round(float(np.interp(level, stats.QUANTILE_LEVELS, table)) * size_factor))
        )
    return sides[0], sides[1]


def positive_classes(seed: int, image_id: str) -> set[str]:
    """The trained classes of a positive, as its label-file row states them (cheap: no rendering)."""
    return {cls for cls, _ in draw_threats(image_rng(seed, "synth-labels", image_id), 0.5)} & set(CLASSES)


def render_image(seed: int, image_id: str, size_factor: float, difficulty: float):
    """JPEG bytes and, for a positive, the annotation XML of one synthetic scan."""
    rng = image_rng(seed, "synth-scan", image_id)
    width, height = image_size(rng, size_factor)
    positive = image_id.startswith("P")
    threats = draw_threats(image_rng(seed, "synth-labels", image_id), difficulty) if positive else []
    image, boxes = render_scan(rng, width, height, threats, difficulty)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), (annotation_xml(image_id, width, height, boxes) if positive else None)


# ---------------------------------------------------------------- chunks of images


@dataclass(frozen=True)
class GeneratorChunk(Chunk):
    """Ids for the generator to draw (scans here, threats alone in xray/alone.py) with its settings."""

    out: str
    ids: tuple[str, ...]
    seed: int
    size_factor: float
    difficulty: float

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class SynthChunk(GeneratorChunk):
    number: int  # the marker's name


def write_chunk(chunk: SynthChunk) -> dict:
    """Render and write one chunk of ids, then its marker (written last: the chunk is done)."""
    out = Path(chunk.out)
    total = 0
    for image_id in chunk.ids:
        jpeg, xml = render_image(chunk.seed, image_id, chunk.size_factor, chunk.difficulty)
        write_bytes_unsynced(out / IMAGE_DIR / f"{image_id}.jpg", jpeg)
        if xml is not None:
            write_bytes_unsynced(out / ANNOTATION_DIR / f"{image_id}.xml", xml.encode())
        total += len(jpeg)
    summary = {"chunk": chunk.number, "count": len(chunk.ids), "bytes": total}
    mark_done(chunk, {**summary, "first": chunk.ids[0], "last": chunk.ids[-1]})
    return summary


def plan_chunks(out: Path, positives: int, negatives: int, *, chunk_size: int, seed: int, size_factor: float,
                difficulty: float) -> list[SynthChunk]:
    """Every chunk, numbered: positives first, then negatives; the marker is `.synth/chunk-<number>.json`."""
    groups = ([positive_id(i) for i in range(1, positives + 1)],
              [negative_id(i) for i in range(1, negatives + 1)])
    ranges = [group[start : start + chunk_size] for group in groups
              for start in range(0, len(group), chunk_size)]
    return [SynthChunk(content_key(["synth", seed, size_factor, difficulty, ids], 12),
                       str(out / ".synth" / f"chunk-{number:06d}.json"), str(out), tuple(ids), seed,
                       size_factor, difficulty, number)
            for number, ids in enumerate(ranges)]


# ---------------------------------------------------------------- label files


def write_label_files(out: Path, seed: int, positives: int, negatives: int) -> dict:
    """ImageSet/{10,100,1000}/{train,test}.csv; returns {subset: {split: rows}}."""
    pos_ids = [positive_id(i) for i in range(1, positives + 1)]
    labels = {i: positive_classes(seed, i) for i in pos_ids}
    neg_rank = _rank(seed, "synth-negatives", negatives, negative_id)
    counts = {}
    for ratio in RATIOS:
        members = _subset(ratio, seed, pos_ids, labels, neg_rank)
        test = _test_members(seed, members, labels)
        counts[ratio] = _write_subset(out / LABEL_DIR / str(ratio), members, labels, test)
    return counts


def _rank(seed: int, salt: str, n: int, make_id) -> np.ndarray:
    """Position of each of the n ids (by number) in the order of their stable hashes."""
    hashes = np.fromiter((stable_hash(seed, salt, make_id(i)) for i in range(1, n + 1)), np.uint64, count=n)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(hashes, kind="stable")] = np.arange(n)
    return rank


def _subset(ratio: int, seed: int, pos_ids, labels, neg_rank) -> dict:
    """{'positives': ids, 'negatives': boolean mask over negative numbers} of one subset.

    SIXray10/100 keep every positive and the ratio x as many negatives (lowest hash ranks, so 10 is
    inside 100); SIXray1000 keeps up to 1,000 positives per class and every negative."""
    n_neg = len(neg_rank)
    if ratio == 1000:
        keep = set()
        for cls in CLASSES:
            having = sorted(
                (i for i in pos_ids if cls in labels[i]), key=lambda i: stable_hash(seed, "synth-1000", i)
            )
            keep.update(having[:1000])
        return {"positives": [i for i in pos_ids if i in keep], "negatives": np.ones(n_neg, dtype=bool)}
    return {"positives": pos_ids, "negatives": neg_rank < min(n_neg, ratio * len(pos_ids))}


def _test_members(seed: int, members: dict, labels) -> set:
    """Exactly 20% (rounded) of each label combination goes to test, by rank of a split hash."""
    groups: dict = {}
    for i in members["positives"]:
        groups.setdefault(tuple(sorted(labels[i])), []).append(i)
    test = set()
    for ids in groups.values():
        ids.sort(key=lambda i: stable_hash(seed, "synth-split", i))
        test.update(ids[: round(TEST_SHARE * len(ids))])
    numbers = np.flatnonzero(members["negatives"]) + 1
    hashes = np.fromiter(
        (stable_hash(seed, "synth-split", negative_id(int(n))) for n in numbers),
        np.uint64,
        count=len(numbers),
    )
    chosen = numbers[np.argsort(hashes, kind="stable")[: round(TEST_SHARE * len(numbers))]]
    test.update(negative_id(int(n)) for n in chosen)
    return test


def _write_subset(folder: Path, members: dict, labels, test: set) -> dict:
    """Stream the rows (positives, then negatives, in id order) into train.csv and test.csv."""
    negative_row = ",".join(["-1"] * len(CLASSES))
    counts = {"train": 0, "test": 0}
    with atomic_path(folder / "train.csv") as train_tmp, atomic_path(folder / "test.csv") as test_tmp:
        with open(train_tmp, "w", newline="") as train, open(test_tmp, "w", newline="") as test_file:
            files = {"train": train, "test": test_file}
            for f in files.values():
                f.write(LABEL_HEADER)
            for i in members["positives"]:
                split = "test" if i in test else "train"
                files[split].write(label_row(i, labels[i]))
                counts[split] += 1
            for n in np.flatnonzero(members["negatives"]) + 1:
                image_id = negative_id(int(n))
                split = "test" if image_id in test else "train"
                files[split].write(f"{image_id},{negative_row}\r\n")
                counts[split] += 1
    return counts


# ---------------------------------------------------------------- the stage


@writes_folder("out", "pipeline synth", ours=(".synth",))
def synthesize(
    out,
    *,
    positives: int = RELEASE_POSITIVES,
    negatives: int = RELEASE_NEGATIVES,
    size_factor: float = 1.0,
    difficulty: float = 0.5,
    seed: int = 0,
    chunk_size: int = 200,
    workers: int | None = None,
    scheduler=None,
) -> dict:
    """Write (or finish writing) a synthetic SIXray raw dataset under `out`; return a summary."""
    _check(positives, negatives, size_factor, difficulty, chunk_size)
    out = Path(out)
    params = {
        "positives": positives,
        "negatives": negatives,
        "size_factor": size_factor,
        "difficulty": difficulty,
        "seed": seed,
        "chunk_size": chunk_size,
    }
    claim(out / ".synth" / "params.json", params, "use a new --out (mixing them would mix two datasets)")
    chunks = plan_chunks(out, positives, negatives, chunk_size=chunk_size, seed=seed, size_factor=size_factor,
                         difficulty=difficulty)
    started = time.perf_counter()
    results, skipped = run_chunks(write_chunk, chunks, desc="synth", workers=workers, scheduler=scheduler)
    written = sum(r["count"] for r in results)
    seconds = time.perf_counter() - started
    subsets = write_label_files(out, seed, positives, negatives)
    return {
        "out": str(out),
        "positives": positives,
        "negatives": negatives,
        "written": written,
        "skipped_chunks": skipped,
        "seconds": round(seconds, 2),
        "images_per_s": round(written / seconds, 1) if written else 0.0,
        "subsets": subsets,
    }


def _check(positives, negatives, size_factor, difficulty, chunk_size):
    if not 0 <= positives <= 99_999:
        raise UsageError(f"positives must be in 0..99999 (5-digit ids), got {positives}")
    if not 0 <= negatives <= 9_999_999:
        raise UsageError(f"negatives must be in 0..9999999 (7-digit ids), got {negatives}")
    if positives + negatives == 0:
        raise UsageError("nothing to write: positives and negatives are both 0")
    if not 0 < size_factor <= 4:
        raise UsageError(f"size factor must be in (0, 4], got {size_factor}")
    if not 0 <= difficulty <= 1:
        raise UsageError(f"difficulty must be in [0, 1], got {difficulty}")
    if chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, got {chunk_size}")
