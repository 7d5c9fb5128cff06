"""Every pipeline command at the real SIXray size, run as a user runs it, with its wall time and memory.

    python3 -m bench.bench_scale --work /tmp/scale [--negatives 1050302] [--steps all]

Builds the raw folder itself (bench/scale_folder.py: 8,929 positives and 10,000 negatives from
`pipeline synth` at half size, the other negatives hard links to those, label files for every id),
then runs each command in its own process (bench/measure.py: peak RSS and PSS of its whole process
tree) and prints per command: exit code, wall time, images/s, peak memory. Reference for build-shards:
GNU tar (`--hard-dereference`, so every link is archived as a file) plus `sync` over the same JPEGs as
SIXray1000, in the same run; RATIO = build-shards images/s / tar+sync images/s. Shards are deleted after
each measurement (SIXray1000 of this folder is about 21 GB of tar). A table in Markdown goes to
`<work>/scale.md` and the raw figures to `<work>/scale.json`.

Reference for ingest: its floor (bench/decode_floor.py), a bare loop decoding every file at 1/8 scale on
every core, run before and after ingest; RATIO = ingest images/s / the floor's mean images/s.

Steps: floor, ingest (first run, rerun unchanged), shards (each ratio x split source, a rerun unchanged and a
rerun after a kill), tar, stats, incremental (1% of the ids held back and added again: 0.5% the last
ids, 0.5% spread among the others).
"""

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.measure import run_measured
from bench.scale_folder import NEGATIVES, POSITIVES, build_folder
from pipeline.xray.synth import write_label_files

STEPS = ("floor", "ingest", "shards", "tar", "stats", "incremental")


class Bench:
    def __init__(self, work: Path):
        self.work, self.rows = work, []
        self.raw, self.manifests, self.shards = work / "raw", work / "manifests", work / "shards"
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cmd: list[str], images: int, **extra) -> dict:
        """Run one command to completion, record and print its row."""
        log = self.logs / (re.sub(r"[^\w.-]+", "_", name) + ".log")
        result = run_measured(cmd, log=log)
        row = {"command": name, **result, "images": images, "log": str(log),
               "images_per_s": round(images / result["seconds"]) if result["seconds"] else None, **extra}
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def ids(self) -> int:
        return pq.read_metadata(self.manifests / "manifest.parquet").num_rows


def ingest_cmd(bench: Bench) -> list[str]:
    return ["pipeline", "ingest", "--raw", str(bench.raw), "--out", str(bench.manifests)]


def step_floor(bench: Bench, total: int, when: str) -> None:
    """Ingest's floor (bench/decode_floor.py): every file opened and decoded at 1/8 scale on every core."""
    bench.run(f"floor: decode every JPEG at 1/8 scale ({when} ingest)",
              ["python3", "-m", "bench.decode_floor", "--raw", str(bench.raw)], total)


def step_ingest(bench: Bench, total: int) -> None:
    bench.run("ingest (first run)", ingest_cmd(bench), total)
    bench.run("ingest (rerun, nothing changed)", ingest_cmd(bench), total)


def shards_cmd(bench: Bench, ratio: int, split: str) -> list[str]:
    return ["pipeline", "build-shards", "--ratio", str(ratio), "--split", split,
            "--manifests", str(bench.manifests), "--out", str(bench.shards)]


def subset_count(bench: Bench, ratio: int) -> int:
    info = json.loads((bench.shards / f"sixray{ratio}" / "_info.json").read_text())
    return info["train"]["count"] + info["test"]["count"]


def step_shards(bench: Bench, ratios: tuple[int, ...]) -> None:
    for ratio in ratios:
        for split in ("ours", "official"):
            cmd = shards_cmd(bench, ratio, split)
            row = bench.run(f"build-shards --ratio {ratio} --split {split}", cmd, 0)
            fix_images(row, subset_count(bench, ratio) if row["rc"] == 0 else 0)
            if (ratio, split) == (1000, "ours"):
                rerun_and_kill(bench, row["images"])
            shutil.rmtree(bench.shards / f"sixray{ratio}")


def fix_images(row: dict, images: int) -> None:
    row.update(images=images, images_per_s=round(images / row["seconds"]))
    print(json.dumps({"command": row["command"], "images": images, "images_per_s": row["images_per_s"]}))


def rerun_and_kill(bench: Bench, images: int) -> None:
    """SIXray1000: a rerun with nothing to do, then a run killed halfway and its rerun."""
    cmd = shards_cmd(bench, 1000, "ours")
    bench.run("build-shards --ratio 1000 (rerun, nothing changed)", cmd, images)
    done = sorted((bench.shards / "sixray1000").glob("*.stats.json"))
    for marker in done[len(done) // 2:]:  # as if the first run had been killed halfway
        marker.unlink()
    (bench.shards / "sixray1000" / done[-1].name.replace(".stats.json", ".tar")).unlink()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(5)
    os.killpg(proc.pid, signal.SIGKILL)  # a kill while shards are being written
    proc.wait()
    bench.run("build-shards --ratio 1000 (rerun after a kill)", cmd, images)


def step_tar(bench: Bench) -> None:
    """GNU tar + sync over the SIXray1000 JPEGs (the subset manifest's paths), in the subset's order."""
    paths = pq.read_table(bench.manifests / "sixray1000.parquet", columns=["path"])["path"].to_pylist()
    listing = bench.work / "tar-files.txt"
    listing.write_text("".join(p + "\n" for p in paths))
    out = bench.work / "reference.tar"
    cmd = ["sh", "-c", f"tar --hard-dereference -cf {out} -C {bench.raw} -T {listing} && sync"]
    bench.run("reference: GNU tar + sync, SIXray1000 JPEGs", cmd, len(paths))
    out.unlink()


def step_stats(bench: Bench, total: int) -> None:
    bench.run("stats", ["pipeline", "stats", "--manifests", str(bench.manifests)], total)
    bench.run("stats --json", ["pipeline", "stats", "--manifests", str(bench.manifests), "--json"], total)


def held_back(total_negatives: int) -> list[str]:
    """1% of the ids: the last 0.5% of the negatives and every 200th of the others."""
    tail = total_negatives // 200
    spread = range(100, total_negatives - tail, 200)
    return [f"N{n:07d}" for n in (*spread, *range(total_negatives - tail + 1, total_negatives + 1))]


def filter_label_files(raw: Path, drop: set[str]) -> None:
    for path in sorted((raw / "ImageSet").rglob("*.csv")):
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and r[0] not in drop]
        with open(path, "w", newline="") as f:
            csv.writer(f, lineterminator="\r\n").writerows(rows)


def step_incremental(bench: Bench, positives: int, negatives: int, total: int) -> None:
    """Ingest without 1% of the scans, then with them again: the rerun must validate about 1%, and the
    manifest must equal the clean run's byte for byte."""
    clean = bench.manifests / "manifest.parquet"
    reference = bench.work / "manifest.clean.parquet"
    shutil.copyfile(clean, reference)
    held = held_back(negatives)
    aside = bench.work / "held-back"
    aside.mkdir(exist_ok=True)
    for image_id in held:
        os.replace(bench.raw / "JPEGImage" / f"{image_id}.jpg", aside / f"{image_id}.jpg")
    filter_label_files(bench.raw, set(held))
    bench.run(f"ingest (rerun, {len(held)} scans removed)", ingest_cmd(bench), total - len(held))
    for image_id in held:
        os.replace(aside / f"{image_id}.jpg", bench.raw / "JPEGImage" / f"{image_id}.jpg")
    write_label_files(bench.raw, 0, positives, negatives)  # every id labelled again
    row = bench.run(f"ingest (rerun, {len(held)} scans added: 1%)", ingest_cmd(bench), total)
    row["identical_to_clean_run"] = clean.read_bytes() == reference.read_bytes()
    row["validated"] = validated(Path(row["log"]))
    print(json.dumps({k: row[k] for k in ("identical_to_clean_run", "validated")}))


def validated(log: Path) -> int | None:
    """The count of images the ingest validated, from its summary line."""
    found = re.search(r"\((\d+) validated\)", log.read_text())
    return int(found[1]) if found else None


def markdown(rows: list[dict]) -> str:
    lines = ["| command | exit | wall s | images | images/s | peak RSS MB | peak PSS MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        note = (f": {r['validated']:,} validated ({r['validated'] / r['images']:.1%}), manifest identical "
                f"to the clean run: {r['identical_to_clean_run']}" if r.get("validated") is not None else "")
        lines.append(f"| {r['command']}{note} | {r['rc']} | {r['seconds']} | {r['images']:,} | "
                     f"{r['images_per_s'] or 0:,} | {r['peak_rss_mb']} | {r['peak_pss_mb']} |")
    for title, ours, reference in RATIOS:
        ratio = rate_ratio(rows, ours, reference)
        if ratio:
            lines.append(f"\nRATIO {title}: **{ratio:.2f}**")
    return "\n".join(lines)


RATIOS = (("build-shards --ratio 1000 / (GNU tar + sync)", "build-shards --ratio 1000 --split ours",
           "reference: GNU tar"),
          ("ingest (first run) / its floor (decode at 1/8)", "ingest (first run)", "floor:"))
"""(title, our command, the reference commands' start): each ratio is our images/s over the mean of the
reference runs' images/s."""


def rate_ratio(rows: list[dict], ours: str, reference: str) -> float | None:
    mine = [r for r in rows if r["command"] == ours]
    theirs = [r["images_per_s"] for r in rows if r["command"].startswith(reference)]
    return mine[0]["images_per_s"] / (sum(theirs) / len(theirs)) if mine and theirs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--negatives", type=int, default=NEGATIVES)
    parser.add_argument("--positives", type=int, default=POSITIVES, help="fewer for a quick smoke run")
    parser.add_argument("--base-negatives", type=int, default=10_000, help="negatives synthesised; the "
                        "others are hard links to them")
    parser.add_argument("--steps", default="all", help=f"comma-separated of {', '.join(STEPS)}, or all")
    parser.add_argument("--ratios", default="10,100,1000", help="the subsets the shards step builds")
    args = parser.parse_args()
    steps = STEPS if args.steps == "all" else tuple(args.steps.split(","))
    bench = Bench(args.work)
    build_folder(bench.raw, positives=args.positives, negatives=args.negatives,
                 base_negatives=args.base_negatives)
    total = args.positives + args.negatives
    # The floor runs before and after ingest and the ratio takes their mean: this VM's speed drifts by
    # 15-20% over minutes, which one run beside another would read as a difference.
    if "floor" in steps:
        step_floor(bench, total, "before")
    if "ingest" in steps:
        step_ingest(bench, total)
    if "floor" in steps:
        step_floor(bench, total, "after")
    if "shards" in steps:
        step_shards(bench, tuple(int(r) for r in args.ratios.split(",")))
    if "tar" in steps:
        if not (bench.manifests / "sixray1000.parquet").exists():
            subprocess.run(shards_cmd(bench, 1000, "ours"), check=True, stdout=subprocess.DEVNULL)
            shutil.rmtree(bench.shards / "sixray1000")
        step_tar(bench)
    if "stats" in steps:
        step_stats(bench, total)
    if "incremental" in steps:
        step_incremental(bench, args.positives, args.negatives, total)
    table = markdown(bench.rows)
    (args.work / "scale.md").write_text(table + "\n")
    (args.work / "scale.json").write_text(json.dumps(bench.rows, indent=1))
    print(table)


if __name__ == "__main__":
    main()
