"""Read the inspectors' labels: every CSV under `ImageSet/` (union, conflicts) and `Annotation/*.xml` boxes.

The CSVs are read by duckdb, which streams and spills, so a million label rows never become Python
objects; the result is one labels Parquet row per id. XMLs are tiny and per image, so the ingest chunk
tasks parse them next to the image they belong to.
"""

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import duckdb

from pipeline.atomic import atomic_path
from pipeline.classes import ALL_CLASSES, CLASSES, normalise_class

VALID_VALUES = ("1", "0", "-1")
"""1 present, -1 absent, 0 'difficult' (present for training, ignored by AP)."""


class LabelFileError(ValueError):
    """A label file that cannot be read at all (as opposed to a bad row, which becomes a status)."""


def list_label_files(raw: Path) -> list[Path]:
    """Every CSV under ImageSet/, at any depth, in a fixed (sorted) order."""
    root = Path(raw) / "ImageSet"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".csv")


def official_name(raw: Path, csv_path: Path) -> str:
    """'ImageSet/100/test_new.csv' -> '100/test_new': the file's path under ImageSet without '.csv'."""
    return Path(csv_path).relative_to(Path(raw) / "ImageSet").with_suffix("").as_posix()


def read_header(csv_path: Path) -> list[str]:
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header or header[0].strip().lower() != "name":
        raise LabelFileError(f"{csv_path}: first header column must be 'name', got {header!r}")
    return [h.strip() for h in header]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _file_select(raw: Path, csv_path: Path) -> str:
    """One label file as rows (id, official, file, <class values as text>..., unknown)."""
    header = read_header(csv_path)
    cols = [f"c{i}" for i in range(len(header))]
    by_class, unknown = {}, []
    for col, name in zip(cols[1:], header[1:], strict=True):
        cls = normalise_class(name)
        if cls is None:
            unknown.append(f"CASE WHEN trim({col}) IN ('1', '0') THEN {_quote(name)} END")
        elif cls in by_class:
            raise LabelFileError(f"{csv_path}: class {name!r} appears twice in the header")
        else:
            by_class[cls] = col
    missing = [c.capitalize() for c in CLASSES if c not in by_class]
    if missing:
        raise LabelFileError(f"{csv_path}: header lacks the class column(s) {', '.join(missing)}")
    rel = Path(csv_path).relative_to(raw).as_posix()
    # An unknown class only matters where a row marks it present; '-1' there loses nothing.
    unknown_expr = f"concat_ws(', ', {', '.join(unknown)})" if unknown else "''"
    values = ", ".join(f"nullif(trim({by_class[c]}), '') AS {c}" if c in by_class else f"NULL AS {c}"
                       for c in ALL_CLASSES)
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in cols) + "}"
    return (
        f"SELECT regexp_replace(trim(c0), '\\.jpe?g$', '', 'i') AS id, {_quote(official_name(raw, csv_path))}"
        f" AS official, {_quote(rel)} AS file, {values}, {unknown_expr} AS unknown"
        f" FROM read_csv({_quote(str(csv_path))}, header=true, delim=',', quote='\"', null_padding=true,"
        f" columns={columns}) WHERE nullif(trim(c0), '') IS NOT NULL"
    )


def _empty_select() -> str:
    values = ", ".join(f"NULL::VARCHAR AS {c}" for c in ALL_CLASSES)
    return f"SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS official, NULL::VARCHAR AS file, {values}, " \
           "''::VARCHAR AS unknown WHERE false"


def _sorted_set(expr: str, sep: str) -> str:
    """Aggregate: the distinct non-null values of expr, sorted, joined by sep ('' if none).

    Sorting the finished list (a scalar) instead of an ordered DISTINCT aggregate keeps duckdb's
    per-group state small, so a million groups fit in a bounded memory budget.
    """
    return f"array_to_string(list_sort(list_distinct(list({expr}))), '{sep}')"


def _class_exprs(cls: str) -> dict[str, str]:
    # Valid values sort '-1' < '0' < '1' as text, so min and max name the disagreement, if any.
    agreed, name = f"min({cls}) = max({cls})", cls.capitalize()
    bad_value = f"CASE WHEN {cls} NOT IN {VALID_VALUES} THEN '''' || {cls} || ''' for {name} in ' || file END"
    return {
        "label": f"CAST(CASE WHEN {agreed} AND min({cls}) IN ('1', '0') THEN 1 "
                 f"WHEN {agreed} AND min({cls}) = '-1' THEN 0 END AS TINYINT) AS {cls}",
        "difficult": f"CASE WHEN {agreed} AND min({cls}) = '0' THEN '{cls}' END",
        "conflict": f"CASE WHEN min({cls}) <> max({cls}) THEN "
                    f"'{name} (' || min({cls}) || '/' || max({cls}) || ')' END",
        "invalid": f"nullif({_sorted_set(bad_value, ', ')}, '')",
    }


def labels_query(raw: Path, files: list[Path]) -> str:
    """SQL giving one row per labelled id: official files, class labels, difficult list, problems."""
    rows = " UNION ALL ".join(_file_select(raw, f) for f in files) if files else _empty_select()
    exprs = {c: _class_exprs(c) for c in ALL_CLASSES}
    labels = ", ".join(e["label"] for e in exprs.values())
    difficult = ", ".join(e["difficult"] for e in exprs.values())
    conflicts = ", ".join(e["conflict"] for e in exprs.values())
    invalid = ", ".join(e["invalid"] for e in exprs.values())
    unknown = _sorted_set("CASE WHEN unknown <> '' THEN unknown || ' in ' || file END", "; ")
    return f"""
        WITH rows AS ({rows}),
        per_id AS (
            SELECT id, list_sort(list_distinct(list(official))) AS official, {labels},
                   list_filter([{difficult}], lambda x: x IS NOT NULL) AS difficult,
                   concat_ws(', ', {conflicts}) AS conflicts,
                   concat_ws(', ', {invalid}) AS invalid,
                   {unknown} AS unknown,
                   {_sorted_set("file", ", ")} AS files
            FROM rows GROUP BY id
        )
        SELECT id, official, {", ".join(ALL_CLASSES)}, difficult,
               list_filter([
                   CASE WHEN conflicts <> '' THEN {{'status': 'label_conflict',
                       'error': 'label files disagree on ' || conflicts || ': ' || files}} END,
                   CASE WHEN invalid <> '' THEN {{'status': 'label_conflict',
                       'error': 'label values not 1, 0 or -1: ' || invalid}} END,
                   CASE WHEN unknown <> '' THEN {{'status': 'unknown_class',
                       'error': 'unknown class marked present: ' || unknown}} END
               ], lambda x: x IS NOT NULL) AS problems
        FROM per_id
    """


def build_labels(raw: Path, out_path: Path, *, con: duckdb.DuckDBPyConnection | None = None) -> dict:
    """Write the labels Parquet (one row per id named in any label file) atomically; return a summary."""
    raw = Path(raw).resolve()
    files = list_label_files(raw)
    con = con or duckdb.connect()
    with atomic_path(out_path) as tmp:
        con.execute(f"COPY ({labels_query(raw, files)}) TO {_quote(str(tmp))} (FORMAT parquet)")
    count = con.execute(f"SELECT count(*) FROM read_parquet({_quote(str(out_path))})").fetchall()[0][0]
    return {"label_files": [official_name(raw, f) for f in files], "labelled_ids": count}


def read_annotation(path: Path, raw: Path) -> tuple[list[dict], list[dict]]:
    """Boxes of one VOC XML and the problems found: (boxes, [{'status', 'error'}]).

    Objects with an empty name or no box are skipped (they occur in the release); a box with a class
    outside the vocabulary is dropped and reported as unknown_class; unparsable XML or coordinates
    are bad_xml.
    """
    rel = Path(path).relative_to(raw).as_posix()
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return [], [{"status": "bad_xml", "error": f"{rel}: malformed XML ({exc})"}]
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
        boxes.append({"cls": cls, **coords})
    return boxes, problems
