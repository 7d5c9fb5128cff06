"""`model eval`: a checkpoint over the exact test epoch, AP / mAP and pointing per stage and fused, alarm
thresholds, reports.

The scoring itself is model/inference.py's (shared with `model train` and `model predict`); the tables,
plots and report files are model/report.py's; the alarm thresholds (thresholds.json, model/alarms.py),
fitted on the val split, are what `model predict` applies.
"""

import sys
import time
from pathlib import Path

from base.atomic import writes_folder
from base.errors import UsageError
from model.alarms import DEFAULT_TARGET_RECALL, alarm_summary, write_thresholds
from model.inference import (
    load_model,
    predict,
    progress_bar,
    resolve_device,
    summarise,
    val_thresholds,
)
from model.report import write_report


@writes_folder("out", "model eval", ours=("metrics.json",))
def evaluate_checkpoint(checkpoint: str | Path, shards: str | Path, out: str | Path | None = None, *,
                        batch_size: int = 32, workers: int = 2, loader: str = "cpu", device: str = "auto",
                        test_size: int | None = None, pointing_fuse: str | None = None,
                        pointing_tolerance: float | None = None, overlays: int = 6, data=None,
                        trust_checkpoint: bool = False, target_recall: float = DEFAULT_TARGET_RECALL) -> dict:
    """Rebuild the model from the checkpoint alone, evaluate it on the test split, fit the alarm thresholds
    on the val split, write the report. Unset sizes and pointing settings are the checkpoint's config's."""
    if data is None:
        import model.data as data
    device = resolve_device(device)
    model, tcfg, ckpt = load_model(checkpoint, device, trust=trust_checkpoint)
    # Thresholds are fitted on the run's val split (val_fraction), whether it chose its epoch there or not.
    lcfg = data.LoaderConfig.of_run(tcfg, backend=loader, batch_size=batch_size, workers=workers,
                                    test_size=test_size or tcfg.test_size, device=str(device),
                                    val_fraction=tcfg.val_fraction)
    tolerance = tcfg.pointing_tolerance if pointing_tolerance is None else pointing_tolerance
    pred = score_test_split(model, data, shards, lcfg, device, fuse=pointing_fuse or tcfg.pointing_fuse,
                     tolerance=tolerance, overlays=overlays)
    summary = summarise(pred)
    summary["checkpoint"] = {"path": str(checkpoint), "epoch": ckpt["epoch"], "config": ckpt["config"]}
    thresholds = val_thresholds(model, data, shards, lcfg, device, target=target_recall,
                                checkpoint=checkpoint, epoch=ckpt["epoch"], held_out=tcfg.held_out > 0,
                                amp=device.type == "cuda")
    summary["alarms"] = None if thresholds is None else alarm_summary(thresholds, pred)
    if out is not None:
        write_report(summary, pred, out, overlays=overlays)
        if thresholds is not None:
            write_thresholds(out, thresholds)
    return summary


def score_test_split(model, data, shards, lcfg, device, *, fuse: str, tolerance: float, overlays: int
                     ) -> dict:
    """The test split's predictions with pointing counts, a bar on a terminal, else one line at the end."""
    total = data.split_info(shards, "test")["count"]
    if total == 0:
        raise UsageError(f"{shards}: its test split holds no image, so there is nothing to evaluate (a "
                         "subset built from a manifest without usable positives?); check `pipeline stats`")
    start = time.perf_counter()
    with progress_bar(total=total, desc="eval", unit="img") as bar:
        live = not bar.disable  # read now: tqdm's close() sets disable
        pred = predict(model, data.make_loader(shards, "test", lcfg), device, amp=device.type == "cuda",
                       pointing=True, fuse=fuse, tolerance=tolerance, keep_examples=overlays, progress=bar)
    if not live:
        seconds = time.perf_counter() - start
        print(f"eval: {len(pred['ids'])} images in {seconds:.1f} s ({len(pred['ids']) / seconds:.0f} img/s)",
              file=sys.stderr)
    return pred
