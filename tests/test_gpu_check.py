"""bench/gpu_check.py in its small mode (what runs without CUDA): it makes its own shards with the
pipeline's stages, times the CPU loader, lists the GPU items it skipped, and exits 0."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_small_mode_reports_cpu_loader_and_skipped_gpu_items(tmp_path):
    report = tmp_path / "gpu_check.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "bench.gpu_check", "--small", "--work", str(tmp_path / "work"),
           "--json", str(report), "--positives", "20", "--negatives", "200", "--loader-seconds", "1",
           "--train-seconds", "1", "--infer-rounds", "3", "--workers", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(report.read_text())
    assert doc["mode"] == "small" and doc["errors"] == []
    assert doc["data"]["train_images"] > 0 and doc["data"]["train_shards"] == 2
    assert doc["figures"]["loader_cpu"]["images_per_s"] > 0
    assert doc["figures"]["loader_cpu"]["workers"] == 2
    assert doc["figures"]["train_in_memory"]["images_per_s"] > 0
    assert doc["figures"]["train_from_shards"]["ratio_to_in_memory"] > 0
    assert doc["figures"]["infer_fp32"]["ratio_chr_to_baseline"] > 0
    assert doc["rows"] and "item" in proc.stdout and "CPU loader" in proc.stdout
    skipped = {s["item"]: s["reason"] for s in doc["skipped"]}
    if not torch.cuda.is_available():
        assert doc["gpu"] is None and doc["device"] == "cpu"
        for item in ("loader_dali_mixed", "train_gpu", "infer_gpu", "infer_amp_channels_last", "goals"):
            assert skipped[item].startswith("no CUDA"), skipped
            assert f"skipped {item}: no CUDA" in proc.stdout
        assert "no CUDA: DALI mixed (GPU) decode skipped" in skipped["loader_dali_mixed"]
    assert all(goal["met"] is None for goal in doc["goals"].values())  # small runs judge no goal
