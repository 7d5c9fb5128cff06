"""Ingest's floor: a bare loop that opens every JPEG of a raw folder and decodes it at 1/8 scale.

    python3 -m bench.decode_floor --raw /tmp/scale/raw [--workers N]

That decode is the work validation cannot skip (it reads the whole entropy-coded stream, which is how
truncation and corrupt data surface), so `pipeline ingest` can at best match this loop. It runs on every
core (one process per core, files dealt out in chunks), with no hashing, no stat, no output; it prints
one JSON line: images, seconds (start-up included, as for the command it is compared with), images/s.
"""

import argparse
import io
import json
import os
import time
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from pipeline.layout import JPEG_SUFFIXES

CHUNK = 2_000


def decode_chunk(paths: list[bytes]) -> int:
    for path in paths:
        with open(path, "rb") as f:
            img = Image.open(io.BytesIO(f.read()))
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
    return len(paths)


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    folder = os.fsencode(args.raw / "JPEGImage")
    suffixes = tuple(os.fsencode(s) for s in JPEG_SUFFIXES)  # the files ingest lists
    paths = [os.path.join(folder, e.name) for e in os.scandir(folder) if e.name.lower().endswith(suffixes)]
    chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
    with Pool(args.workers) as pool:
        images = sum(pool.imap_unordered(decode_chunk, chunks))
    seconds = time.perf_counter() - start
    print(json.dumps({"images": images, "seconds": round(seconds, 2),
                      "images_per_s": round(images / seconds)}))


if __name__ == "__main__":
    main()
