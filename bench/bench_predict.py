"""`model predict` images/s on the CPU against `model eval`'s rate on the same images, and the ONNX export
against PyTorch on the CPU (scores and speed).

    python3 -m bench.bench_predict     (after ./demo.sh: its checkpoint, shards and raw scans)

Same images: the test split of the demo's shards (1,320 scans). `model eval`'s rate is its test pass (the
loop it times and prints: CPU loader, pointing game included) at --workers/--batch-size; predict reads (a)
the same shards with --split test, (b) the same scans as JPEG files (a folder of links to the raw
download), (c) that folder through the ONNX export (onnxruntime). Then the network alone: PyTorch against
onnxruntime on one fixed batch, median of --repeat runs, and the largest score difference.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import model.data as data
from model.evaluate import score_test_split
from model.export import OnnxScorer, PixelScorer, export_onnx
from model.inference import load_model
from model.predict import TorchScorer, predict_scans, scan_units

ROOT = Path(__file__).resolve().parents[1]


def eval_rate(checkpoint, shards, workers: int, batch_size: int) -> tuple[float, int]:
    """`model eval`'s test pass, timed as it times itself (images / seconds of the pass)."""
    model, tcfg, _ = load_model(checkpoint, torch.device("cpu"))
    lcfg = data.LoaderConfig.of_run(tcfg, backend="cpu", batch_size=batch_size, workers=workers)
    start = time.perf_counter()
    pred = score_test_split(model, data, shards, lcfg, torch.device("cpu"), fuse=tcfg.pointing_fuse,
                            tolerance=tcfg.pointing_tolerance, overlays=0)
    return len(pred["ids"]) / (time.perf_counter() - start), len(pred["ids"])


def predict_rate(units, total, scorer, size, out, workers: int, batch_size: int) -> dict:
    return predict_scans(units, total, scorer, size, out, thresholds=None, batch_size=batch_size,
                         workers=workers)


def link_folder(shard_units, raw: Path, folder: Path) -> Path:
    """A folder of symbolic links to the raw JPEGs of the shards' samples (the same scans as files)."""
    folder.mkdir(parents=True, exist_ok=True)
    for unit in shard_units:
        for sample in data.read_shards([(unit.url, unit.stored)], unit.keep):
            link = folder / f"{sample['__key__']}.jpg"
            if not link.exists():
                link.symlink_to((raw / "JPEGImage" / link.name).resolve())
    return folder


def network_only(checkpoint, onnx_path, batch: int, repeat: int, threads: int | None = None) -> dict:
    """Median ms per batch of PyTorch and onnxruntime on one fixed uint8 batch, and max |difference|."""
    model, tcfg, _ = load_model(checkpoint, torch.device("cpu"))
    images = torch.randint(0, 256, (batch, 3, tcfg.test_size, tcfg.test_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    torch_scorer, onnx_scorer = PixelScorer(model).eval(), OnnxScorer(onnx_path, threads)
    with torch.no_grad():
        want = torch_scorer(images).numpy()
    got = onnx_scorer(images.numpy())[0]
    times = {"torch": [], "onnx": []}
    for _ in range(repeat):
        for name, run in (("torch", lambda: torch_scorer(images)), ("onnx", lambda: onnx_scorer(images))):
            with torch.no_grad():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    return {"ms": ms, "max_abs_diff": float(np.abs(got - want).max()), "size": tcfg.test_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="runs/demo/best.pt")
    ap.add_argument("--shards", default="shards/sixray10")
    ap.add_argument("--raw", default="raw/demo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and onnxruntime threads (default: torch's default, every core)")
    ap.add_argument("--backbone", default=None,
                    help="also compare ONNX and PyTorch on a random-weight CHR of this backbone at 224 px")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tcfg, _ = load_model(args.checkpoint, torch.device("cpu"))
    size, kw = tcfg.test_size, {"workers": args.workers, "batch_size": args.batch_size}
    units, total = scan_units(args.shards, split="test")
    folder_units, _ = scan_units(link_folder(units, Path(args.raw), work / "scans"))
    onnx_path = work / "model.onnx"
    export_onnx(args.checkpoint, onnx_path)
    rates = {"model eval (test pass, shards)": eval_rate(args.checkpoint, args.shards, **kw)[0]}
    torch_scorer = TorchScorer(model, torch.device("cpu"))
    runs = {"model predict, shards --split test": (units, torch_scorer),
            "model predict, folder of JPEGs": (folder_units, torch_scorer),
            "model predict --onnx, folder of JPEGs": (folder_units, OnnxScorer(onnx_path, args.threads))}
    for name, (u, scorer) in runs.items():
        summary = predict_rate(u, total, scorer, size, work / name.replace(" ", "_"), **kw)
        assert summary["scans"] == total, summary
        rates[name] = summary["images_per_s"]
    reference = rates["model eval (test pass, shards)"]
    print(f"{total} test scans at {size} px, {args.workers} workers, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads")
    for name, rate in rates.items():
        print(f"  {name:<40} {rate:7.1f} img/s   x{rate / reference:.2f} of model eval")
    net = network_only(args.checkpoint, onnx_path, args.batch_size, args.repeat, args.threads)
    ms = net["ms"]
    print(f"network alone, batch {args.batch_size} at {net['size']} px, median of {args.repeat}: PyTorch "
          f"{ms['torch']:.1f} ms, onnxruntime {ms['onnx']:.1f} ms (x{ms['torch'] / ms['onnx']:.2f} faster); "
          f"max |ONNX - PyTorch| {net['max_abs_diff']:.1e}")
    if args.backbone:
        print_network(random_checkpoint(args.backbone, work / f"{args.backbone}.pt"), work, args)


def random_checkpoint(backbone: str, path: Path) -> Path:
    from model.checkpoint import save_checkpoint
    from model.chr import build_model
    from model.config import ModelConfig, TrainConfig, to_dict

    cfg = TrainConfig(model=ModelConfig(backbone=backbone))
    torch.manual_seed(0)
    save_checkpoint(path, {"model": build_model(cfg.model).state_dict(), "config": to_dict(cfg), "epoch": 0})
    return path


def print_network(checkpoint: Path, work: Path, args) -> None:
    onnx_path = work / f"{checkpoint.stem}.onnx"
    start = time.perf_counter()
    export_onnx(checkpoint, onnx_path)
    seconds = time.perf_counter() - start
    net = network_only(checkpoint, onnx_path, args.batch_size, max(3, args.repeat // 4), args.threads)
    ms = net["ms"]
    print(f"{checkpoint.stem} (random weights), batch {args.batch_size} at {net['size']} px: PyTorch "
          f"{ms['torch']:.0f} ms, onnxruntime {ms['onnx']:.0f} ms (x{ms['torch'] / ms['onnx']:.2f} faster); "
          f"max |ONNX - PyTorch| {net['max_abs_diff']:.1e}; export {seconds:.0f} s")


if __name__ == "__main__":
    main()
