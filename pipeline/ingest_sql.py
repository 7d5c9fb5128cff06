"""The SQL of `pipeline ingest`, built here as duckdb query text from file paths and id ranges: the
images relation over the chunk parts, the split query over the usable rows, and the manifest rows of one
id range (the join of images and labels, each row's problems ranked into its status and error).
"""

from pathlib import Path

from base.vocabulary import CLASSES
from pipeline.layout import ANNOTATION_DIR, IMAGE_DIR, LABEL_DIR, TIP_PREFIX
from pipeline.schema import PROBLEMS
from pipeline.split import split_sql

EMPTY_IMAGES = """(SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS path, NULL::BIGINT AS bytes,
    NULL::VARCHAR AS checksum, NULL::BIGINT AS mtime_ns, NULL::INTEGER AS width, NULL::INTEGER AS height,
    NULL::VARCHAR AS mode,
    NULL::UBIGINT AS phash,
    NULL::STRUCT(cls VARCHAR, xmin FLOAT, ymin FLOAT, xmax FLOAT, ymax FLOAT)[] AS boxes,
    NULL::BOOLEAN AS has_xml, NULL::STRUCT(status VARCHAR, error VARCHAR)[] AS file_problems,
    NULL::STRUCT(status VARCHAR, error VARCHAR)[] AS xml_problems WHERE false)"""
"""The images relation when JPEGImage/ is empty: every label row then becomes a no_image row."""


def sql_list(items) -> str:
    return "[" + ", ".join(sql_text(i) for i in items) + "]"


def sql_text(item) -> str:
    return "'" + str(item).replace("'", "''") + "'"


def images_relation(parts: list[Path]) -> str:
    """The chunk parts as one relation (EMPTY_IMAGES when there is none)."""
    return f"read_parquet({sql_list(parts)})" if parts else EMPTY_IMAGES


def splits_query(images: str, labels: Path) -> str:
    """(id, split) of the usable rows, sorted by id: those with an image and a label row and no problem
    at all, which is what a status in USABLE_STATUSES means. Narrow rows, so the global sort is small."""
    usable = f"""(SELECT l.id, {", ".join(f"l.{c}" for c in CLASSES)}
        FROM {images} i JOIN read_parquet({sql_text(labels)}) l ON i.id = l.id
        WHERE len(i.file_problems) = 0 AND len(i.xml_problems) = 0 AND len(l.problems) = 0)"""
    # TIP scans are train, always, and left out of the rule: the real rows' split does not move.
    tip = f"starts_with(id, {sql_text(TIP_PREFIX)})"
    real = f"(SELECT * FROM {usable} WHERE NOT {tip})"
    return f"{split_sql(real)} UNION ALL SELECT id, 'train' AS split FROM {usable} WHERE {tip} ORDER BY id"


def manifest_query(images: str, labels: Path, splits: Path, low: str | None, high: str | None) -> str:
    """Manifest rows of the ids in [low, high), sorted by id, with status, error and split."""
    in_range = " AND ".join([f"id >= {sql_text(low)}"] * (low is not None)
                            + [f"id < {sql_text(high)}"] * (high is not None)) or "true"
    positive = " OR ".join(f"l.{c} = 1" for c in CLASSES)
    labelled = ", ".join(f"l.{c}" for c in CLASSES)
    return f"""
        WITH l AS (SELECT * FROM read_parquet({sql_text(labels)}) WHERE {in_range}),
        joined AS (
            SELECT coalesce(i.id, l.id) AS id, i.path, i.bytes, i.checksum, i.mtime_ns, i.width, i.height,
                   i.mode, i.phash, {labelled},
                   CAST(CASE WHEN l.hammer = 1 OR list_contains(list_transform(i.boxes, lambda b: b.cls),
                                                                'hammer') THEN 1
                        WHEN l.id IS NOT NULL OR i.has_xml THEN 0 END AS TINYINT) AS hammer,
                   l.difficult, i.boxes, coalesce(l.official, []) AS official,
                   list_concat(
                       CASE WHEN i.id IS NULL THEN [{{'status': 'no_image', 'error': 'labelled in ' ||
                            array_to_string(l.official, ', ') || ' but no {IMAGE_DIR}/' || l.id || '.jpg'}}]
                            ELSE list_concat(i.file_problems, i.xml_problems) END,
                       CASE WHEN l.id IS NULL THEN [{{'status': 'no_label',
                            'error': i.path || ': no label file under {LABEL_DIR}/ names ' || i.id}}]
                            ELSE l.problems END) AS problems,
                   coalesce({positive}, false) AND len(coalesce(i.boxes, [])) = 0 AS boxless,
                   i.has_xml
            FROM {images} i FULL OUTER JOIN l ON i.id = l.id
        ),
        ranked AS (
            SELECT *, list_sort(list_transform(problems, lambda p: {{'rank': list_position(
                {sql_list(PROBLEMS)}, p.status), 'status': p.status, 'error': p.error}})) AS ranked
            FROM joined
        ),
        statused AS (
            SELECT * EXCLUDE (problems, ranked, boxless, has_xml),
                   CASE WHEN len(ranked) > 0 THEN ranked[1].status
                        WHEN boxless THEN 'no_boxes' ELSE 'ok' END AS status,
                   CASE WHEN len(ranked) > 0
                            THEN array_to_string(list_transform(ranked, lambda p: p.error), '; ')
                        WHEN boxless AND has_xml THEN {ANNOTATION_DIR!r} || '/' || id || '.xml has no boxes'
                        WHEN boxless THEN 'positive without {ANNOTATION_DIR}/' || id || '.xml' END AS error
            FROM ranked
        )
        SELECT statused.*, s.split FROM statused
        LEFT JOIN (SELECT * FROM read_parquet({sql_text(splits)}) WHERE {in_range}) s ON statused.id = s.id
        ORDER BY statused.id
    """
