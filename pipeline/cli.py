"""`pipeline` command line: thin click wrappers over the stage functions."""

import click

from base.errors import EXIT_DATA, Commands
from base.vocabulary import RATIOS, RELEASE_NEGATIVES, RELEASE_POSITIVES
from pipeline.subsets import SubsetConfig
from pipeline.validate import DEFAULT_MAX_PIXELS


@click.group(cls=Commands)
def main():
    """SIXray data pipeline: synth -> ingest -> build-shards -> stats."""


# --- synth (pipeline/xray/synth.py) ---


@main.command("synth")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Raw root to write (resumable).")
@click.option("--positives", type=click.IntRange(0, 99_999), default=RELEASE_POSITIVES, show_default=True)
@click.option("--negatives", type=click.IntRange(0, 9_999_999), default=RELEASE_NEGATIVES, show_default=True)
@click.option("--size-factor", type=click.FloatRange(0, 4, min_open=True), default=1.0, show_default=True,
              help="Scales image sides (1.0: real sizes, median 632x571).")
@click.option("--difficulty", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="0 easy .. 1 hard: smaller, rotated, hidden threats; more clutter and look-alikes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Images per resumable task.")
@click.option("--workers", type=click.IntRange(min=1), help="Local processes (default: every core).")
@click.option("--scheduler", help="Dask scheduler address: run the chunk tasks on that cluster.")
@click.option("--threats", "threats_out", type=click.Path(file_okay=False),
              help="Also draw each positive's threats alone (no bag) into this threat library.")
def synth_command(out, positives, negatives, size_factor, difficulty, seed, chunk_size, workers, scheduler,
                  threats_out):
    """Write a synthetic SIXray raw dataset (JPEGImage/, Annotation/, ImageSet/) in the real layout."""
    from pipeline.xray.synth import synthesize

    s = synthesize(out, positives=positives, negatives=negatives, size_factor=size_factor,
                   difficulty=difficulty, seed=seed, chunk_size=chunk_size, workers=workers,
                   scheduler=scheduler)
    click.echo(f"{s['out']}: {s['positives']} positives + {s['negatives']} negatives; "
               f"wrote {s['written']} images in {s['seconds']} s ({s['images_per_s']} img/s); "
               f"{s['skipped_chunks']} chunks already done")
    for ratio, splits in s["subsets"].items():
        click.echo(f"  SIXray{ratio:<5} train {splits['train']:>9}  test {splits['test']:>8}")
    if threats_out:
        from pipeline.xray.alone import synth_collection

        t = synth_collection(threats_out, positives=positives, seed=seed, size_factor=size_factor,
                             difficulty=difficulty, chunk_size=chunk_size, workers=workers,
                             scheduler=scheduler)
        click.echo(f"threats alone: {t['layers']} layers in {t['collection']}")

# --- threats (pipeline/threats.py) ---


@main.command("threats")
@click.option("--raw", type=click.Path(exists=True, file_okay=False), required=True,
              help="Raw root whose Annotation/ boxes are cut (a user's threat scans too).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Threat library folder.")
@click.option("--name", help="Collection name in the library (default: the raw folder's name).")
@click.option("--split", type=click.Choice(["train", "test", "all"]), default="train", show_default=True,
              help="Cut the scans of this split of the raw folder's manifest (all: every boxed scan).")
@click.option("--manifests", type=click.Path(file_okay=False), default="manifests", show_default=True,
              help="Folder of the raw folder's manifest.parquet (pipeline ingest), for the split.")
@click.option("--subset", type=click.Path(dir_okay=False),
              help="Cut only this subset manifest's scans, e.g. manifests/sixray1000.parquet.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Scans per resumable task.")
@click.option("--workers", type=click.IntRange(min=1), help="Local processes (default: every core).")
@click.option("--scheduler", help="Dask scheduler address: run the chunk tasks on that cluster.")
def threats_command(raw, out, name, split, manifests, subset, chunk_size, workers, scheduler):
    """Cut every boxed threat into a transmission layer (the bag behind it divided out); resumable."""
    from pipeline.threats import build_threats

    s = build_threats(raw, out, name=name, split=split, manifests=manifests, subset=subset,
                      chunk_size=chunk_size, workers=workers, scheduler=scheduler)
    dropped = ", ".join(f"{n} {reason}" for reason, n in s["dropped"].items()) or "none"
    click.echo(f"{s['collection']}: {s['layers']} layers from {s['boxes']} boxes of {s['scans']} scans "
               f"({s['skipped_chunks']} chunks already done); dropped: {dropped}")
    click.echo("  per class: " + ", ".join(f"{c} {n}" for c, n in s["per_class"].items()))

# --- tip (pipeline/tip.py) ---


@main.command("tip")
@click.option("--raw", type=click.Path(exists=True, file_okay=False), required=True,
              help="Raw root whose train-split negatives receive the threats.")
@click.option("--threats", type=click.Path(exists=True, file_okay=False), required=True,
              help="Threat library (pipeline threats / pipeline synth --threats).")
@click.option("--count", type=click.IntRange(1, 9_999_999), required=True, help="TIP scans to write.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Where the TIP scans go, in the real layout (may be --raw itself).")
@click.option("--manifests", type=click.Path(file_okay=False), default="manifests", show_default=True,
              help="Folder of the raw folder's manifest.parquet (pipeline ingest): our split.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-threats", type=click.IntRange(1, 3), default=3, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=200, show_default=True,
              help="Scans per resumable task.")
@click.option("--preview", type=click.Path(dir_okay=False),
              help="Write a contact sheet PNG of the first 16 TIP scans with their boxes.")
@click.option("--workers", type=click.IntRange(min=1), help="Local processes (default: every core).")
@click.option("--scheduler", help="Dask scheduler address: run the chunk tasks on that cluster.")
def tip_command(raw, threats, count, out, manifests, seed, max_threats, chunk_size, preview, workers,
                scheduler):
    """Threat image projection: N new positives, threats multiplied into train-split negatives."""
    from pipeline.tip import make_tip

    s = make_tip(raw, threats, out, count=count, manifests=manifests, seed=seed, max_threats=max_threats,
                 chunk_size=chunk_size, preview=preview, workers=workers, scheduler=scheduler)
    click.echo(f"{s['out']}: {s['count']} TIP scans from {s['negatives']} train negatives and {s['layers']} "
               f"layers; wrote {s['written']} in {s['seconds']} s ({s['scans_per_s']} scans/s); "
               f"{s['skipped_chunks']} chunks already done")
    click.echo("  boxes: " + ", ".join(f"{c} {n}" for c, n in s["boxes"].items()))
    if preview:
        click.echo(f"  preview: {preview}")

# --- ingest (pipeline/ingest.py) ---


@main.command("ingest")
@click.option("--raw", type=click.Path(exists=True, file_okay=False), required=True,
              help="Raw root holding JPEGImage/, ImageSet/ and Annotation/.")
@click.option("--out", type=click.Path(file_okay=False), default="manifests", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of our train/test split.")
@click.option("--workers", type=click.IntRange(min=1), help="Local processes (default: every core).")
@click.option("--scheduler", help="Dask scheduler address: run the chunk tasks on that cluster.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Images per resumable task.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Header width*height over this is too_large (checked before decoding).")
def ingest_command(raw, out, seed, workers, scheduler, chunk_size, max_pixels):
    """Validate a raw SIXray folder into OUT/manifest.parquet; exit 1 if any row is unusable."""
    from pipeline.ingest import ingest

    summary = ingest(raw, out, seed=seed, workers=workers, scheduler=scheduler, chunk_size=chunk_size,
                     max_pixels=max_pixels)
    click.echo(f"{summary['total']} ids: {summary['usable']} usable, {summary['bad']} bad "
               f"({summary['chunks_done_before']} chunks already done)")
    counts = ", ".join(f"{summary[k]} {k}" for k in ("added", "changed", "removed", "unchanged"))
    manifest = "written" if summary["manifest_written"] else "unchanged (same inputs)"
    click.echo(f"images: {counts} ({summary['validated']} validated); manifest {manifest}")
    for status, count in summary["by_status"].items():
        click.echo(f"  {status:<15} {count:>9}")
    click.echo(f"  split: {', '.join(f'{k} {v}' for k, v in summary['by_split'].items())}")
    for skipped in summary["skipped_label_files"]:
        click.echo(f"error: {skipped['error']} (file skipped, the others read)", err=True)
    if summary["bad"]:
        click.echo(f"error: {summary['bad']} of {summary['total']} ids unusable (statuses above; each row's "
                   f"error column names the file: pipeline stats lists them)", err=True)
    if summary["bad"] or summary["skipped_label_files"]:
        raise SystemExit(EXIT_DATA)

# --- build-shards (pipeline/shards.py) ---


@main.command("build-shards")
@click.option("--ratio", type=click.Choice([str(r) for r in RATIOS]), required=True,
              help="SIXray10/100/1000.")
@click.option("--manifests", type=click.Path(file_okay=False), default="manifests", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="shards", show_default=True)
@click.option("--raw", type=click.Path(exists=True, file_okay=False), help="Raw root (default: manifest's).")
@click.option("--split", "split_source", type=click.Choice(["ours", "official"]), default="ours",
              show_default=True, help="ours: the manifest's split; official: the label files'.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--shard-size", type=click.IntRange(min=1), default=SubsetConfig.shard_size, show_default=True)
@click.option("--shard-bytes", type=click.IntRange(min=1), default=SubsetConfig.shard_bytes,
              show_default=True)
@click.option("--positives-per-class", type=click.IntRange(min=1), default=SubsetConfig.positives_per_class,
              show_default=True)
@click.option("--exclude-source", "exclude_sources", type=click.Choice(["real", "synth", "tip"]),
              multiple=True, help="Leave out the rows of this source (repeatable); tip: no TIP scans.")
@click.option("--workers", type=click.IntRange(min=1), help="Local processes (default: every core).")
@click.option("--scheduler", help="Dask scheduler address: run the shard tasks on that cluster.")
@click.option("--verify", is_flag=True,
              help="Check every finished shard's CRC-32 (reads them all) and rewrite a damaged one; hash "
                   "every JPEG written against the manifest's sha256, not only those whose size or mtime "
                   "changed since ingest.")
def build_shards_command(ratio, manifests, out, raw, split_source, seed, shard_size, shard_bytes,
                         positives_per_class, exclude_sources, workers, scheduler, verify):
    """Write manifests/sixray<N>.parquet and shards/sixray<N>/ (tar + DALI index + stats); resumable."""
    import json
    from pathlib import Path

    from pipeline.shards import build_shards

    result = build_shards(Path(manifests), Path(out), int(ratio), raw=raw and Path(raw),
                          split_source=split_source, seed=seed, shard_size=shard_size,
                          shard_bytes=shard_bytes, positives_per_class=positives_per_class,
                          exclude_sources=exclude_sources, workers=workers, scheduler=scheduler,
                          verify=verify)
    click.echo(f"sixray{ratio}: {result['shards']} shards ({result['written']} written, "
               f"{result['skipped']} already done)")
    for split in ("train", "test"):
        sel = result["selection"][split]
        short = f", {sel['negatives_short']} fewer negatives than wanted" if sel["negatives_short"] else ""
        tip = f", {sel['tip']} TIP scans" if sel.get("tip") else ""
        click.echo(f"  {split}: {result[split]['count']} images ({sel['positives']} positives, "
                   f"{sel['negatives']} negatives{short}{tip}); per class {json.dumps(sel['per_class'])}")

# --- stats (pipeline/stats.py) ---


@main.command("stats")
@click.option("--manifests", type=click.Path(exists=True, file_okay=False), default="manifests",
              show_default=True, help="Folder with manifest.parquet and any sixray<N>.parquet.")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable output, with every id of every leaking group.")
def stats_command(manifests, as_json):
    """Table 1, counts per subset and split, image sizes, problems, near-duplicate leakage."""
    import json

    from pipeline.stats import compute_stats, format_stats

    report = compute_stats(manifests, full_leakage=as_json)
    click.echo(json.dumps(report, indent=1) if as_json else format_stats(report))

# --- export (pipeline/export.py) ---


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(["coco", "yolo"]), required=True)
@click.option("--subset", type=click.Choice([f"sixray{r}" for r in RATIOS]), required=True,
              help="Reads MANIFESTS/<subset>.parquet (written by build-shards).")
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--manifests", type=click.Path(file_okay=False), default="manifests", show_default=True)
@click.option("--raw", type=click.Path(exists=True, file_okay=False), help="Raw root (default: manifest's).")
def export_command(fmt, subset, out, manifests, raw):
    """A subset's boxes as COCO JSON (one file per split) or YOLO labels + lists; images not copied."""
    from pipeline.export import export_subset

    s = export_subset(manifests, out, fmt, subset, raw=raw)
    click.echo(f"{subset} -> {s['out']} ({fmt}): {', '.join(s['files'])}")
    for split in ("train", "test"):
        c = s[split]
        per_class = " ".join(f"{k} {v}" for k, v in c["boxes"].items())
        skipped = f", {c['skipped_unboxed']} positives without boxes skipped" if c["skipped_unboxed"] else ""
        click.echo(f"  {split}: {c['images']} images ({c['negatives']} without boxes), "
                   f"{sum(c['boxes'].values())} boxes ({per_class}); {c['clipped']} clipped, "
                   f"{c['dropped']} dropped{skipped}")
