#!/usr/bin/env bash
# The main job on the embedded default: a small synthetic SIXray-like download, run through the same
# commands a user types on the real data. Every stage resumes, so a rerun skips finished work.
set -euo pipefail
cd "$(dirname "$0")"
RAW=${RAW:-raw/demo}

pipeline synth --out "$RAW" --positives 2000 --negatives 20000 --size-factor 0.5 --seed 0
pipeline ingest --raw "$RAW" --out manifests
pipeline build-shards --ratio 10 --manifests manifests --out shards
pipeline stats --manifests manifests

# The reference recipe (small CHR from random weights, 128-pixel inputs, balanced epochs: every train
# positive and as many negatives, rotating) cut to a few CPU minutes, then the paper's evaluation tables;
# a rerun continues the run (model train refuses to overwrite one without --resume).
RESUME=$([ -f runs/demo/last.pt ] && echo --resume || true)
model train --shards shards/sixray10 --out runs/demo --preset reference --epochs 9 --lr-steps 6,8 \
  --device cpu $RESUME
echo "== model eval: the best epoch's checkpoint, Tables 2-3 =="
model eval --checkpoint runs/demo/best.pt --shards shards/sixray10 --out runs/demo/eval --workers 2 --device cpu

# Screening: a few raw scans through the checkpoint with the alarm thresholds model eval just fitted on
# the val split (runs/demo/eval/thresholds.json), then the same through the ONNX export.
echo "== model predict: 8 raw scans and a truncated one, alarm thresholds from model eval =="
mkdir -p runs/demo/new_scans
cp raw/demo/JPEGImage/P0000[1-4].jpg raw/demo/JPEGImage/N000000[1-4].jpg runs/demo/new_scans/
head -c 4000 raw/demo/JPEGImage/P00005.jpg > runs/demo/new_scans/cut_in_transit.jpg  # a status row
model predict --checkpoint runs/demo/best.pt --input runs/demo/new_scans --out runs/demo/predict --cams 2 \
  --device cpu
model export --checkpoint runs/demo/best.pt --onnx runs/demo/chr.onnx --cams
model predict --onnx runs/demo/chr.onnx --input runs/demo/new_scans --out runs/demo/predict-onnx
