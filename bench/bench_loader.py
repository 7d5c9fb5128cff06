"""CPU loader images/s per core, as ratios to (a) a bare Pillow decode(draft)+resize loop over the same JPEG
bytes and (b) torchvision ImageFolder + DataLoader over the same images extracted to a folder.

    python3 -m bench.bench_loader --images 3000 --work /tmp/bench-shards   (reuses bench_shards' data)

All three run in one process (workers=0) so each figure is per core; test-split transform (square
resize to 224, ImageNet normalisation). --dali also times the DALI loader CPU-only (no GPU here).
"""

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.bench_shards import make_dataset
from model.data import LoaderConfig, make_loader, split_info
from pipeline.shards import build_shards

SIZE = 224


def time_images(iterable) -> tuple[int, float]:
    start, n = time.perf_counter(), 0
    for batch in iterable:
        n += len(batch)
    return n, time.perf_counter() - start


def bare_loop(jpegs: list[bytes]):
    for data in jpegs:
        img = Image.open(io.BytesIO(data))
        img.draft("RGB", (SIZE, SIZE))
        yield [np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))]


def image_folder_loader(folder: Path):
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize((SIZE, SIZE)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    return (images for images, _ in torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-shards"))
    parser.add_argument("--dali", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest = make_dataset(args.work, args.images)
    shards = args.work / "shards" / "sixray1000"
    build_shards(manifest.parent, args.work / "shards", 1000, shard_size=500, positives_per_class=args.images)
    test_ids = [
        i
        for b in make_loader(shards, "test", LoaderConfig(batch_size=64, workers=0, test_size=8))
        for i in b.ids
    ]
    jpegs = [(args.work / "raw" / "JPEGImage" / f"{i}.jpg").read_bytes() for i in test_ids]
    folder = args.work / "imagefolder" / "all"
    folder.mkdir(parents=True, exist_ok=True)
    for image_id, data in zip(test_ids, jpegs, strict=True):
        (folder / f"{image_id}.jpg").write_bytes(data)

    cfg = LoaderConfig(batch_size=32, workers=0, test_size=SIZE)
    results = {
        "bare decode(draft)+resize": time_images(bare_loop(jpegs)),
        "torchvision ImageFolder+DataLoader": time_images(image_folder_loader(folder.parent)),
        "our CPU loader (indexed reads+draft)": time_images(b.ids for b in make_loader(shards, "test", cfg)),
    }
    if args.dali:
        dali = LoaderConfig(backend="dali", batch_size=32, workers=1, test_size=SIZE)
        results["DALI loader, CPU-only, 1 thread"] = time_images(
            b.ids for b in make_loader(shards, "test", dali)
        )
    print(f"{split_info(shards, 'test')['count']} test images of 632x571, one core each:")
    rates = {name: n / seconds for name, (n, seconds) in results.items()}
    for name, rate in rates.items():
        print(f"  {name:38s} {rate:8.0f} images/s")
    ours = rates["our CPU loader (indexed reads+draft)"]
    print(f"RATIO our loader / bare decode loop: {ours / rates['bare decode(draft)+resize']:.2f}")
    baseline = rates["torchvision ImageFolder+DataLoader"]
    print(f"RATIO our loader / torchvision ImageFolder: {ours / baseline:.2f}")


if __name__ == "__main__":
    main()
