"""Ingest throughput as a RATIO to a bare read-and-sha256 loop over the same files, measured in one run.

    python3 -m bench.bench_ingest [--images 3000] [--data /tmp/bench-ingest-raw] [--workers N]

The raw folder is generated once (pipeline.xray.synth at real size, median ~632x571; plain PIL noise and
shapes if the generator is missing) and reused. Files are read once first so both loops run from the
page cache. Reference: one process reading each file and computing its sha256 (the least any ingest must
do). Measured: the full `ingest` (validation at 1/8-scale decode, XMLs, labels, manifest) on every core,
and the validation step alone on one core, so the per-core cost is visible too.
"""

import argparse
import hashlib
import io
import random
import shutil
import tempfile
import time
from pathlib import Path

from base.distribute import default_workers
from pipeline.ingest import ingest
from pipeline.validate import inspect_file


def generate(raw: Path, images: int) -> None:
    try:
        from pipeline.xray.synth import synthesize
    except ImportError:
        return generate_with_pil(raw, images)
    positives = images // 11  # SIXray10's ratio: ten negatives per positive
    synthesize(raw, positives=positives, negatives=images - positives, size_factor=1.0)


def generate_with_pil(raw: Path, images: int) -> None:
    from PIL import Image, ImageDraw

    (raw / "JPEGImage").mkdir(parents=True)
    (raw / "ImageSet").mkdir()
    rng = random.Random(0)
    lines = ["name,Gun,Knife,Wrench,Pliers,Scissors"]
    for i in range(images):
        img = Image.effect_noise((632, 571), 20).convert("RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(12):
            x, y = rng.randrange(600), rng.randrange(540)
            draw.rectangle((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)),
                           fill=tuple(rng.randrange(256) for _ in range(3)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        (raw / "JPEGImage" / f"N{i:07d}.jpg").write_bytes(buf.getvalue())
        lines.append(f"N{i:07d},-1,-1,-1,-1,-1")
    (raw / "ImageSet" / "all.csv").write_text("\n".join(lines) + "\n")


def read_and_sha256(files: list[Path]) -> None:
    for f in files:
        hashlib.sha256(f.read_bytes()).hexdigest()


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-ingest-raw")
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    if not (args.data / "JPEGImage").is_dir():
        print(f"generating {args.images} images in {args.data} ...")
        generate(args.data, args.images)
    files = sorted((args.data / "JPEGImage").iterdir())
    n, size = len(files), sum(f.stat().st_size for f in files)
    read_and_sha256(files)  # warm the page cache for both measurements

    bare = timed(read_and_sha256, files)
    validate = timed(lambda: [inspect_file(f) for f in files])
    out = Path(tempfile.mkdtemp(prefix="bench-ingest-out-"))
    try:
        full = timed(lambda: ingest(args.data, out, workers=args.workers, chunk_size=500))
    finally:
        shutil.rmtree(out)

    print(f"{n} images, {size / n / 1024:.0f} KiB mean, {args.workers} workers")
    print(f"reference  read+sha256, 1 process      {n / bare:9.0f} images/s")
    print(f"validate   inspect_file, 1 process  {n / validate:9.0f} images/s")
    print(f"ingest     full stage, {args.workers} workers     {n / full:9.0f} images/s")
    print(f"RATIO ingest / read+sha256 = {bare / full:.3f}  "
          f"(per core {bare / full / args.workers:.3f}; validate alone per core {bare / validate:.3f})")


if __name__ == "__main__":
    main()
