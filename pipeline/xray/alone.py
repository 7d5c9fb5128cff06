"""The generator's threats drawn alone (`pipeline synth --threats`): each threat of `pipeline synth`'s
positives drawn on an empty belt (no bag, no clutter), rendered by the same physics, cut to its box, and
written as a threat-library collection (pipeline/library.py)."""

import math
from pathlib import Path

import numpy as np

from base.distribute import mark_done, run_chunks
from base.hashing import content_key
from pipeline import library
from pipeline.layout import positive_id
from pipeline.xray.synth import GeneratorChunk, draw_threats, image_rng, image_size

FORMAT = 1
"""Bump when a layer's pixels change for the same input: chunk keys hold it."""


def synth_chunk(chunk: GeneratorChunk) -> dict:
    """Draw the threats of a chunk of synthetic positives alone on an empty belt, one layer per box."""

    out = Path(chunk.out)
    rows = []
    for scan_id in chunk.ids:
        rng = image_rng(chunk.seed, "synth-threat-alone", scan_id)
        width, height = image_size(rng, chunk.size_factor)
        threats = draw_threats(image_rng(chunk.seed, "synth-labels", scan_id), chunk.difficulty)
        for k, (cls, area) in enumerate(threats):
            layer = draw_alone(rng, cls, area, width, height, chunk.difficulty)
            if layer is None:
                continue
            tid = library.threat_id(scan_id, k)
            library.write_layer(out / "layers" / f"{tid}.png", layer)
            box = (0, 0, layer.shape[1], layer.shape[0])  # the layer is all of its (threat-only) scan
            rows.append(library.library_row(tid, cls, layer, scan_id, (height, width), box, None, 0.0,
                                            "synth"))
    mark_done(chunk, {"count": len(chunk.ids), "rows": rows, "drops": {}})
    return {"count": len(chunk.ids), "layers": len(rows)}


def draw_alone(rng, cls: str, area: float, width: int, height: int, difficulty: float) -> np.ndarray | None:
    """One threat of class `cls` whose box covers `area` of a width x height scan, drawn alone (no bag, no
    clutter) and rendered by the generator's physics, cut to its box: a layer (8-bit, 255 = transparent)."""
    from pipeline.xray import shapes
    from pipeline.xray.render import Scene

    parts = shapes.THREATS[cls](rng)
    angle = rng.uniform(0, 2 * math.pi)
    squash = math.cos(rng.uniform(0, 0.3 + 0.9 * difficulty))
    c, s = math.cos(angle), math.sin(angle)
    pts = np.concatenate([p[2] for p in parts]) @ np.array([[c, s * squash], [-s, c * squash]], np.float32)
    span = np.maximum(pts.max(axis=0) - pts.min(axis=0), 1e-3)
    scale = math.sqrt(area * width * height / float(span[0] * span[1]))
    side_w, side_h = math.ceil(span[0] * scale) + 24, math.ceil(span[1] * scale) + 24
    scene = Scene(side_w, side_h)
    box = scene.draw(parts, side_w / 2, side_h / 2, scale, angle=angle, squash=squash,
                     density=rng.uniform(0.7, 1.2) * (1 - 0.3 * difficulty))
    if box is None:
        return None
    image = np.asarray(scene.render(rng, noise=0.05))
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def synth_collection(out, *, positives: int, seed: int = 0, size_factor: float = 1.0, difficulty: float = 0.5,
                     name: str | None = None, chunk_size: int = 200, workers=None, scheduler=None) -> dict:
    """The threats of `pipeline synth`'s positives P00001.. drawn alone, as the collection
    `out/<name>/` (name: 'synth-<seed>'). Fresh draws (their own generator stream), not copies of the
    scans' threats, so they carry no split."""
    name = name or f"synth-{seed}"
    collection = Path(out) / name
    params = {"origin": "synth", "seed": seed, "size_factor": size_factor, "difficulty": difficulty}
    library.claim_collection(collection, params)
    ids = [positive_id(i) for i in range(1, positives + 1)]
    chunks = []
    for start in range(0, len(ids), chunk_size):
        part = tuple(ids[start : start + chunk_size])
        key = content_key([FORMAT, "synth", seed, size_factor, difficulty, part], 12)
        marker = library.marker_path(collection, key)
        chunks.append(GeneratorChunk(key, str(marker), str(collection), part, seed, size_factor, difficulty))
    _, skipped = run_chunks(synth_chunk, chunks, desc=f"threats {name}", unit="scan", workers=workers,
                            scheduler=scheduler)
    return {**library.finish_collection(collection, [c.key for c in chunks]), "collection": str(collection),
            "scans": len(ids), "skipped_chunks": skipped}
