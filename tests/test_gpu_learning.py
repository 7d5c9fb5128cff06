"""bench/gpu_learning.sh in its small mode (what runs without CUDA): the reference data made here with
the pipeline's commands, baseline and CHR trained with balanced epochs, one JSON row per variant."""

import json
import os
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_learning_small_mode_trains_both_variants_with_balanced_epochs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    cmd = ["bash", str(ROOT / "bench" / "gpu_learning.sh"), "--small", "--work", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu_learning.json").read_text())
    assert [r["variant"] for r in doc["rows"]] == ["baseline", "chr"]
    for row in doc["rows"]:
        assert row["images_per_s"] > 0 and 0 <= row["map"] <= 1
        assert abs(row["sixray1000_full_epoch_s"] * row["images_per_s"] - 1_059_231) < row["images_per_s"]
    for variant in ("baseline", "chr"):
        config = json.loads((tmp_path / f"run-{variant}" / "config.json").read_text())
        assert config["negatives_per_positive"] == 1.0 and config["loader"] == doc["loader"]
    if not torch.cuda.is_available():
        assert doc["gpu"] is None and doc["full_epoch_goal_met"] is None and "CPU (small mode)" in proc.stdout
