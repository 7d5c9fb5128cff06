"""The raw SIXray folder, defined once: what the release's download holds on disk, for every reader
(ingest, labels, threats, predict) and writer (synth, tip) of it.

    <raw>/JPEGImage/<id>.jpg      scans: positives P + 5 digits, negatives N + 7, our TIP scans T + 7
    <raw>/Annotation/<id>.xml     VOC boxes of the positives
    <raw>/ImageSet/**/<name>.csv  label files: a header `name,Gun,Knife,Wrench,Pliers,Scissors`, then
                                  one row per id: 1 present, -1 absent, 0 difficult (CRLF lines)
"""

import math
import xml.etree.ElementTree as ET
from pathlib import Path

from base.vocabulary import CLASSES, CSV_COLUMNS, normalise_class

IMAGE_DIR, ANNOTATION_DIR, LABEL_DIR = "JPEGImage", "Annotation", "ImageSet"
JPEG_SUFFIXES = (".jpg", ".jpeg")
"""A scan's file name ends in one of these (any case)."""
TIP_PREFIX = "T"
"""TIP scan ids are 'T' + 7 digits (`pipeline tip`); the release's are 'P' + 5 and 'N' + 7 digits."""
JPEG_QUALITY = 75
"""The quality our writers (`pipeline synth`, `pipeline tip`) save scans at."""
LABEL_HEADER = "name," + ",".join(CSV_COLUMNS) + "\r\n"
"""A label file's header; the release's files use CRLF."""


def positive_id(number: int) -> str:
    return f"P{number:05d}"


def negative_id(number: int) -> str:
    return f"N{number:07d}"


def tip_id(number: int) -> str:
    return f"{TIP_PREFIX}{number:07d}"


def image_id(name: str) -> str:
    """The file name before its last dot (rpartition: three times os.path.splitext's speed)."""
    return name.rpartition(".")[0]


def label_row(image_id: str, classes) -> str:
    """One label-file line: 1 for each class in `classes`, -1 for the others."""
    return f"{image_id}," + ",".join("1" if c in classes else "-1" for c in CLASSES) + "\r\n"


def list_label_files(raw: Path) -> list[Path]:
    """Every CSV under ImageSet/, at any depth, in a fixed (sorted) order."""
    root = Path(raw) / LABEL_DIR
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".csv")


def official_name(raw: Path, csv_path: Path) -> str:
    """'ImageSet/100/test_new.csv' -> '100/test_new': the file's path under ImageSet without '.csv'."""
    return Path(csv_path).relative_to(Path(raw) / LABEL_DIR).with_suffix("").as_posix()


def annotation_xml(image_id: str, width: int, height: int, boxes) -> str:
    """VOC XML laid out byte for byte like the real release's files; boxes: (class, x0, y0, x1, y1)."""
    objects = "".join(
        f"<object><name>{cls.capitalize()}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0:.3f}</xmin><ymin>{y0:.3f}</ymin>"
        f"<xmax>{x1:.3f}</xmax><ymax>{y1:.3f}</ymax></bndbox></object>\n"
        for cls, x0, y0, x1, y1 in boxes
    )
    return (
        f"<annotation><folder>{IMAGE_DIR}</folder><filename>{image_id}.jpg</filename>\n"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>\n"
        f"{objects}</annotation>\n"
    )


def read_annotation(path: Path, raw: Path) -> tuple[list[dict], list[dict]]:
    """Boxes of one VOC XML and the problems found: (boxes, [{'status', 'error'}]).

    Objects with an empty name or no box are skipped (they occur in the release); a box with a class
    outside the vocabulary is dropped and reported as unknown_class; unparsable XML or coordinates
    are bad_xml.
    """
    rel = Path(path).relative_to(raw).as_posix()
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, LookupError, ValueError, UnicodeError) as exc:  # LookupError: unknown encoding
        return [], [{"status": "bad_xml", "error": f"{rel}: malformed XML ({exc})"}]
    except OSError as exc:
        return [], [{"status": "bad_xml", "error": f"{rel}: cannot read it ({exc.strerror})"}]
    boxes, problems = [], []
    for obj in root.iter("object"):
        name, bndbox = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        if not name or bndbox is None:
            continue
        cls = normalise_class(name)
        if cls is None:
            problems.append({"status": "unknown_class", "error": f"{rel}: unknown class {name!r}"})
            continue
        try:
            coords = {k: float(bndbox.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")}
        except (TypeError, ValueError):
            error = f"{rel}: {name} box has a missing or bad coordinate"
            problems.append({"status": "bad_xml", "error": error})
            continue
        if not all(map(math.isfinite, coords.values())):  # nan, inf: never into a manifest, COCO or YOLO
            problems.append({"status": "bad_xml", "error": f"{rel}: {name} box has a non-finite coordinate"})
            continue
        boxes.append({"cls": cls, **coords})
    return boxes, problems
