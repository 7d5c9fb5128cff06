"""Alarm thresholds: per class, the fused score at which a scan alarms, chosen on the val split to reach a
target recall, and what it costs on the test split (recall, precision, false alarms per 1,000 bags).

A class's threshold is the highest score that still puts `target` of the val split's positives at or
above it (difficult labels left out, as AP leaves them out), so false alarms are as few as that recall
allows; a scan alarms for the class when its fused score is >= the threshold. A class with no positive
in the val split gets no threshold (null in thresholds.json, and `model predict` leaves its alarm column
null). `thresholds.json` is written by `model eval` next to its report and by `model train` into the run
folder (for best.pt); `model predict` finds it next to the checkpoint (`find_thresholds`).
"""

import json
import math
from pathlib import Path

import numpy as np

from base.atomic import write_json
from base.errors import DataError, MissingInputError
from base.vocabulary import CLASSES

DEFAULT_TARGET_RECALL = 0.9
THRESHOLDS_FILE = "thresholds.json"
ANY = "any"
"""The bag-level row: a bag alarms when any class alarms; its negatives are bags with no threat at all."""


def threshold_for_recall(scores: np.ndarray, positive: np.ndarray, target: float) -> float | None:
    """The highest score t with recall(score >= t) >= target over the positives; None without positives."""
    pos = np.sort(np.asarray(scores)[np.asarray(positive, bool)])[::-1]
    if len(pos) == 0:
        return None
    k = max(1, math.ceil(target * len(pos) - 1e-9))  # positives that must alarm
    return float(pos[k - 1])


def _masks(labels: np.ndarray, difficult: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    counted = ~difficult[:, c].astype(bool)
    present = labels[:, c] > 0
    return present & counted, ~present & counted


def fit_thresholds(pred: dict, target: float) -> dict:
    """{class: {"threshold", "positives", "recall"}} fitted on a val split's predictions (inference)."""
    scores = pred["scores"]["fused"]
    fitted = {}
    for c, name in enumerate(CLASSES):
        pos, _ = _masks(pred["labels"], pred["difficult"], c)
        t = threshold_for_recall(scores[:, c], pos, target)
        recall = None if t is None else float((scores[pos, c] >= t).mean())
        fitted[name] = {"threshold": t, "positives": int(pos.sum()), "recall": recall}
        if t is None:
            fitted[name]["note"] = "no positive in the val split: no threshold"
    return fitted


def alarm_stats(alarm: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> dict:
    """Recall, precision and false alarms per 1,000 negatives of boolean alarms (None where undefined)."""
    tp, fp = int((alarm & positive).sum()), int((alarm & negative).sum())
    n_pos, n_neg = int(positive.sum()), int(negative.sum())
    return {"positives": n_pos, "negatives": n_neg, "alarms": tp + fp, "false_alarms": fp,
            "recall": tp / n_pos if n_pos else None, "precision": tp / (tp + fp) if tp + fp else None,
            "false_alarms_per_1000": 1000 * fp / n_neg if n_neg else None}


def alarms(scores: np.ndarray, thresholds: dict) -> np.ndarray:
    """Boolean [N, C] alarms; a class without a threshold never alarms."""
    limits = np.array([np.inf if thresholds.get(c) is None else thresholds[c] for c in CLASSES])
    return scores >= limits


def alarm_report(pred: dict, thresholds: dict) -> dict:
    """Per class and for the whole bag (`any`), the alarms' recall, precision and false alarms per 1,000
    negative bags on `pred` (the test split's predictions) at `thresholds` ({class: float | None})."""
    labels, difficult = pred["labels"], pred["difficult"]
    fired = alarms(pred["scores"]["fused"], thresholds)
    report = {name: alarm_stats(fired[:, c], *_masks(labels, difficult, c)) for c, name in enumerate(CLASSES)}
    threat = labels.max(axis=1) > 0 if len(labels) else np.zeros(0, bool)
    report[ANY] = alarm_stats(fired.any(axis=1), threat, ~threat)
    return report


def thresholds_document(fitted: dict, target: float, *, checkpoint: Path, epoch: int, val_count: int,
                        val_fraction: float, held_out: bool) -> dict:
    """What thresholds.json holds: the thresholds with how and on what they were chosen."""
    return {"target_recall": target, "split": "val", "val_count": val_count, "val_fraction": val_fraction,
            "held_out": held_out, "checkpoint": {"file": Path(checkpoint).name, "epoch": epoch},
            "classes": fitted}


def write_thresholds(folder: Path, document: dict) -> Path:
    path = Path(folder) / THRESHOLDS_FILE
    write_json(path, document)
    return path


def read_thresholds(path: str | Path) -> dict:
    """{class: float | None} from a thresholds.json, or from a plain {"gun": 0.4, ...} file (classes left
    out get no threshold)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path}: no such thresholds file (written by `model eval` / `model train`)")
    try:
        doc = json.loads(path.read_text())
        entries = doc.get("classes", doc)
        return {c: _threshold(entries.get(c)) for c in CLASSES}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DataError(f"{path}: not a thresholds file ({type(exc).__name__}: {exc})") from exc


def _threshold(entry) -> float | None:
    if isinstance(entry, dict):
        entry = entry["threshold"]
    return None if entry is None else float(entry)


def find_thresholds(checkpoint: str | Path, epoch: int) -> Path | None:
    """The thresholds.json written for this checkpoint file and epoch: `model eval`'s default report
    folder (<checkpoint folder>/eval) first, then the run folder (`model train`'s, for best.pt)."""
    folder = Path(checkpoint).parent
    for path in (folder / "eval" / THRESHOLDS_FILE, folder / THRESHOLDS_FILE):
        try:
            made_for = json.loads(path.read_text()).get("checkpoint", {})
        except (OSError, ValueError, AttributeError):
            continue
        if made_for == {"file": Path(checkpoint).name, "epoch": epoch}:
            return path
    return None


def alarm_summary(document: dict, pred: dict) -> dict:
    """The report's `alarms` entry: thresholds.json's document plus how the thresholds do on `pred`."""
    thresholds = {c: v["threshold"] for c, v in document["classes"].items()}
    return {**document, "test": alarm_report(pred, thresholds)}


def checkpoint_thresholds(checkpoint, epoch: int, override=None) -> tuple[dict | None, str | None]:
    """(thresholds {class: float | None}, the file they come from): `override` when given, else the
    thresholds.json found for the checkpoint (`find_thresholds`), else (None, None)."""
    path = Path(override) if override else find_thresholds(checkpoint, epoch)
    return (read_thresholds(path), str(path)) if path else (None, None)
