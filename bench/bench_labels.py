"""Label files at the real size: our reader (Python csv + Arrow, file and line kept for every row, then
duckdb's aggregation) against duckdb reading the same CSVs itself (`read_csv`, no line numbers, no
tolerance of hand-edited files), which is what ingest did before issue 9.

    python3 -m bench.bench_labels [--ids 1059231] [--work /tmp/bench_labels]

Writes the real download's label files for that many ids (SIXray10/100/1000 train and test: about
2.1M rows at the real size), then times `build_labels` and the reference on them and prints the ratio.
"""

import argparse
import shutil
import time
from pathlib import Path

import duckdb

from pipeline.labels import build_labels
from pipeline.layout import list_label_files

HEADER = "name,Gun,Knife,Wrench,Pliers,Scissors\n"


def write_label_files(root: Path, ids: int) -> int:
    """SIXray-like label files: positives P#####, negatives N#######, three subsets, 80/20 split."""
    positives = min(8929, ids // 100)
    names = [f"P{i:05d}" for i in range(1, positives + 1)]
    names += [f"N{i:07d}" for i in range(1, ids - positives + 1)]
    rows = 0
    for ratio, negatives in ((10, 10 * positives), (100, 100 * positives), (1000, ids - positives)):
        chosen = names[:positives] + names[positives:positives + negatives]
        folder = root / "ImageSet" / str(ratio)
        folder.mkdir(parents=True, exist_ok=True)
        for split, part in (("train", chosen[0::5] + chosen[1::5] + chosen[2::5] + chosen[3::5]),
                            ("test", chosen[4::5])):
            with open(folder / f"{split}.csv", "w") as f:
                f.write(HEADER)
                for name in part:
                    f.write(f"{name},{'1' if name[0] == 'P' else '-1'},-1,-1,-1,-1\n")
            rows += len(part)
    return rows


def duckdb_reference(root: Path) -> float:
    files = ", ".join(f"'{p}'" for p in list_label_files(root))
    start = time.perf_counter()
    duckdb.connect().execute(f"COPY (SELECT name AS id, max(Gun), max(Knife), max(Wrench), max(Pliers), "
                             f"max(Scissors) FROM read_csv([{files}], header=true) GROUP BY name "
                             f"ORDER BY name) TO '{root / 'reference.parquet'}' (FORMAT parquet)")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_059_231)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_labels"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    rows = write_label_files(args.work, args.ids)
    reference = duckdb_reference(args.work)
    start = time.perf_counter()
    summary = build_labels(args.work, args.work / "labels.parquet")
    ours = time.perf_counter() - start
    print(f"{rows:,} label rows in {len(summary['label_files'])} files, {summary['labelled_ids']:,} ids")
    print(f"build_labels: {ours:.1f} s ({rows / ours:,.0f} rows/s); "
          f"duckdb read_csv reference: {reference:.1f} s")
    print(f"ratio (ours / reference time): {ours / reference:.2f}")


if __name__ == "__main__":
    main()
