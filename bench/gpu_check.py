"""GPU check (issue 7, item 6): the loader, training and inference figures that need a CUDA machine, in
one run of a few minutes on a bare machine, printed as one table and written as JSON.

  (a) DALI loader (device="mixed": nvJPEG decoding on the GPU) images/s at 224 px against the CPU loader
      (webdataset + Pillow) with one DataLoader worker per core, over the same train shards, same
      transform (square resize 256, random crop 224, flip), batches landing on the GPU;
  (b) CHR training images/s fed from those shards (DALI when it runs, else the CPU loader) against the
      same model and step on one fixed in-memory GPU batch; ratio = shards / in-memory is the loader's
      cost to training;
  (c) CHR vs baseline (top classifier only) inference time, as bench/bench_chr.py times it (fp32), and
      with AMP + channels_last as `model eval` runs on CUDA.

Goals: DALI >= 10,000 images/s on one H100/H200; training from shards >= 0.9x in-memory.

Input: it makes its own shards with the project's stage functions, `pipeline synth` -> `pipeline ingest`
-> `pipeline build-shards --ratio 10`, under --work (resumed when already there). The loaders read
planned train epochs (model/epochs.py) by sample offsets, whatever the shard count.

Loaders are timed in steady state: one stream per loader (the CPU loader's epochs one after another, the
DALI pipeline built once over many epochs' planned batches), warmed up, then counted over a fixed
window; a DALI pipeline per epoch would, on this small set, time its start rather than the decoding.

    bench/gpu_check.sh                  # = PYTHONPATH=. python3 -m bench.gpu_check: full run on CUDA
    bench/gpu_check.sh --small          # tiny smoke run; automatic without CUDA

The full run is sized for about 3-4 minutes (8 at most) on one H100/H200 with 16 cores: 600 positives
+ 6,000 negatives at real size, resnet50 CHR, batch 64. Data lands in
<work>/p<positives>-n<negatives>-f<size factor>-s<seed>/ (raw/, manifests/, shards-whole/ whose one
train shard gives the train count, shards-<shard size>/ that the loaders read).
Without CUDA it runs tiny counts and the tiny backbone on the CPU (--small on a CUDA machine: the same
on the GPU), measures what it can (the CPU loader, DALI with CPU decoding, training and inference on
the CPU), says which GPU items it skipped and why, and exits 0. Exit 1 only when a measurement raised
an error (listed in the JSON under "errors"). The JSON is rewritten after every section, so a run cut
short still leaves what it measured.
"""

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

import model.data as data
from base.distribute import default_workers
from bench.bench_chr import time_once
from model.chr import build_model
from model.config import ModelConfig, TrainConfig
from model.train import train_step

BENCH = Path(__file__).resolve().parent

DALI_GOAL = 10_000  # images/s, DALI mixed decoding on one H100/H200
TRAIN_GOAL = 0.9  # training from shards / in-memory
PAPER_CHR_OVERHEAD = 0.0781  # the paper's CHR inference overhead on a GPU

FULL = dict(positives=600, negatives=6000, size_factor=1.0, backbone="resnet50", batch=64, crop=224,
            loader_seconds=10.0, train_seconds=15.0, warmup=10, infer_batch=32, infer_rounds=50)
SMALL = dict(positives=30, negatives=300, size_factor=0.25, backbone="tiny", batch=16, crop=64,
             loader_seconds=1.5, train_seconds=1.5, warmup=2, infer_batch=8, infer_rounds=5)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"), help="data folders, one per setting")
    out = os.environ.get("OUT")
    p.add_argument("--json", type=Path, default=Path(out) / "gpu_check.json" if out else None,
                   help="JSON report (default: $OUT/gpu_check.json if $OUT is set, else in --work)")
    p.add_argument("--small", action="store_true", help="tiny smoke run (automatic without CUDA)")
    p.add_argument("--positives", type=int, help=f"synthetic positives ({FULL['positives']}; small "
                   f"{SMALL['positives']})")
    p.add_argument("--negatives", type=int, help=f"synthetic negatives ({FULL['negatives']}; small "
                   f"{SMALL['negatives']})")
    p.add_argument("--size-factor", type=float, help="synth image scale (1.0: real SIXray sizes; small 0.25)")
    p.add_argument("--backbone", help="CHR backbone (resnet50; small: tiny)")
    p.add_argument("--batch", type=int, help="loader and training batch (64; small 16)")
    p.add_argument("--crop", type=int, help="training input side (224; small 64); resize = crop*256/224")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="CPU loader DataLoader workers and DALI threads (default: every core)")
    p.add_argument("--loader-seconds", type=float, help="timed window per loader (10; small 1.5)")
    p.add_argument("--train-seconds", type=float, help="timed window per training measure (15; small 1.5)")
    p.add_argument("--warmup", type=int, help="untimed batches/steps before each window (10; small 2)")
    p.add_argument("--infer-batch", type=int, help="inference batch, bench_chr.py --batch (32; small 8)")
    p.add_argument("--infer-rounds", type=int, help="inference rounds, bench_chr.py --rounds (50; small 5)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.cuda = torch.cuda.is_available()
    args.small = args.small or not args.cuda
    for key, value in (SMALL if args.small else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.json is None:
        args.json = args.work / "gpu_check.json"
    args.resize = round(args.crop * 256 / 224)
    return args


class Report:
    """Figures, skipped items and errors; rewritten to JSON after each section."""

    def __init__(self, args):
        self.args, self.path = args, args.json
        self.doc = {
            "gpu": None,  # torch.cuda.get_device_name(), set once the data is made (CUDA untouched before)
            "device": "cuda" if args.cuda else "cpu",
            "mode": "small" if args.small else "full",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "dali": dali_version(),
            "cpu_count": os.cpu_count(),
            "workers": args.workers,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "data": {},
            "figures": {},
            "goals": {},
            "skipped": [],
            "errors": [],
            "rows": [],
        }

    def skip(self, item: str, reason: str) -> None:
        self.doc["skipped"].append({"item": item, "reason": reason})
        print(f"SKIPPED {item}: {reason}", flush=True)

    def error(self, item: str, error: BaseException) -> None:
        self.doc["errors"].append({"item": item, "error": f"{type(error).__name__}: {error}"})
        traceback.print_exc()
        print(f"ERROR {item}: {type(error).__name__}: {error}", flush=True)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.doc, indent=1) + "\n")
        os.replace(tmp, self.path)


def dali_version() -> str | None:
    try:
        import nvidia.dali

        return nvidia.dali.__version__
    except Exception:  # not installed, or its libraries do not load
        return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- data: the project's own stages ---


def make_shards(args, report: Report) -> Path:
    from pipeline.ingest import ingest
    from pipeline.shards import build_shards
    from pipeline.xray.synth import synthesize

    started = time.perf_counter()
    # One folder per data setting, so a rerun with other counts never meets synth's mixed-data guard.
    work = args.work / f"p{args.positives}-n{args.negatives}-f{args.size_factor:g}-s{args.seed}"
    raw, manifests = work / "raw", work / "manifests"
    synth = synthesize(raw, positives=args.positives, negatives=args.negatives,
                       size_factor=args.size_factor, seed=args.seed)
    summary = ingest(raw, manifests, seed=args.seed)
    if summary["bad"]:
        raise RuntimeError(f"ingest found {summary['bad']} unusable rows in {raw}")
    # One train shard per CPU-loader worker: a first build in whole-split shards gives the train count.
    probe = build_shards(manifests, work / "shards-whole", 10, seed=args.seed, shard_size=10**9)
    shard_size = max(1, math.ceil(probe["train"]["count"] / args.workers))
    out = work / f"shards-{shard_size}"
    result = build_shards(manifests, out, 10, seed=args.seed, shard_size=shard_size)
    shards = out / "sixray10"
    info = data.split_info(shards, "train")
    report.doc["data"] = {
        "shards": str(shards),
        "synth": {"positives": args.positives, "negatives": args.negatives, "size_factor": args.size_factor,
                  "images_per_s": synth["images_per_s"]},
        "train_images": info["count"],
        "train_shards": len(info["shards"]),
        "test_images": result["test"]["count"],
        "shard_size": shard_size,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if len(info["shards"]) % min(args.workers, len(info["shards"])):
        print(f"note: {len(info['shards'])} train shards for {args.workers} workers: each worker reads "
              "every shard and keeps its share", flush=True)
    print(f"data: {info['count']} train images in {len(info['shards'])} shards ({shards}), "
          f"{report.doc['data']['seconds']} s", flush=True)
    return shards


# --- loaders: endless steady-state streams of data.Batch ---


def loader_config(args, backend: str, device: torch.device) -> data.LoaderConfig:
    return data.LoaderConfig(backend=backend, batch_size=args.batch, workers=args.workers, resize=args.resize,
                             crop=args.crop, test_size=args.crop, seed=args.seed, device=str(device))


def cpu_stream(shards: Path, cfg: data.LoaderConfig):
    """The project's CpuLoader over the train split, one epoch after another."""
    epochs = itertools.count()
    return itertools.chain.from_iterable(data.make_loader(shards, "train", cfg, epoch=e) for e in epochs)


def dali_stream(shards: Path, cfg: data.LoaderConfig, epochs: int = 100):
    """The project's DALI train pipeline (model/data.py dali_pipeline) built once over the planned batches
    of many epochs in a row, its outputs turned into Batch by DaliLoader.to_batch, as DaliLoader does per
    epoch."""
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    info = data.split_info(shards, "train")
    plans = [data.planned_batches(shards, info, cfg, 0, 1, e) for e in range(epochs)]
    source = data.PlannedSource(plans[0][0], [b for _, batches in plans for b in batches])
    loader = data.make_loader(shards, "train", cfg)
    pipe = data.dali_pipeline(source, True, cfg, loader.seed)
    pipe.build()
    outputs = DALIGenericIterator(pipe, ["images", "labels", "difficult", "json"], auto_reset=False)
    return (loader.to_batch(out[0]) for out in outputs)


def open_stream(kind: str, shards: Path, cfg: data.LoaderConfig):
    return (dali_stream if kind == "dali" else cpu_stream)(shards, cfg)


def loader_warmup(args) -> int:
    """Untimed batches before a loader's window: at least two per worker, so every CPU worker has
    started (the same count for DALI)."""
    return max(args.warmup, 2 * args.workers)


def time_loader(stream, device: torch.device, warmup: int, seconds: float) -> dict:
    """Images/s of a batch stream over a window of `seconds` after `warmup` batches."""
    started = time.perf_counter()
    for _ in range(warmup):
        next(stream)
    sync(device)
    first = time.perf_counter() - started
    images, batches, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or batches < 2:
        batch = next(stream)
        images += len(batch.ids)
        batches += 1
    sync(device)
    elapsed = time.perf_counter() - t0
    return {"images_per_s": round(images / elapsed, 1), "images": images, "batches": batches,
            "seconds": round(elapsed, 2), "warmup_batches": warmup, "warmup_seconds": round(first, 2)}


def measure_loaders(args, report: Report, shards: Path, device: torch.device) -> str:
    """(a): the CPU loader, then DALI; returns the loader (b) should use."""
    figures, dali_ok = report.doc["figures"], False
    try:
        stream = open_stream("cpu", shards, loader_config(args, "cpu", device))
        figures["loader_cpu"] = {**time_loader(stream, device, loader_warmup(args), args.loader_seconds),
                                 "workers": args.workers, "batch": args.batch, "resize": args.resize,
                                 "crop": args.crop, "device": str(device)}
        del stream  # ends the DataLoader workers
        rate = figures["loader_cpu"]["images_per_s"]
        print(f"(a) CPU loader, {args.workers} workers: {rate:,.0f} images/s", flush=True)
    except Exception as error:
        report.error("loader_cpu", error)
    report.write()
    if report.doc["dali"] is None:
        report.skip("loader_dali_mixed", "DALI (nvidia-dali-cuda130) is not importable here; DALI skipped")
        return "cpu"
    key = "loader_dali_mixed" if args.cuda else "loader_dali_cpu"
    if not args.cuda:
        report.skip("loader_dali_mixed",
                    "no CUDA: DALI mixed (GPU) decode skipped; DALI timed with CPU decoding")
    try:
        stream = open_stream("dali", shards, loader_config(args, "dali", device))
        figures[key] = {**time_loader(stream, device, loader_warmup(args), args.loader_seconds),
                        "threads": args.workers, "batch": args.batch, "resize": args.resize,
                        "crop": args.crop, "decode": "mixed" if args.cuda else "cpu", "device": str(device)}
        del stream  # frees the pipeline
        dali_ok = args.cuda
        rate = figures[key]["images_per_s"]
        print(f"(a) DALI loader ({figures[key]['decode']} decoding): {rate:,.0f} images/s", flush=True)
    except Exception as error:
        report.error(key, error)
    cpu = figures.get("loader_cpu", {}).get("images_per_s")
    if key in figures and cpu:
        figures[key]["ratio_to_cpu_loader"] = round(figures[key]["images_per_s"] / cpu, 3)
    report.write()
    return "dali" if dali_ok else "cpu"


# --- training: the step of model/train.py ---


class Trainer:
    """Model, optimizer and scaler set up as model/train.py does (SGD 0.01/0.9/1e-4, AMP and
    channels_last on CUDA), stepped by model/train.py's own train_step."""

    def __init__(self, args, device: torch.device):
        self.device, on_gpu = device, device.type == "cuda"
        self.amp, self.channels_last = on_gpu, on_gpu
        torch.manual_seed(args.seed)
        self.cfg = TrainConfig(shards="unused", out="unused", batch_size=args.batch, lr=0.01, momentum=0.9,
                               weight_decay=1e-4, amp=on_gpu, channels_last=on_gpu,
                               model=ModelConfig(backbone=args.backbone, variant="chr"))
        self.model = build_model(self.cfg.model).to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)

    def step(self, batch) -> torch.Tensor:
        # No loss.item() per step: the loop reads the loss per step only for a live progress bar on a
        # terminal; in a logged run the device runs ahead of the host, as here.
        return train_step(self.model, batch, self.optimizer, self.scaler, self.cfg, self.device)

    def time(self, batches, warmup: int, seconds: float) -> dict:
        for _ in range(warmup):
            self.step(next(batches))
        sync(self.device)
        images, steps, t0 = 0, 0, time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        while time.perf_counter() - t0 < seconds or steps < 2:
            batch = next(batches)
            loss_sum += self.step(batch)
            images += len(batch.ids)
            steps += 1
        mean_loss = loss_sum.item() / steps  # waits for the queued steps, like the loop's epoch end
        sync(self.device)
        elapsed = time.perf_counter() - t0
        return {"images_per_s": round(images / elapsed, 1), "steps": steps, "seconds": round(elapsed, 2),
                "mean_loss": round(mean_loss, 4)}


def fixed_batch(args, device: torch.device) -> data.Batch:
    g = torch.Generator().manual_seed(args.seed)
    n = args.batch
    return data.Batch(
        images=torch.randn(n, 3, args.crop, args.crop, generator=g).to(device),
        labels=(torch.rand(n, 5, generator=g) < 0.1).float().to(device),
        difficult=torch.zeros(n, 5, dtype=torch.bool, device=device),
        ids=[f"mem{i}" for i in range(n)],
        meta=[{} for _ in range(n)],
    )


def measure_training(args, report: Report, shards: Path, device: torch.device, loader: str) -> None:
    """(b): in-memory, from shards, in-memory again (the mean of both in-memory windows is the reference,
    their spread shows drift)."""
    figures = report.doc["figures"]
    if not args.cuda:
        report.skip("train_gpu", f"no CUDA: GPU training ({FULL['backbone']}, AMP, channels_last) skipped; "
                                 f"{args.backbone} CHR timed on the CPU instead")
    trainer = Trainer(args, device)
    memory = itertools.repeat(fixed_batch(args, device))
    mem = [trainer.time(memory, args.warmup, args.train_seconds)]
    print(f"(b) training in-memory: {mem[0]['images_per_s']:,.1f} images/s", flush=True)
    try:
        stream = open_stream(loader, shards, loader_config(args, loader, device))
        shard_fig = trainer.time(stream, args.warmup, args.train_seconds)
        del stream
        rate = shard_fig["images_per_s"]
        print(f"(b) training from shards ({loader} loader): {rate:,.1f} images/s", flush=True)
    except Exception as error:
        report.error("train_from_shards", error)
        shard_fig = None
    mem.append(trainer.time(memory, max(1, args.warmup // 2), args.train_seconds))
    reference = statistics.mean(m["images_per_s"] for m in mem)
    figures["train_in_memory"] = {"images_per_s": round(reference, 1), "windows": mem}
    common = {"backbone": args.backbone, "variant": "chr", "batch": args.batch, "input": args.crop,
              "amp": trainer.amp, "channels_last": trainer.channels_last, "device": str(device)}
    figures["train_in_memory"].update(common)
    if shard_fig:
        figures["train_from_shards"] = {**shard_fig, **common, "loader": loader,
                                        "ratio_to_in_memory": round(shard_fig["images_per_s"] / reference, 3)}
    report.write()


# --- inference: bench/bench_chr.py's timing ---


def measure_inference(args, report: Report, device: torch.device) -> None:
    """(c): baseline vs CHR, median per batch of alternating rounds (bench_chr.py), fp32 then AMP +
    channels_last (CUDA only)."""
    figures = report.doc["figures"]
    if not args.cuda:
        report.skip("infer_gpu", f"no CUDA: GPU inference ({FULL['backbone']}) skipped; {args.backbone} "
                                 "timed on the CPU instead")
        report.skip("infer_amp_channels_last", "no CUDA: AMP + channels_last inference skipped")
    torch.manual_seed(args.seed)
    models = {v: build_model(ModelConfig(backbone=args.backbone, variant=v)).eval().to(device)
              for v in ("baseline", "chr")}
    x = torch.randn(args.infer_batch, 3, args.crop, args.crop, device=device)
    modes = {"fp32": (False, x)}
    if args.cuda:
        modes["amp_channels_last"] = (True, x.contiguous(memory_format=torch.channels_last))
    for mode, (amp, batch) in modes.items():
        if amp:
            for m in models.values():
                m.to(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp):
            for m in models.values():  # warm-up: allocator, kernel selection
                time_once(m, batch)
            times = {v: [] for v in models}
            for _ in range(args.infer_rounds):
                for v, m in models.items():
                    times[v].append(time_once(m, batch))
        base, chr_ = (statistics.median(times[v]) for v in ("baseline", "chr"))
        figures[f"infer_{mode}"] = {
            "baseline_ms": round(base * 1000, 3), "chr_ms": round(chr_ * 1000, 3),
            "ratio_chr_to_baseline": round(chr_ / base, 3), "backbone": args.backbone,
            "batch": args.infer_batch, "input": args.crop, "rounds": args.infer_rounds, "device": str(device),
        }
        print(f"(c) inference {mode}: baseline {base * 1000:.2f} ms, CHR {chr_ * 1000:.2f} ms per batch "
              f"(x{chr_ / base:.3f})", flush=True)
    report.write()


# --- the table ---


def judge(report: Report, args) -> None:
    figures, goals = report.doc["figures"], report.doc["goals"]
    judged = args.cuda and not args.small
    dali = figures.get("loader_dali_mixed", {}).get("images_per_s")
    goals["dali_images_per_s"] = {"goal": f">= {DALI_GOAL}", "value": dali,
                                  "met": (dali >= DALI_GOAL) if judged and dali else None}
    ratio = figures.get("train_from_shards", {}).get("ratio_to_in_memory")
    goals["train_from_shards_ratio"] = {"goal": f">= {TRAIN_GOAL}", "value": ratio,
                                        "met": (ratio >= TRAIN_GOAL) if judged and ratio else None}
    if not judged:
        why = "no CUDA" if not args.cuda else "--small"
        report.skip("goals", f"{why}: goals not judged (they are for the full run on one H100/H200)")


def verdict(goal: dict) -> str:
    return {True: "met", False: "NOT met", None: "not judged"}[goal["met"]]


def table(report: Report, args) -> str:
    d, f, g = report.doc, report.doc["figures"], report.doc["goals"]
    dali_goal = f"DALI >= {DALI_GOAL:,} img/s: {verdict(g['dali_images_per_s'])}"
    cpu = f.get("loader_cpu")
    cpu_ref = f"CPU loader, {args.workers} workers: {cpu['images_per_s']:,.0f} img/s" if cpu else "-"
    rows = []
    for key, label in (("loader_dali_mixed", "mixed (GPU) decode"), ("loader_dali_cpu", "CPU decode")):
        if key in f:
            rows.append((f"(a) DALI loader, {label}, {args.crop} px", f"{f[key]['images_per_s']:,.0f} img/s",
                         cpu_ref, str(f[key].get("ratio_to_cpu_loader", "-")), dali_goal))
    if cpu and not any(k in f for k in ("loader_dali_mixed", "loader_dali_cpu")):
        rows.append((f"(a) CPU loader, {args.crop} px", f"{cpu['images_per_s']:,.0f} img/s", cpu_ref, "-",
                     dali_goal))
    if "train_in_memory" in f:
        mem, shards = f["train_in_memory"], f.get("train_from_shards")
        loader = shards["loader"] if shards else "-"
        rows.append((f"(b) train from shards ({loader} loader), {args.backbone} CHR b{args.batch}",
                     f"{shards['images_per_s']:,.1f} img/s" if shards else "error",
                     f"fixed in-memory batch: {mem['images_per_s']:,.1f} img/s",
                     str(shards["ratio_to_in_memory"]) if shards else "-",
                     f">= {TRAIN_GOAL}x in-memory: {verdict(g['train_from_shards_ratio'])}"))
    for mode, label in (("fp32", "fp32"), ("amp_channels_last", "AMP+channels_last")):
        if f"infer_{mode}" in f:
            inf = f[f"infer_{mode}"]
            rows.append((f"(c) CHR inference {label}, {args.backbone} b{args.infer_batch}",
                         f"{inf['chr_ms']:.2f} ms/batch", f"baseline: {inf['baseline_ms']:.2f} ms/batch",
                         str(inf["ratio_chr_to_baseline"]), f"paper: x{1 + PAPER_CHR_OVERHEAD:.4f}"))
    header = ("item", "figure", "reference", "ratio", "goal")
    d["rows"] = [dict(zip(header, r, strict=True)) for r in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    dd = d["data"]
    out = [
        f"GPU: {d['gpu'] or 'none (no CUDA)'} | torch {d['torch']} | DALI {d['dali'] or 'not importable'} | "
        f"{d['cpu_count']} CPUs | mode {d['mode']}",
        f"data: {dd.get('train_images', '?')} train images in {dd.get('train_shards', '?')} shards, "
        f"synthetic SIXray10 at size factor {args.size_factor}",
        line(header), line(["-" * w for w in widths]), *map(line, rows),
    ]
    out += [f"skipped {s['item']}: {s['reason']}" for s in d["skipped"]]
    out += [f"ERROR {e['item']}: {e['error']}" for e in d["errors"]]
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    report = Report(args)
    if not args.cuda:
        print("no CUDA: small mode (tiny counts, tiny backbone, CPU); GPU items are skipped", flush=True)
    started = time.perf_counter()
    shards = make_shards(args, report)  # before CUDA is touched: the stages fork worker processes
    device = torch.device("cuda" if args.cuda else "cpu")
    if args.cuda:
        report.doc["gpu"] = torch.cuda.get_device_name(device)
        print(f"GPU: {report.doc['gpu']}", flush=True)
    report.write()
    loader = measure_loaders(args, report, shards, device)
    try:
        measure_training(args, report, shards, device, loader)
    except Exception as error:
        report.error("train", error)
    try:
        measure_inference(args, report, device)
    except Exception as error:
        report.error("infer", error)
    judge(report, args)
    report.doc["seconds"] = round(time.perf_counter() - started, 1)
    text = table(report, args)
    report.doc["table"] = text
    report.write()
    print(text)
    print(f"JSON: {report.path} ({report.doc['seconds']} s)")
    return 1 if report.doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
