"""Balanced epochs against full epochs at SIXray100's real size, in one run.

    python3 -m bench.bench_epochs --work /tmp/epochs [--negatives 892900] [--backbone small]

Builds (or reuses) a raw folder of the real size (bench/scale_folder.py: 8,929 positives, the negatives
hard links over 10,000 generated ones), ingests it and builds SIXray100 shards, as a user does. Then, in
this one process, with the reference recipe's loader and model step (`model.train.train_epoch`, CPU):
- the catalogue: every train sample's index line and 20-byte label read once per run, and the negatives'
  rotation order (the whole cost of knowing which samples an epoch leaves out);
- one balanced epoch (`--negatives-per-positive 1`): planned, read, decoded and trained, timed end to end;
- a full epoch (every negative): planned, then trained over as many batches as the balanced epoch had,
  its time extrapolated to all its batches (the per-batch work is the same).
Prints the ratio full / balanced epoch time, and the share of the balanced epoch's time spent on samples
it leaves out: their catalogue entries and rotation order (read once per run, counted against one
epoch), and the per-epoch plan.
"""

import argparse
import itertools
import json
import subprocess
import time
from pathlib import Path

import torch
from tqdm import tqdm

from bench.scale_folder import POSITIVES, build_folder
from model import epochs
from model.chr import build_model
from model.config import PRESETS, ModelConfig, TrainConfig
from model.data import LoaderConfig, make_loader, planned_batches, split_info, train_catalogue
from model.train import train_epoch

ROOT = Path(__file__).resolve().parents[1]


def build_data(work: Path, negatives: int) -> Path:
    raw, manifests, shards = work / "raw", work / "manifests", work / "shards"
    made = work / "negatives.txt"  # a --work built for another size is refused, not silently measured
    if made.exists() and int(made.read_text()) != negatives:
        raise SystemExit(f"{work} holds {made.read_text().strip()} negatives, not {negatives}: "
                         "use another --work")
    if not (manifests / "manifest.parquet").exists():
        build_folder(raw, positives=POSITIVES, negatives=negatives)
        subprocess.run(["pipeline", "ingest", "--raw", str(raw), "--out", str(manifests)], check=True)
        made.write_text(str(negatives))
    subprocess.run(["pipeline", "build-shards", "--ratio", "100", "--manifests", str(manifests), "--out",
                    str(shards)], check=True)
    return shards / "sixray100"


def timed(f, *args, **kw):
    started = time.perf_counter()
    result = f(*args, **kw)
    return result, time.perf_counter() - started


def trained(loader, cfg: TrainConfig, batches: int) -> float:
    """Seconds to train the recipe's model over the first `batches` batches of a loader."""
    torch.manual_seed(0)
    model = build_model(cfg.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    bar = tqdm(itertools.islice(loader, batches), disable=True)  # no display
    started = time.perf_counter()
    train_epoch(model, loader, optimizer, scaler, cfg, torch.device("cpu"), 1, bar)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/epochs"))
    parser.add_argument("--negatives", type=int, default=100 * POSITIVES)
    args = parser.parse_args()
    shards = build_data(args.work, args.negatives)

    recipe = PRESETS["reference"]
    model_fields = {k: v for k, v in recipe.items() if k in ModelConfig.__dataclass_fields__}
    train_fields = {k: v for k, v in recipe.items() if k in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(shards=str(shards), device="cpu", amp=False, channels_last=False, **train_fields,
                      model=ModelConfig(**model_fields))
    lcfg = LoaderConfig(batch_size=cfg.batch_size, workers=cfg.workers, resize=cfg.resize, crop=cfg.crop,
                        test_size=cfg.test_size, val_fraction=cfg.val_fraction, negatives_per_positive=1.0)
    info = split_info(shards, "train", cfg.val_fraction)
    cat, catalogue_s = timed(train_catalogue, shards, info, cfg.val_fraction)
    _, rotation_s = timed(epochs.negative_order, cat, lcfg.seed)
    (_, balanced_batches), balanced_plan_s = timed(planned_batches, shards, info, lcfg, 0, 1, 0)
    balanced_s = trained(make_loader(shards, "train", lcfg), cfg, len(balanced_batches))
    full_cfg = LoaderConfig(**{**vars(lcfg), "negatives_per_positive": None})
    (_, full_batches), full_plan_s = timed(planned_batches, shards, info, full_cfg, 0, 1, 0)
    sampled_s = trained(make_loader(shards, "train", full_cfg), cfg, len(balanced_batches))
    full_s = full_plan_s + sampled_s * len(full_batches) / len(balanced_batches)
    positives = int(cat.positive.sum())
    left_out = 1 - len(balanced_batches) * cfg.batch_size / len(cat)
    skipped_s = (catalogue_s + rotation_s) * left_out + balanced_plan_s
    balanced_total = catalogue_s + rotation_s + balanced_plan_s + balanced_s
    result = {
        "train_samples": len(cat), "positives": positives, "backbone": cfg.model.backbone, "crop": cfg.crop,
        "catalogue_s": catalogue_s, "rotation_order_s": rotation_s,
        "balanced": {"batches": len(balanced_batches), "plan_s": balanced_plan_s, "train_s": balanced_s},
        "full": {"batches": len(full_batches), "plan_s": full_plan_s,
                 "train_s_sampled": sampled_s, "extrapolated_s": full_s},
        "ratio_full_over_balanced": full_s / balanced_total,
        "share_on_left_out_samples": skipped_s / balanced_total,
    }
    print(json.dumps(result, indent=1))
    images = len(balanced_batches) * cfg.batch_size
    print(f"SIXray100, {len(cat):,} train samples ({positives:,} positives): a balanced epoch (K=1, "
          f"{images:,} images) takes {balanced_total:.0f} s with the catalogue, a full epoch "
          f"{full_s / 60:.1f} min (extrapolated from {len(balanced_batches)} batches): RATIO full / balanced "
          f"{full_s / balanced_total:.1f}x; share of the balanced epoch on samples it leaves out "
          f"{100 * skipped_s / balanced_total:.1f}%")
    (args.work / "epochs.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
