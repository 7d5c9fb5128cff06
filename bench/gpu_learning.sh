#!/usr/bin/env bash
# Issue 17, item 5: the reference data trained on a GPU. On the device machine, after bench/gpu_setup.sh
# has unpacked DALI (see that file for the three carry calls):
#
#   bash bench/gpu_setup.sh && bench/gpu_learning.sh            # full: about 5 minutes on one H100/H200
#   bench/gpu_learning.sh --small [--work DIR]                  # CPU smoke run (tiny counts), what CI tests
#
# 1. Synthesises the reference data on this machine's own cores (bench/bench_learning.py's: 8,929
#    positives at the real class mix, 89,290 negatives, half size), ingests it, builds SIXray10 shards.
# 2. Trains resnet34 from random weights at 224 px, `--variant baseline` then `--variant chr`, with the
#    DALI loader and balanced epochs (--negatives-per-positive 1), for a fixed short schedule.
# 3. Evaluates each best epoch on the test split and writes $OUT/gpu_learning.json (or <work>/): the GPU's
#    name, training images/s, the time a SIXray1000 epoch would take at that rate (full: every one of its
#    ~763k train images; balanced: its ~6.4k train positives and as many negatives), mAP, class separation
#    and false alarms per 1,000 bags at 90% recall.
# Without CUDA (or with --small) everything runs on the CPU with tiny counts and the tiny backbone, DALI
# decoding on the CPU where it is installed, else the CPU loader.
set -euo pipefail
cd "$(dirname "$0")/.."
site=/tmp/site
[ -f "$site/.gpu_setup_done" ] && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

small=0 work=/tmp/gpu_learning
while [ $# -gt 0 ]; do
  case "$1" in
    --small) small=1 ;;
    --work) work="$2"; shift ;;
    *) echo "gpu_learning: unknown flag $1 (--small, --work DIR)" >&2; exit 2 ;;
  esac
  shift
done
python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' || small=1
pipeline() { python3 -c 'import sys; from pipeline.cli import main; sys.argv[0] = "pipeline"; main()' "$@"; }
model() { python3 -c 'import sys; from model.cli import main; sys.argv[0] = "model"; main()' "$@"; }

if [ "$small" = 1 ]; then
  counts=(--positives 40 --negatives 400 --size-factor 0.25) device=cpu
  recipe=(--backbone tiny --resize 72 --crop 64 --test-size 64 --epochs 1 --batch-size 16 --workers 2)
  loader=cpu; python3 -c 'import nvidia.dali' 2>/dev/null && loader=dali
else
  counts=(--positives 8929 --negatives 89290 --size-factor 0.5) device=cuda
  recipe=(--backbone resnet34 --resize 256 --crop 224 --test-size 224 --epochs 8 --lr-steps 6
          --batch-size 128 --lr 0.1 --workers "$(nproc)")
  loader=dali
fi
mkdir -p "$work"
started=$(date +%s)
pipeline synth --out "$work/raw" "${counts[@]}" --seed 0
pipeline ingest --raw "$work/raw" --out "$work/manifests"
pipeline build-shards --ratio 10 --manifests "$work/manifests" --out "$work/shards"
data_s=$(( $(date +%s) - started ))
for variant in baseline chr; do
  run="$work/run-$variant"
  [ -f "$run/test.json" ] && continue
  rm -rf "$run"  # an unfinished run of this script: start it again
  model train --shards "$work/shards/sixray10" --out "$run" --variant "$variant" "${recipe[@]}" \
    --loader "$loader" --device "$device" --negatives-per-positive 1
done
python3 -m bench.gpu_learning_report --work "$work" --data-seconds "$data_s" --loader "$loader" \
  --json "${OUT:-$work}/gpu_learning.json"
