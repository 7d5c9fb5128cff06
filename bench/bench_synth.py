"""Synth throughput: images/s per core at size factor 1.0 (real sizes, median 632x571).

Reference, measured in the same run on the same image sizes: a bare Pillow loop that JPEG-encodes
random images at the same quality (the floor every generator pays). Prints the ratio synth/reference.
Then the whole stage (`synthesize`, every core, files written) for images/s overall and per core.

    python3 -m bench.bench_synth [--images 200] [--difficulty 0.5]
"""

import argparse
import io
import tempfile
import time

import numpy as np
from PIL import Image

from base.distribute import default_workers
from pipeline.layout import JPEG_QUALITY, positive_id
from pipeline.xray.synth import image_rng, image_size, render_image, synthesize


def synth_loop(ids, difficulty):
    for image_id in ids:
        render_image(0, image_id, 1.0, difficulty)


def encode_loop(sizes):
    rng = np.random.default_rng(0)
    for width, height in sizes:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(io.BytesIO(), "JPEG", quality=JPEG_QUALITY)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--difficulty", type=float, default=0.5)
    args = parser.parse_args()
    # half positives, half negatives, the sizes render_image will draw for them
    ids = [positive_id(i) for i in range(1, args.images // 2 + 1)]
    ids += [f"N{i:07d}" for i in range(1, args.images - len(ids) + 1)]
    sizes = [image_size(image_rng(0, "synth-scan", i), 1.0) for i in ids]
    synth_s = timed(synth_loop, ids, args.difficulty)
    encode_s = timed(encode_loop, sizes)
    synth_rate, encode_rate = len(ids) / synth_s, len(ids) / encode_s
    print(f"images: {len(ids)}, median size {int(np.median([s[0] for s in sizes]))}x"
          f"{int(np.median([s[1] for s in sizes]))}, difficulty {args.difficulty}")
    print(f"synth render+encode, 1 core:      {synth_rate:7.1f} img/s per core")
    print(f"reference Pillow JPEG encode:     {encode_rate:7.1f} img/s per core")
    print(f"RATIO synth / bare encode:        {synth_rate / encode_rate:7.3f}")
    workers = default_workers()
    with tempfile.TemporaryDirectory() as out:
        n = 100 * workers
        summary = synthesize(out, positives=n // 10, negatives=n - n // 10, difficulty=args.difficulty,
                             chunk_size=25, workers=workers)
    rate = summary["images_per_s"]
    print(f"synthesize() on {workers} cores, files written: {rate:7.1f} img/s = {rate / workers:.1f}/core")
    print(f"full 1,059,231 images at this rate: {1_059_231 / rate / 3600:.1f} h")


if __name__ == "__main__":
    main()
