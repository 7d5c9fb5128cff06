"""`pipeline stats`: duckdb reports over `manifest.parquet` and every subset manifest `sixray*.parquet`.

Everything is aggregated inside duckdb (it streams the Parquet files), so the report costs the same
memory for eight images or a million: the paper's Table 1 per manifest and split, counts per official
label file, image size quantiles, problems by status and a near-duplicate leakage check (identical
dHash values with members in both train and test).
"""

import re
from pathlib import Path

import duckdb

from pipeline.classes import CLASSES
from pipeline.schema import USABLE_STATUSES

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
LEAK_EXAMPLES = 5
"""How many leaking near-duplicate groups the report lists by id (all are counted)."""

POSITIVE = "(" + " OR ".join(f"{c} = 1" for c in CLASSES) + ")"
USABLE = "status IN (" + ", ".join(f"'{s}'" for s in USABLE_STATUSES) + ")"


def manifest_files(manifests_dir: Path) -> dict[str, Path]:
    """{'manifest': ..., 'sixray10': ..., 'sixray100': ...}: the main manifest first, subsets by size."""
    manifests_dir = Path(manifests_dir)
    main = manifests_dir / "manifest.parquet"
    if not main.is_file():
        raise FileNotFoundError(f"{main}: no manifest; run `pipeline ingest` first")
    subsets = sorted(manifests_dir.glob("sixray*.parquet"),
                     key=lambda p: (int(m[1]) if (m := re.fullmatch(r"sixray(\d+)", p.stem)) else 0, p.name))
    return {"manifest": main, **{p.stem: p for p in subsets}}


def _rows(con, sql: str) -> list[dict]:
    result = con.execute(sql)
    names = [d[0] for d in result.description]
    return [dict(zip(names, r, strict=True)) for r in result.fetchall()]


def table1(con, source: str) -> dict:
    """Images per class, positives, negatives and total, per split and overall (usable rows only)."""
    per_class = ", ".join(f"count(*) FILTER ({c} = 1) AS {c}" for c in CLASSES)
    rows = _rows(con, f"""
        SELECT coalesce(split, 'all') AS split, {per_class}, count(*) FILTER ({POSITIVE}) AS positive,
               count(*) FILTER (NOT {POSITIVE}) AS negative, count(*) AS total
        FROM {source} WHERE {USABLE} GROUP BY ROLLUP (split) ORDER BY split""")
    return {r.pop("split"): r for r in rows}


def official_counts(con, source: str) -> dict:
    """Rows naming each official label file: all of them and the usable ones."""
    rows = _rows(con, f"""
        SELECT f AS file, count(*) AS rows, count(*) FILTER ({USABLE}) AS usable
        FROM (SELECT unnest(official) AS f, status FROM {source}) GROUP BY f ORDER BY f""")
    return {r.pop("file"): r for r in rows}


def size_distribution(con, source: str) -> dict:
    """Quantiles of width, height and bytes over the rows that have a readable image header."""
    q = "[" + ", ".join(map(str, QUANTILES)) + "]"
    row = _rows(con, f"""
        SELECT quantile_disc(width, {q}) AS width, quantile_disc(height, {q}) AS height,
               quantile_disc(bytes, {q}) AS bytes, count(*) AS images
        FROM {source} WHERE width IS NOT NULL""")[0]
    return {"images": row.pop("images"), "quantiles": list(QUANTILES),
            **{k: (v or []) for k, v in row.items()}}


def status_counts(con, source: str) -> dict:
    return {r["status"]: r["n"] for r in
            _rows(con, f"SELECT status, count(*) AS n FROM {source} GROUP BY status ORDER BY status")}


def leakage(con, source: str) -> dict:
    """Groups of usable images sharing a dHash with members in both train and test."""
    groups = _rows(con, f"""
        SELECT phash, list(id ORDER BY id) AS ids
        FROM {source} WHERE {USABLE} AND phash IS NOT NULL AND split IS NOT NULL
        GROUP BY phash HAVING count(DISTINCT split) > 1 ORDER BY ids""")
    return {"groups": len(groups), "images": sum(len(g["ids"]) for g in groups),
            "examples": [g["ids"] for g in groups[:LEAK_EXAMPLES]]}


def compute_stats(manifests_dir) -> dict:
    """All reports, keyed by manifest name ('manifest', 'sixray10', ...): plain JSON-able numbers."""
    con = duckdb.connect()
    report = {}
    for name, path in manifest_files(Path(manifests_dir)).items():
        source = "read_parquet('" + str(path).replace("'", "''") + "')"
        report[name] = {"table1": table1(con, source), "status": status_counts(con, source),
                        "sizes": size_distribution(con, source), "leakage": leakage(con, source)}
        if name == "manifest":
            report[name]["official"] = official_counts(con, source)
    return report


def _table(header: list[str], rows: list[list]) -> list[str]:
    """Text columns: the first left-aligned (names), the rest right-aligned (numbers)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells) -> str:
        return "  ".join(str(x).rjust(w) if i else str(x).ljust(w)
                         for i, (x, w) in enumerate(zip(cells, widths, strict=True)))

    return [line(header), "  ".join("-" * w for w in widths), *map(line, rows)]


def format_stats(report: dict) -> str:
    """A readable report: one block per manifest."""
    lines = []
    for name, rep in report.items():
        lines += [f"== {name} ==", "Table 1 (usable images):"]
        cols = [*CLASSES, "positive", "negative", "total"]
        lines += _table(["split", *cols], [[s, *(t[c] for c in cols)] for s, t in rep["table1"].items()])
        if "official" in rep:
            lines += ["", "Official label files:"]
            lines += _table(["file", "rows", "usable"],
                            [[f, c["rows"], c["usable"]] for f, c in rep["official"].items()])
        sizes = rep["sizes"]
        lines += ["", f"Image sizes ({sizes['images']} readable headers):"]
        lines += _table(["", *(f"q{q:g}" for q in sizes["quantiles"])],
                        [[k, *sizes[k]] for k in ("width", "height", "bytes") if sizes[k]])
        lines += ["", "Rows by status:"]
        lines += _table(["status", "rows"], [[s, n] for s, n in rep["status"].items()])
        leak = rep["leakage"]
        lines += ["", f"Near-duplicate leakage: {leak['groups']} identical-dHash groups "
                      f"({leak['images']} images) span train and test"]
        lines += [f"  {', '.join(ids)}" for ids in leak["examples"]]
        lines.append("")
    return "\n".join(lines)
