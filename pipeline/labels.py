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


def _file_select(raw: Path, csv_path: Path, index: int) -> str:
    """One label file as rows (id, k: the file's index, file, <class values as text>..., unknown)."""
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
        f"SELECT regexp_replace(trim(c0), '\\.jpe?g$', '', 'i') AS id, {index} AS k, {_quote(rel)} AS file,"
        f" {values}, {unknown_expr} AS unknown"
        f" FROM read_csv({_quote(str(csv_path))}, header=true, delim=',', quote='\"', null_padding=true,"
        f" columns={columns}) WHERE nullif(trim(c0), '') IS NOT NULL"
    )


def _empty_select() -> str:
    values = ", ".join(f"NULL::VARCHAR AS {c}" for c in ALL_CLASSES)
    return f"SELECT NULL::VARCHAR AS id, 0 AS k, NULL::VARCHAR AS file, {values}, ''::VARCHAR AS unknown " \
           "WHERE false"


def _sorted_set(expr: str, sep: str) -> str:
    """Aggregate: the distinct non-null values of expr, sorted, joined by sep ('' if none)."""
    return f"array_to_string(list_sort(list_distinct(list({expr}))), '{sep}')"


MASK_BITS = 64
"""Label files per UBIGINT mask: an id's label files are bits of fixed-size aggregate states."""


def _file_masks(n_files: int) -> str:
    """Aggregates mask0, mask1, ...: bit k % 64 of mask k // 64 is set where the id is in file k."""
    bit = f"1::UBIGINT << (k % {MASK_BITS})"
    return ", ".join(f"coalesce(bit_or({bit}) FILTER (WHERE k // {MASK_BITS} = {j}), 0) AS mask{j}"
                     for j in range(max(1, -(-n_files // MASK_BITS))))


def _in_files(items: list[str]) -> str:
    """List expression: the sorted distinct items[k] whose file k has the id (its mask bit is set)."""
    picked = ", ".join(f"CASE WHEN (mask{k // MASK_BITS} >> {k % MASK_BITS}) & 1 = 1 THEN {_quote(item)} END"
                       for k, item in enumerate(items))
    return f"list_sort(list_distinct(list_filter([{picked}]::VARCHAR[], lambda x: x IS NOT NULL)))"


def _class_states(cls: str) -> str:
    """Per-id aggregates of one class, all fixed-size so duckdb can spill them: the lowest and highest
    valid value as -1/0/1, and whether any value is not 1, 0 or -1."""
    code = f"CAST(CASE {cls} WHEN '1' THEN 1 WHEN '0' THEN 0 WHEN '-1' THEN -1 END AS TINYINT)"
    return (f"min({code}) AS {cls}_lo, max({code}) AS {cls}_hi, "
            f"coalesce(bool_or({cls} NOT IN {VALID_VALUES}), false) AS {cls}_bad")


def _class_outputs(cls: str) -> dict[str, str]:
    """Label, difficult mark and conflict of one class from its states; an invalid value leaves the
    label unknown (null), as a disagreement does."""
    agreed, name = f"NOT {cls}_bad AND {cls}_lo = {cls}_hi", cls.capitalize()
    return {
        "label": f"CAST(CASE WHEN {agreed} THEN {cls}_lo >= 0 END AS TINYINT) AS {cls}",
        "difficult": f"CASE WHEN {agreed} AND {cls}_lo = 0 THEN '{cls}' END",
        "conflict": f"CASE WHEN {cls}_lo <> {cls}_hi THEN "
                    f"'{name} (' || {cls}_lo || '/' || {cls}_hi || ')' END",
    }


def _rare_exprs(cls: str) -> dict[str, str]:
    """Aggregates over one class's text values, for the few ids holding an invalid value: the
    disagreement as written (invalid values included) and the invalid values with their file."""
    name = cls.capitalize()
    bad_value = f"CASE WHEN {cls} NOT IN {VALID_VALUES} THEN '''' || {cls} || ''' for {name} in ' || file END"
    return {
        "conflict": f"CASE WHEN min({cls}) <> max({cls}) THEN "
                    f"'{name} (' || min({cls}) || '/' || max({cls}) || ')' END",
        "invalid": f"nullif({_sorted_set(bad_value, ', ')}, '')",
    }


def labels_query(raw: Path, files: list[Path]) -> str:
    """SQL giving one row per labelled id, sorted by id: official files, class labels, difficult list,
    problems.

    The million-group aggregation keeps only fixed-size states (file bit masks, min/max codes, flags),
    which duckdb spills under its memory limit; list states cannot spill, so the messages about
    invalid values and unknown classes are aggregated apart over the few ids that have them.
    """
    selects = [_file_select(raw, f, k) for k, f in enumerate(files)]
    rows = " UNION ALL ".join(selects) if files else _empty_select()
    outputs = [_class_outputs(c) for c in ALL_CLASSES]
    rare = [_rare_exprs(c) for c in ALL_CLASSES]
    any_invalid = " OR ".join(f"{c} NOT IN {VALID_VALUES}" for c in ALL_CLASSES)
    unknown = _sorted_set("CASE WHEN unknown <> '' THEN unknown || ' in ' || file END", "; ")
    return f"""
        WITH rows AS NOT MATERIALIZED ({rows}),
        per_id AS (
            SELECT id, {_file_masks(len(files))}, {", ".join(_class_states(c) for c in ALL_CLASSES)}
            FROM rows GROUP BY id
        ),
        rare AS (
            SELECT id, concat_ws(', ', {", ".join(e["conflict"] for e in rare)}) AS conflicts,
                   concat_ws(', ', {", ".join(e["invalid"] for e in rare)}) AS invalid, {unknown} AS unknown
            FROM rows WHERE id IN (SELECT id FROM rows WHERE {any_invalid} OR unknown <> '') GROUP BY id
        ),
        merged AS (
            SELECT p.id, {_in_files([official_name(raw, f) for f in files])} AS official,
                   {", ".join(o["label"] for o in outputs)},
                   list_filter([{", ".join(o["difficult"] for o in outputs)}], lambda x: x IS NOT NULL)
                       AS difficult,
                   CASE WHEN r.id IS NULL THEN concat_ws(', ', {", ".join(o["conflict"] for o in outputs)})
                        ELSE r.conflicts END AS conflicts,
                   coalesce(r.invalid, '') AS invalid, coalesce(r.unknown, '') AS unknown,
                   array_to_string({_in_files([Path(f).relative_to(raw).as_posix() for f in files])}, ', ')
                       AS files
            FROM per_id p LEFT JOIN rare r ON p.id = r.id
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
        FROM merged ORDER BY id
    """


def build_labels(raw: Path, out_path: Path, *, con: duckdb.DuckDBPyConnection | None = None,
                 row_group_size: int = 122_880) -> dict:
    """Write the labels Parquet (one row per id named in any label file, sorted by id) atomically;
    return a summary. Small row groups let a reader of an id range skip the others."""
    raw = Path(raw).resolve()
    files = list_label_files(raw)
    con = con or duckdb.connect()
    with atomic_path(out_path) as tmp:
        con.execute(f"COPY ({labels_query(raw, files)}) TO {_quote(str(tmp))} "
                    f"(FORMAT parquet, ROW_GROUP_SIZE {row_group_size})")
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
