"""Read the inspectors' labels: every CSV under `ImageSet/` (union, conflicts); the files' layout and the
annotation XMLs are pipeline/layout.py's.

Each CSV is read once by Python's csv module, which takes what hand-edited files hold (a UTF-8 BOM,
CRLF and LF lines mixed, blank lines, trailing spaces and commas, extra columns), into a narrow
Parquet of rows that keeps each row's line number. A row with the wrong number of fields or a value
other than 1, 0 or -1 becomes a problem naming its file and line, on its id's manifest row; a file
that cannot be a label file at all (empty, wrong header, wrong delimiter) is skipped and reported.
duckdb then aggregates those rows, streaming and spilling, into one labels Parquet row per id; a
million label rows never become Python objects at once. XMLs are tiny and per image, so the ingest
chunk tasks parse them (layout.read_annotation) next to the image they belong to.
"""

import csv
import json
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from base.atomic import atomic_path, write_json
from base.errors import DataError
from base.vocabulary import ALL_CLASSES, CLASSES, normalise_class
from pipeline.layout import list_label_files, official_name

VALID_VALUES = ("1", "0", "-1")
"""1 present, -1 absent, 0 'difficult' (present for training, ignored by AP)."""

ROWS_SCHEMA = pa.schema([("id", pa.string()), ("k", pa.int32()), ("file", pa.string()), ("line", pa.int32()),
                         *[(c, pa.string()) for c in ALL_CLASSES], ("unknown", pa.string()),
                         ("problem", pa.string())])
"""One label-file row: its id, file index k, file, line, valid class values (null where absent, empty
or invalid), the unknown classes it marks present, and what is wrong with it (null if nothing)."""

ROWS_BATCH = 65_536


class LabelFileError(DataError):
    """A label file that cannot be read at all (as opposed to a bad row, which becomes a status)."""


def open_label_file(csv_path: Path):
    """The file as text: a BOM dropped, undecodable bytes replaced (they can only spoil the ids they are
    in), newline='' so the csv module takes CRLF, LF and CR line ends alike."""
    return open(csv_path, newline="", encoding="utf-8-sig", errors="replace")


def check_header(csv_path: Path, header: list[str] | None) -> list[str]:
    """The stripped header, or LabelFileError saying why this cannot be a SIXray label file."""
    if not header:
        raise LabelFileError(f"{csv_path}: empty file; a label file starts with the header "
                             f"'name,{','.join(c.capitalize() for c in CLASSES)}'")
    header = [h.strip() for h in header]
    while len(header) > 1 and not header[-1]:  # a trailing comma
        header.pop()
    if len(header) == 1 and (sep := next((s for s in ";\t|" if s in header[0]), None)):
        raise LabelFileError(f"{csv_path}: columns separated by {sep!r}; SIXray label files use commas")
    if header[0].lower() != "name":
        raise LabelFileError(f"{csv_path}: first header column must be 'name', got {header!r}")
    classes = [normalise_class(h) for h in header[1:]]
    repeated = sorted({h for h, c in zip(header[1:], classes, strict=True) if c and classes.count(c) > 1})
    if repeated:
        raise LabelFileError(f"{csv_path}: class {repeated[0]!r} appears twice in the header")
    missing = [c.capitalize() for c in CLASSES if c not in classes]
    if missing:
        raise LabelFileError(f"{csv_path}: header lacks the class column(s) {', '.join(missing)}")
    return header


def label_rows(raw: Path, csv_path: Path, k: int):
    """Yield one label file's rows as ROWS_SCHEMA record batches; LabelFileError if it is not a label
    file (raised before the first batch, from its header)."""
    rel = Path(csv_path).relative_to(raw).as_posix()
    with open_label_file(csv_path) as f:
        reader = csv.reader(f)
        try:
            header = check_header(csv_path, next(reader, None))
            rows, lines = [], []
            for fields in reader:
                rows.append(fields)
                lines.append(reader.line_num)
                if len(rows) == ROWS_BATCH:
                    yield _rows_batch(rel, header, k, rows, lines)
                    rows, lines = [], []
        except csv.Error as exc:
            raise LabelFileError(f"{csv_path}: line {reader.line_num}: not CSV ({exc})") from exc
        yield _rows_batch(rel, header, k, rows, lines)


def _rows_batch(rel: str, header: list[str], k: int, rows: list[list[str]],
                lines: list[int]) -> pa.RecordBatch:
    """Rows of one file as a ROWS_SCHEMA batch, worked on column by column (a million rows stay fast);
    only the rare rows with a problem or an unknown class marked are formatted one by one."""
    width = len(header)
    rows = [r if len(r) == width else _strip_trailing(r, width) for r in rows]
    n_fields = [len(r) for r in rows]
    padded = rows if all(n == width for n in n_fields) else [(r + [""] * width)[:width] for r in rows]
    columns = zip(*padded, strict=True) if rows else [[]] * width
    fields = [pc.utf8_trim_whitespace(pa.array(col, pa.string())) for col in columns]
    full = pc.equal(pa.array(n_fields, pa.int32()), width)
    index = {normalise_class(h): i for i, h in enumerate(header) if i and normalise_class(h)}
    values, invalid = {}, []
    for cls in ALL_CLASSES:
        if cls not in index:
            values[cls] = pa.nulls(len(rows), pa.string())
            continue
        col = fields[index[cls]]
        bad = pc.and_(pc.and_(full, pc.not_equal(col, "")), pc.invert(pc.is_in(col, pa.array(VALID_VALUES))))
        invalid.append(bad)
        usable = pc.and_(full, pc.invert(bad))
        values[cls] = pc.if_else(usable, pc.if_else(pc.equal(col, ""), None, col), None)
    problem_rows = pc.or_(pc.invert(full), _any(invalid, len(rows)))
    unknown_cols = [i for i, h in enumerate(header) if i and not normalise_class(h)]
    marked = _any([pc.and_(full, pc.is_in(fields[i], pa.array(["1", "0"]))) for i in unknown_cols],
                  len(rows))
    problems, unknown = [None] * len(rows), [""] * len(rows)
    for r in pc.indices_nonzero(pc.or_(problem_rows, marked)).to_pylist():
        cells = [c.strip() for c in padded[r]]
        if n_fields[r] != width:
            problems[r] = f"{rel} line {lines[r]}: {n_fields[r]} fields, the header has {width}"
            continue
        bad = [f"{cells[index[c]]!r} for {header[index[c]]}" for c in ALL_CLASSES
               if c in index and cells[index[c]] and cells[index[c]] not in VALID_VALUES]
        problems[r] = f"{rel} line {lines[r]}: {', '.join(bad)} (valid: 1, 0, -1)" if bad else None
        unknown[r] = ", ".join(header[i] for i in unknown_cols if cells[i] in ("1", "0"))
    ids = pc.replace_substring_regex(fields[0], r"(?i)\.jpe?g$", "")
    batch = pa.RecordBatch.from_arrays(
        [ids, pa.array([k] * len(rows), pa.int32()), pa.array([rel] * len(rows), pa.string()),
         pa.array(lines, pa.int32()), *values.values(), pa.array(unknown, pa.string()),
         pa.array(problems, pa.string())], schema=ROWS_SCHEMA)
    return batch.filter(pc.invert(pc.equal(pa.array(n_fields, pa.int32()), 0)))  # blank rows


def _strip_trailing(fields: list[str], width: int) -> list[str]:
    """A row that is not `width` fields wide, without the trailing empty fields a stray comma or
    spaces add ([] for a blank row)."""
    fields = list(fields)
    while fields and len(fields) != width and not fields[-1].strip():
        fields.pop()
    return fields


def _any(masks: list, n: int):
    out = pa.array([False] * n, pa.bool_())
    for mask in masks:
        out = pc.or_(out, mask)
    return out


def write_label_rows(raw: Path, files: list[Path], folder: Path) -> tuple[list[Path], list[dict]]:
    """Each readable label file's rows as folder/<k>.parquet; (those Parquets, [{'file', 'error'}] for
    the files skipped)."""
    written, skipped = [], []
    for k, csv_path in enumerate(files):
        path = folder / f"{k}.parquet"
        try:
            with atomic_path(path) as tmp, pq.ParquetWriter(tmp, ROWS_SCHEMA) as writer:
                for batch in label_rows(raw, csv_path, k):
                    writer.write_batch(batch)
            written.append(path)
        except LabelFileError as exc:
            skipped.append({"file": Path(csv_path).relative_to(raw).as_posix(), "error": str(exc)})
    return written, skipped


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _empty_select() -> str:
    values = ", ".join(f"NULL::VARCHAR AS {c}" for c in ALL_CLASSES)
    return f"SELECT NULL::VARCHAR AS id, 0 AS k, NULL::VARCHAR AS file, 0 AS line, {values}, " \
           "''::VARCHAR AS unknown, NULL::VARCHAR AS problem WHERE false"


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
    """Per-id aggregates of one class, fixed-size so duckdb can spill them: its lowest and highest
    value as -1/0/1 (invalid values were nulled, and reported, when the rows were read)."""
    code = f"CAST(CASE {cls} WHEN '1' THEN 1 WHEN '0' THEN 0 WHEN '-1' THEN -1 END AS TINYINT)"
    return f"min({code}) AS {cls}_lo, max({code}) AS {cls}_hi"


def _class_outputs(cls: str) -> dict[str, str]:
    """Label, difficult mark and conflict of one class from its states; a disagreement leaves the
    label unknown (null)."""
    agreed, name = f"{cls}_lo = {cls}_hi", cls.capitalize()
    return {
        "label": f"CAST(CASE WHEN {agreed} THEN {cls}_lo >= 0 END AS TINYINT) AS {cls}",
        "difficult": f"CASE WHEN {agreed} AND {cls}_lo = 0 THEN '{cls}' END",
        "conflict": f"CASE WHEN {cls}_lo <> {cls}_hi THEN "
                    f"'{name} (' || {cls}_lo || '/' || {cls}_hi || ')' END",
    }


def labels_query(raw: Path, files: list[Path], row_files: list[Path]) -> str:
    """SQL giving one row per labelled id, sorted by id: official files, class labels, difficult list,
    problems. `row_files` are write_label_rows' Parquets of the readable files among `files`.

    The million-group aggregation keeps only fixed-size states (file bit masks, min/max codes), which
    duckdb spills under its memory limit; list states cannot spill, so the messages about bad rows and
    unknown classes are aggregated apart over the few ids that have them.
    """
    rows = f"SELECT * FROM read_parquet([{', '.join(_quote(str(f)) for f in row_files)}])" if row_files \
        else _empty_select()
    outputs = [_class_outputs(c) for c in ALL_CLASSES]
    unknown = _sorted_set("CASE WHEN unknown <> '' THEN unknown || ' in ' || file END", "; ")
    bad_rows = "string_agg(problem, '; ' ORDER BY k, line)"
    return f"""
        WITH rows AS NOT MATERIALIZED ({rows}),
        per_id AS (
            SELECT id, {_file_masks(len(files))}, {", ".join(_class_states(c) for c in ALL_CLASSES)}
            FROM rows GROUP BY id
        ),
        rare AS (
            SELECT id, coalesce({bad_rows}, '') AS bad_rows, {unknown} AS unknown
            FROM rows WHERE id IN (SELECT id FROM rows WHERE problem IS NOT NULL OR unknown <> '') GROUP BY id
        ),
        merged AS (
            SELECT p.id, {_in_files([official_name(raw, f) for f in files])} AS official,
                   {", ".join(o["label"] for o in outputs)},
                   list_filter([{", ".join(o["difficult"] for o in outputs)}], lambda x: x IS NOT NULL)
                       AS difficult,
                   concat_ws(', ', {", ".join(o["conflict"] for o in outputs)}) AS conflicts,
                   coalesce(r.bad_rows, '') AS bad_rows, coalesce(r.unknown, '') AS unknown,
                   array_to_string({_in_files([Path(f).relative_to(raw).as_posix() for f in files])}, ', ')
                       AS files
            FROM per_id p LEFT JOIN rare r ON p.id = r.id
        )
        SELECT id, official, {", ".join(ALL_CLASSES)}, difficult,
               list_filter([
                   CASE WHEN bad_rows <> '' THEN {{'status': 'bad_label_row',
                       'error': 'bad label row: ' || bad_rows}} END,
                   CASE WHEN conflicts <> '' THEN {{'status': 'label_conflict',
                       'error': 'label files disagree on ' || conflicts || ': ' || files}} END,
                   CASE WHEN unknown <> '' THEN {{'status': 'unknown_class',
                       'error': 'unknown class marked present: ' || unknown}} END
               ], lambda x: x IS NOT NULL) AS problems
        FROM merged ORDER BY id
    """


def build_labels(raw: Path, out_path: Path, *, con: duckdb.DuckDBPyConnection | None = None,
                 row_group_size: int = 122_880) -> dict:
    """Write the labels Parquet (one row per id named in any readable label file, sorted by id) and,
    before it, its summary `<out_path>.json` (label files, labelled ids, the files skipped and why),
    both atomically; return the summary. Small row groups let a reader of an id range skip the others.
    """
    raw, out_path = Path(raw).resolve(), Path(out_path)
    files = list_label_files(raw)
    con = con or duckdb.connect()
    rows_dir = out_path.parent / f".{out_path.stem}.rows"
    shutil.rmtree(rows_dir, ignore_errors=True)  # a killed run's
    rows_dir.mkdir(parents=True)
    try:
        row_files, skipped = write_label_rows(raw, files, rows_dir)
        with atomic_path(out_path) as tmp:
            con.execute(f"COPY ({labels_query(raw, files, row_files)}) TO {_quote(str(tmp))} "
                        f"(FORMAT parquet, ROW_GROUP_SIZE {row_group_size})")
            summary = {"label_files": [official_name(raw, f) for f in files],
                       "labelled_ids": pq.ParquetFile(tmp).metadata.num_rows, "skipped_files": skipped}
            write_json(summary_path(out_path), summary)  # before the Parquet, whose presence marks both done
    finally:
        shutil.rmtree(rows_dir, ignore_errors=True)
    return summary


def summary_path(labels: Path) -> Path:
    return Path(labels).with_suffix(".json")


def read_labels_summary(labels: Path) -> dict:
    return json.loads(summary_path(labels).read_text())


