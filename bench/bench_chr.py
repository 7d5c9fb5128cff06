"""CHR inference time over the plain backbone's (paper: +7.81%, ResNet34 on a V100), as a ratio from one run.

Reference: the same backbone with only the top classifier (variant `baseline`: backbone + 1x1 conv + GAP),
timed in the same process on the same random batch; the two models alternate rounds so drift in machine
load hits both. Prints the median time per batch of each and the ratio CHR / baseline. CHR uses the
default (the authors') refinement unless `--refinement light`.

    python3 -m bench.bench_chr --backbone resnet34 --size 224 --batch 8 --rounds 10
"""

import statistics
import time

import click
import torch

from model.chr import build_model
from model.config import REFINEMENTS, ModelConfig


@torch.no_grad()
def time_once(model, x) -> float:
    start = time.perf_counter()
    model(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@click.command()
@click.option("--backbone", default="resnet34", show_default=True, help="the paper timed ResNet34")
@click.option("--refinement", type=click.Choice(REFINEMENTS), default=ModelConfig.refinement,
              show_default=True)
@click.option("--size", type=int, default=224, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--rounds", type=int, default=10, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def main(backbone, refinement, size, batch, rounds, device):
    torch.manual_seed(0)
    models = {}
    for variant in ("baseline", "chr"):
        cfg = ModelConfig(backbone=backbone, variant=variant, refinement=refinement)
        models[variant] = build_model(cfg).eval().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    for model in models.values():  # warm-up: allocator, kernels selection
        time_once(model, x)
    times = {v: [] for v in models}
    for _ in range(rounds):
        for v, model in models.items():
            times[v].append(time_once(model, x))
    base, chr_ = (statistics.median(times[v]) for v in ("baseline", "chr"))
    on_gpu = device.startswith("cuda")
    device_name = torch.cuda.get_device_name() if on_gpu else f"cpu x{torch.get_num_threads()} threads"
    print(f"{backbone} ({refinement} refinement) {size}px batch {batch} on {device_name}, "
          f"median of {rounds} rounds")
    print(f"baseline {base * 1000:.1f} ms/batch, chr {chr_ * 1000:.1f} ms/batch")
    print(f"RATIO chr/baseline = {chr_ / base:.3f} ({100 * (chr_ / base - 1):+.2f}%; paper: +7.81%)")


if __name__ == "__main__":
    main()
