"""Average precision, mAP and the pointing game, as the paper evaluates them.

AP is the non-interpolated average precision of scikit-learn's `average_precision_score`:
AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, tied scores forming one threshold.
Difficult samples (label 0 in the SIXray files) are left out of that class's ranking entirely.
Pointing game: a hit when the CAM's peak lies within a tolerance of one of the class's boxes: 0 pixels
(inside, the paper's text) or, as in Zhang et al.'s game that the paper follows, 15.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from base.vocabulary import ALL_CLASSES, CLASSES, normalise_class


def average_precision(scores: np.ndarray, labels: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """AP of one class: scores [N], labels [N] in {0, 1}, ignore [N] bool; nan when no positive is left."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels) > 0
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        scores, labels = scores[keep], labels[keep]
    n_pos = labels.sum()
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    # The last index of each run of tied scores is one threshold.
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(labels)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * precision))


def per_class_ap(scores: np.ndarray, labels: np.ndarray, difficult: np.ndarray) -> np.ndarray:
    """AP per class column: scores/labels/difficult [N, C]; returns [C]."""
    return np.array([average_precision(scores[:, c], labels[:, c], difficult[:, c])
                     for c in range(scores.shape[1])])


def mean_ap(aps: np.ndarray) -> float:
    """Mean over the classes that have positives (nan when none has)."""
    aps = np.asarray(aps, dtype=np.float64)
    return float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")


def class_separation(scores: np.ndarray, labels: np.ndarray, difficult: np.ndarray) -> dict:
    """Does the model tell the classes apart, or score one 'threat-ness' for all five? Among the positive
    images only: per-class AP (chance: the class's share of them), its mean, and the mean Spearman
    correlation between two classes' scores (near 1: every class ranks the positives in one order)."""
    positive = (np.asarray(labels) > 0).any(axis=1)
    scores, labels, difficult = scores[positive], labels[positive], difficult[positive]
    aps = per_class_ap(scores, labels, difficult)
    rho = np.corrcoef(scores.argsort(axis=0).argsort(axis=0).T) if len(scores) > 1 else np.ones((5, 5))
    off_diagonal = rho[~np.eye(len(rho), dtype=bool)]
    return {"count": int(positive.sum()), "ap": aps, "map": mean_ap(aps),
            "chance": (labels > 0).mean(axis=0) if len(labels) else np.full(labels.shape[1], np.nan),
            "spearman": float(np.nanmean(off_diagonal)) if np.isfinite(off_diagonal).any() else float("nan")}


def cam_peak(cams: list[torch.Tensor], width: int, height: int, fuse: str = "max") -> tuple[int, int]:
    """(x, y) pixel of the peak of [h, w] CAMs, each bilinearly upsampled to the image size.

    One CAM gives a stage's peak. Several (the fused output) are combined after upsampling, since the
    stages have different resolutions: `max` takes "the maximal response across scales" (the paper),
    `mean` the peak of their average.
    """
    up = torch.stack([F.interpolate(c[None, None].float(), size=(height, width), mode="bilinear",
                                    align_corners=False) for c in cams])
    fused = up.amax(0) if fuse == "max" else up.mean(0)
    index = int(torch.argmax(fused))
    return index % width, index // width


def box_distance(x: int, y: int, box: dict) -> float:
    """Distance in pixels from pixel (x, y)'s centre (x + 0.5, y + 0.5) to the box; 0 inside it."""
    cx, cy = x + 0.5, y + 0.5
    dx = max(box["xmin"] - cx, 0.0, cx - box["xmax"])
    dy = max(box["ymin"] - cy, 0.0, cy - box["ymax"])
    return math.hypot(dx, dy)


def box_class(box: dict) -> str | None:
    """A box's class name in our vocabulary, whether the loader gives it as a name or a class index."""
    cls = box["cls"]
    return ALL_CLASSES[cls] if isinstance(cls, int) else normalise_class(str(cls))


def pointing_counts(cams: list[torch.Tensor], labels: torch.Tensor, meta: list[dict], *, fuse: str = "max",
                    tolerances: tuple[float, ...] = (0.0,)) -> np.ndarray:
    """Pointing-game hits and misses for one batch: cams = the [B, C, h, w] maps pointed with (one stage,
    or every stage for the fused output, combined by `fuse`) -> counts [T, C, 2] (hits, misses) for each
    of the T pixel tolerances (a hit: the peak within that distance of one of the class's boxes).

    An image takes part for class c when it is labelled with c and has at least one box of c.
    """
    counts = np.zeros((len(tolerances), len(CLASSES), 2), dtype=np.int64)
    for i, info in enumerate(meta):
        classes_of_boxes = [box_class(b) for b in info.get("boxes", [])]
        for c, name in enumerate(CLASSES):
            boxes = [b for b, k in zip(info.get("boxes", []), classes_of_boxes, strict=True) if k == name]
            if labels[i, c] <= 0 or not boxes:
                continue
            x, y = cam_peak([m[i, c] for m in cams], int(info["width"]), int(info["height"]), fuse)
            distance = min(box_distance(x, y, b) for b in boxes)
            for t, tolerance in enumerate(tolerances):
                counts[t, c, 0 if distance <= tolerance else 1] += 1
    return counts


def pointing_accuracy(counts: np.ndarray) -> np.ndarray:
    """hits / (hits + misses) per class from counts [C, 2]; nan where a class has no case."""
    total = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts[:, 0] / np.maximum(total, 1), np.nan)
