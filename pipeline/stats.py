"""`pipeline stats`: duckdb reports over `manifest.parquet` and every subset manifest `sixray*.parquet`.

Everything is aggregated inside duckdb (it streams the Parquet files), so the report costs the same
memory for eight images or a million: the paper's Table 1 per manifest and split, counts per official
label file, image size quantiles, problems by status and a near-duplicate leakage check (identical
dHash values with members in both train and test), summarised so it stays a few lines at 1.06M images.
"""

import re
from pathlib import Path

import duckdb

from base.errors import MissingInputError
from base.vocabulary import CLASSES
from pipeline.schema import SUBSET_SCHEMA, USABLE_STATUSES, check_manifest

QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)
LEAK_EXAMPLES = 3
"""How many leaking near-duplicate groups the text lists (largest first); all are counted."""
LEAK_EXAMPLE_IDS = 4
"""How many ids of each listed group the text shows: one group held 105 ids at 1.06M images."""

POSITIVE = "(" + " OR ".join(f"{c} = 1" for c in CLASSES) + ")"
USABLE = "status IN (" + ", ".join(f"'{s}'" for s in USABLE_STATUSES) + ")"


def manifest_files(manifests_dir: Path) -> dict[str, Path]:
    """{'manifest': ..., 'sixray10': ..., 'sixray100': ...}: the main manifest first, subsets by size."""
    manifests_dir = Path(manifests_dir)
    main = manifests_dir / "manifest.parquet"
    if not main.is_file():
        raise MissingInputError(f"{main}: no manifest; run `pipeline ingest` first")
    check_manifest(main)
    subsets = sorted(manifests_dir.glob("sixray*.parquet"),
                     key=lambda p: (int(m[1]) if (m := re.fullmatch(r"sixray(\d+)", p.stem)) else 0, p.name))
    for subset in subsets:
        check_manifest(subset, SUBSET_SCHEMA)
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


def _leak_tables(source: str) -> str:
    """WITH clause: `hashed` (usable rows with a dHash and a split) and `leaking` (one row per dHash
    whose images sit in both train and test, with its size and per-split counts)."""
    return f"""
        WITH hashed AS (SELECT id, phash, split FROM {source}
                        WHERE {USABLE} AND phash IS NOT NULL AND split IS NOT NULL),
        leaking AS (SELECT phash, count(*) AS size, count(*) FILTER (split = 'train') AS train,
                           count(*) FILTER (split = 'test') AS test, min(id) AS first_id
                    FROM hashed GROUP BY phash HAVING count(DISTINCT split) > 1)"""


def leakage(con, source: str, *, full: bool = False) -> dict:
    """Near-duplicate groups spanning train and test: totals, the largest few groups (first ids only)
    and, when `full`, every group's ids. Only `full` pulls all groups out of duckdb."""
    tables = _leak_tables(source)
    summary = _rows(con, f"""{tables}
        SELECT count(*) AS groups, coalesce(sum(size), 0) AS images, coalesce(max(size), 0) AS largest,
               coalesce(sum(train * test), 0) AS train_test_pairs
        FROM leaking""")[0]
    summary["examples"] = _rows(con, f"""{tables}
        SELECT g.size, list(h.id ORDER BY h.id)[1:{LEAK_EXAMPLE_IDS}] AS ids
        FROM (SELECT * FROM leaking ORDER BY size DESC, first_id LIMIT {LEAK_EXAMPLES}) g
        JOIN hashed h USING (phash) GROUP BY g.phash, g.size, g.first_id ORDER BY g.size DESC, g.first_id""")
    if full:
        summary["all_groups"] = [r["ids"] for r in _rows(con, f"""{tables}
            SELECT list(h.id ORDER BY h.id) AS ids
            FROM leaking g JOIN hashed h USING (phash) GROUP BY g.phash, g.first_id ORDER BY g.first_id""")]
    return summary


def source_counts(con, source: str) -> dict:
    """Usable rows per source (real, synth, tip) and split, so a report can tell TIP scans apart; {} for a
    manifest from before the source column."""
    if "source" not in {r["column_name"] for r in _rows(con, f"DESCRIBE SELECT * FROM {source}")}:
        return {}
    counts: dict = {}
    for r in _rows(con, f"""SELECT coalesce(source, 'unknown') AS src, coalesce(split, 'none') AS split,
                            count(*) AS n FROM {source} WHERE {USABLE} GROUP BY ALL ORDER BY ALL"""):
        counts.setdefault(r["src"], {})[r["split"]] = r["n"]
    return counts


def compute_stats(manifests_dir, *, full_leakage: bool = False) -> dict:
    """All reports, keyed by manifest name ('manifest', 'sixray10', ...): plain JSON-able numbers.

    full_leakage: also list every id of every leaking group (for --json; the text shows a few).
    """
    con = duckdb.connect()
    report = {}
    for name, path in manifest_files(Path(manifests_dir)).items():
        source = "read_parquet('" + str(path).replace("'", "''") + "')"
        report[name] = {"table1": table1(con, source), "status": status_counts(con, source),
                        "sizes": size_distribution(con, source),
                        "leakage": leakage(con, source, full=full_leakage),
                        "sources": source_counts(con, source)}
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
        if len(rep.get("sources", {})) > 1 or "tip" in rep.get("sources", {}):
            lines += ["", "Usable rows by source (tip: threat image projection, always train):"]
            lines += _table(["source", "train", "test"],
                            [[src, n.get("train", 0), n.get("test", 0)] for src, n in rep["sources"].items()])
        lines += ["", "Rows by status:"]
        lines += _table(["status", "rows"], [[s, n] for s, n in rep["status"].items()])
        lines += ["", *_leakage_lines(rep["leakage"])]
        lines.append("")
    return "\n".join(lines)


def _leakage_lines(leak: dict) -> list[str]:
    """The totals, then the largest groups with their first ids ('... and N more'); --json lists all."""
    lines = [f"Near-duplicate leakage: {leak['groups']} identical-dHash groups ({leak['images']} images, "
             f"largest {leak['largest']}) span train and test, {leak['train_test_pairs']} train/test pairs"]
    for group in leak["examples"]:
        hidden = group["size"] - len(group["ids"])
        tail = f" ... and {hidden} more" if hidden else ""
        lines.append(f"  {group['size']} images: {', '.join(group['ids'])}{tail}")
    hidden_groups = leak["groups"] - len(leak["examples"])
    if hidden_groups:
        lines.append(f"  ... and {hidden_groups} more groups (--json lists every id)")
    return lines
