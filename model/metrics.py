"""Average precision, mAP and the pointing game, as the paper evaluates them.

AP is the non-interpolated average precision of scikit-learn's `average_precision_score`:
AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds, tied scores forming one threshold.
Difficult samples (label 0 in the SIXray files) are left out of that class's ranking entirely.
"""

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.classes import ALL_CLASSES, CLASSES, normalise_class


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


def cam_peak(cams: list[torch.Tensor], width: int, height: int) -> tuple[int, int]:
    """(x, y) pixel of the maximum of the mean of [h, w] CAMs, each bilinearly upsampled to the image size.

    One CAM gives a stage's peak; the stages' CAMs together give the fused peak (the mean is taken after
    upsampling, since the stages have different resolutions).
    """
    up = [F.interpolate(c[None, None].float(), size=(height, width), mode="bilinear", align_corners=False)
          for c in cams]
    index = int(torch.argmax(torch.stack(up).mean(0)))
    return index % width, index // width


def point_hits(x: int, y: int, boxes: list[dict]) -> bool:
    """Whether pixel (x, y) (its centre at x + 0.5, y + 0.5) falls inside any of the boxes."""
    cx, cy = x + 0.5, y + 0.5
    return any(b["xmin"] <= cx <= b["xmax"] and b["ymin"] <= cy <= b["ymax"] for b in boxes)


def box_class(box: dict) -> str | None:
    """A box's class name in our vocabulary, whether the loader gives it as a name or a class index."""
    cls = box["cls"]
    return ALL_CLASSES[cls] if isinstance(cls, int) else normalise_class(str(cls))


def pointing_counts(cams: list[torch.Tensor], labels: torch.Tensor, meta: list[dict]) -> np.ndarray:
    """Pointing-game hits and misses for one batch: cams = the [B, C, h, w] maps whose mean is pointed
    with (one stage, or every stage for the fused output) -> counts [C, 2] (hits, misses).

    An image takes part for class c when it is labelled with c and has at least one box of c.
    """
    counts = np.zeros((len(CLASSES), 2), dtype=np.int64)
    for i, info in enumerate(meta):
        classes_of_boxes = [box_class(b) for b in info.get("boxes", [])]
        for c, name in enumerate(CLASSES):
            boxes = [b for b, k in zip(info.get("boxes", []), classes_of_boxes, strict=True) if k == name]
            if labels[i, c] <= 0 or not boxes:
                continue
            x, y = cam_peak([m[i, c] for m in cams], int(info["width"]), int(info["height"]))
            counts[c, 0 if point_hits(x, y, boxes) else 1] += 1
    return counts


def pointing_accuracy(counts: np.ndarray) -> np.ndarray:
    """hits / (hits + misses) per class from counts [C, 2]; nan where a class has no case."""
    total = counts.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts[:, 0] / np.maximum(total, 1), np.nan)
