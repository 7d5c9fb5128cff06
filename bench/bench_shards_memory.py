"""build-shards planning memory: peak RSS at the real 1,059,231 images as a ratio to 10,000 images.

    python3 bench/bench_shards_memory.py [--work /tmp/bench-shards-memory]

For each size a manifest with SIXray's class mix is generated (no image files: planning never opens
them), then a fresh process runs what build-shards does before any shard task starts for SIXray1000
(the largest subset: every negative): select the subset, plan its shards, write the subset manifest
through duckdb, read the plan back. Reference: the same process with the modules imported and nothing
run. Shard tasks themselves read only their own rows, so their memory depends on --shard-size, not on
the dataset. Prints peak RSS of each and RATIO = (peak_1.06M - imports) / (peak_10k - imports).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.classes import ALL_CLASSES
from pipeline.schema import MANIFEST_SCHEMA

POSITIVE_SHARE = 8929 / 1059231

CHILD = """
import json, resource, sys
from pathlib import Path
from pipeline.shards import read_plan
from pipeline.subsets import SubsetConfig, build_subset
if sys.argv[1] != "imports":
    manifest = Path(sys.argv[1])
    build_subset(manifest, manifest.with_name("sixray1000.parquet"), SubsetConfig(1000))
    shards = read_plan(manifest.with_name("sixray1000.parquet"))
    assert sum(s["count"] for s in shards.values()) > 0
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def fake_manifest(path: Path, n: int) -> Path:
    """n usable rows, ids P/N as in SIXray, labels drawn with the real positive share, one box each."""
    if path.exists() and pq.read_metadata(path).num_rows == n:
        return path
    rng = np.random.default_rng(0)
    n_pos = max(1, round(n * POSITIVE_SHARE))
    ids = [f"P{i + 1:05d}" for i in range(n_pos)] + [f"N{i + 1:07d}" for i in range(n - n_pos)]
    cls = rng.integers(0, 5, n)
    columns = {
        "id": ids,
        "path": [f"JPEGImage/{i}.jpg" for i in ids],
        "bytes": rng.integers(20_000, 200_000, n),
        "checksum": ["0" * 32] * n,
        "width": [632] * n,
        "height": [571] * n,
        "mode": ["RGB"] * n,
        "phash": rng.integers(0, 2**63, n, dtype=np.uint64),
        **{c: ((np.arange(n) < n_pos) & (cls == k)).astype(np.int8) for k, c in enumerate(ALL_CLASSES)},
        "difficult": [[]] * n,
        "boxes": [[{"cls": "gun", "xmin": 1.0, "ymin": 2.0, "xmax": 30.0, "ymax": 40.0}]] * n,
        "official": [[]] * n,
        "split": np.where(rng.random(n) < 0.2, "test", "train"),
        "status": ["ok"] * n,
        "error": [None] * n,
    }
    table = pa.table({k: pa.array(v, type=MANIFEST_SCHEMA.field(k).type) for k, v in columns.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.cast(MANIFEST_SCHEMA), path, row_group_size=100_000)
    return path


def peak_mb(arg: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, arg], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])["peak_mb"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-shards-memory"))
    args = parser.parse_args()
    imports = peak_mb("imports")
    sizes = (10_000, 1_059_231)
    peaks = {n: peak_mb(str(fake_manifest(args.work / f"{n}" / "manifest.parquet", n))) for n in sizes}
    print(f"imports only:        {imports:7.0f} MB peak RSS")
    for n, peak in peaks.items():
        print(f"plan {n:>9,} images: {peak:7.0f} MB peak RSS")
    ratio = (peaks[1_059_231] - imports) / max(peaks[10_000] - imports, 1.0)
    print(f"RATIO planning memory above imports, 1,059,231 / 10,000 images: {ratio:.1f} (data grew 106x)")


if __name__ == "__main__":
    main()
