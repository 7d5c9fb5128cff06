#!/usr/bin/env bash
# One command installs everything on a fresh machine: system libraries, the package with its
# test tools and the DALI wheel, then Pillow-SIMD in place of Pillow where it builds.
set -euo pipefail
cd "$(dirname "$0")"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q libjpeg-dev zlib1g-dev >/dev/null || (apt-get update -q && apt-get install -y -q libjpeg-dev zlib1g-dev)
fi
extras="dev"
[ "$(uname -m)" = x86_64 ] && extras="dev,dali"
python3 -m pip install -q -e ".[$extras]"
# Pillow-SIMD is a drop-in fork: swap it in, fall back to plain Pillow if it does not build.
# torchvision pulls plain Pillow back in on every install, and both packages own the same PIL/
# folder, so remove both before installing Pillow-SIMD (pip's wheel cache makes a rerun fast).
if ! python3 -c "import PIL, sys; sys.exit('post' not in PIL.__version__)" 2>/dev/null; then
  python3 -m pip uninstall -y -q pillow pillow-simd
  CC="cc -mavx2" python3 -m pip install -q --no-binary pillow-simd pillow-simd \
    || python3 -m pip install -q pillow
fi
python3 -c "import PIL; print('Pillow', PIL.__version__)"
