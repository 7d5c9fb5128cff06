#!/usr/bin/env bash
# Installs bench/bench_peers.py's peers (the `bench` extra of pyproject.toml) without touching what
# install.sh set up: a plain `pip install -e '.[bench]'` would downgrade numpy (mosaicml-streaming pins
# numpy<2.2) and put Pillow over Pillow-SIMD. So the two peers go in without their dependencies, then the
# small ones they import. Tested 2026-12-06: litdata 0.2.76, mosaicml-streaming 0.13.0, webdataset 1.0.2.
set -euo pipefail
python3 -m pip install -q "webdataset>=0.2.100"  # also bench/bench_val.py's reference
python3 -m pip install -q --no-deps "litdata>=0.2" "mosaicml-streaming>=0.8"
python3 -m pip install -q lightning-utilities obstore tifffile xxhash zstd python-snappy brotli catalogue \
  "transformers<5"  # mosaicml-streaming imports transformers at load time
python3 -c "import litdata, streaming, webdataset; print('peers ready')"
