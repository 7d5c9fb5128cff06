"""The threat library's format, defined once for its writers (`pipeline threats`, `pipeline synth --threats`)
and its reader (`pipeline tip`).

A library is a folder of collections; a collection `<library>/<name>/` holds one layer per threat
(`layers/<threat>.png`: an 8-bit RGB image whose channels are transmissions, 255 where the ray passes
untouched), `index.parquet` (LIBRARY_SCHEMA, sorted by threat id), `summary.json` (layers, drops, per
class and split) and `.threats/` (the parameters it was made with, and one marker JSON per finished
chunk, written last: its rows and drop counts).
"""

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from base.atomic import atomic_path, write_json, write_parquet
from base.distribute import claim
from base.vocabulary import ALL_CLASSES

LIBRARY_SCHEMA = pa.schema(
    [
        ("threat", pa.string()),  # '<scan id>-<k>', unique in a collection
        ("cls", pa.string()),  # ALL_CLASSES
        ("layer", pa.string()),  # PNG path relative to the collection folder
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("scan", pa.string()),  # the scan the threat was cut from
        ("scan_width", pa.int32()),
        ("scan_height", pa.int32()),
        ("box", pa.list_(pa.float32())),  # xmin, ymin, xmax, ymax in the scan
        ("split", pa.string()),  # the scan's split in the raw folder's manifest; null if none
        ("clutter", pa.float32()),  # robust sigma of the ring around the fitted bag (-ln T)
        ("origin", pa.string()),  # 'scan' (cut from a scan) | 'synth' (drawn alone by the generator)
    ]
)


def threat_id(scan_id: str, k: int) -> str:
    return f"{scan_id}-{k}"


def library_row(tid, cls, layer, scan_id, shape, coords, split, clutter, origin) -> dict:
    return {"threat": tid, "cls": cls, "layer": f"layers/{tid}.png", "width": int(layer.shape[1]),
            "height": int(layer.shape[0]), "scan": scan_id, "scan_width": int(shape[1]),
            "scan_height": int(shape[0]), "box": [round(float(c), 3) for c in coords], "split": split,
            "clutter": clutter, "origin": origin}


def write_layer(path: Path, pixels: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
    with atomic_path(path) as tmp:  # no fsync per file: the chunk marker is fsynced, and written last
        tmp.write_bytes(buffer.getvalue())


def marker_path(collection: Path, key: str) -> Path:
    return collection / ".threats" / f"chunk-{key}.json"


def finish_collection(collection: Path, keys: list[str]) -> dict:
    """index.parquet and summary.json from the chunk markers of `keys`; markers of other keys (an older
    input) and the layers only they listed are deleted."""
    rows, drops = [], Counter()
    for key in keys:
        marker = json.loads(marker_path(collection, key).read_text())
        rows += marker["rows"]
        drops.update(marker["drops"])
    rows.sort(key=lambda r: r["threat"])
    write_parquet(collection / "index.parquet", pa.Table.from_pylist(rows, schema=LIBRARY_SCHEMA))
    kept = {f"chunk-{k}.json" for k in keys}
    for stale in (collection / ".threats").glob("chunk-*.json"):
        if stale.name not in kept:
            stale.unlink()
    listed = {Path(r["layer"]).name for r in rows}
    layers = collection / "layers"
    if layers.is_dir():
        for path in layers.iterdir():
            if path.name not in listed:
                path.unlink()
    per_class = Counter(r["cls"] for r in rows)
    boxes = len(rows) + sum(drops.values())
    summary = {"layers": len(rows), "boxes": boxes, "dropped": dict(sorted(drops.items())),
               "per_class": {c: per_class[c] for c in ALL_CLASSES if per_class[c]},
               "per_split": dict(sorted(Counter(r["split"] or "none" for r in rows).items()))}
    write_json(collection / "summary.json", summary)
    return summary


def claim_collection(collection: Path, params: dict) -> None:
    """Record what the collection is made from; refuse to mix another folder or split into it."""
    claim(collection / ".threats" / "params.json", params, "use another --name")


def read_library(threats) -> pa.Table:
    """Every collection's index under `threats/` (LIBRARY_SCHEMA plus 'collection'), sorted by
    collection then threat; 'layer' becomes a path relative to `threats/`."""
    root = Path(threats)
    tables = []
    for index in sorted(root.glob("*/index.parquet")):
        table = pq.read_table(index).select(LIBRARY_SCHEMA.names).cast(LIBRARY_SCHEMA)
        name = index.parent.name
        layers = [f"{name}/{p}" for p in table["layer"].to_pylist()]
        column = table.schema.get_field_index("layer")
        table = table.set_column(column, "layer", pa.array(layers, pa.string()))
        tables.append(table.append_column("collection", pa.array([name] * len(table), pa.string())))
    if not tables:
        return LIBRARY_SCHEMA.append(pa.field("collection", pa.string())).empty_table()
    return pa.concat_tables(tables)
