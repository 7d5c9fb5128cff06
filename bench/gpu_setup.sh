#!/usr/bin/env bash
# Brings the Python packages that bench/gpu_check.py needs, and that the GPU machine lacks, onto it:
# duckdb, webdataset + braceexpand, and NVIDIA DALI (nvidia-dali-cuda130) with what it loads: nvImageCodec
# (nvidia-nvimgcodec-cu13), nvJPEG (nvidia-nvjpeg, CUDA 13.0) and DALI's Python requirements
# (astunparse gast libcst makefun nvtx optree). The machine already has Python 3.12, torch, numpy, pyyaml,
# packaging, six, typing-extensions; nothing can be downloaded there, and one call carries at most 64 MiB.
#
# What travels: not the wheels (247 MiB; 222 MiB with other Pythons' binaries removed: 4-5 calls) but
# the tree `pip install --target` makes of them for CPython 3.12 x86_64, less the binaries for other
# Python versions, as one tar.xz (`xz -9`) of 162,208,428 bytes (155 MiB; 562 MiB unpacked), split into
# three equal parts of 54,069,476 bytes (51.6 MiB) each under .whl/parts/ (ignored by git), with their
# SHA256SUMS. nvidia-libnvcomp-cu13 (28 MB) is left out: DALI loads it only for its inflate operator
# (checked here: a DALI webdataset + decode pipeline runs from this tree and never looks for libnvcomp).
#
# Plan on the GPU machine (each call: the repo, about 0.4 MiB, plus one part = 52 MiB < 64 MiB). A
# machine stays warm only 30 s after a call and loses /tmp when it goes, so make the three calls back to
# back; each one stashes its part in /tmp/whl/parts and prints which parts it holds:
#   call 1  carry [".whl/parts/SHA256SUMS", ".whl/parts/site.tar.xz.part-0"]   52 MiB
#           command: bash bench/gpu_setup.sh                       (starts the machine: minutes)
#   call 2  carry [".whl/parts/SHA256SUMS", ".whl/parts/site.tar.xz.part-1"]   52 MiB
#           command: bash bench/gpu_setup.sh
#   call 3  carry [".whl/parts/SHA256SUMS", ".whl/parts/site.tar.xz.part-2"]   52 MiB
#           command: bash bench/gpu_setup.sh && bench/gpu_check.sh     (timeout_s 600; about 5 minutes)
# The third call finds all three parts, checks them, unpacks them into /tmp/site (about 15 s) and the
# check runs with PYTHONPATH=/tmp/site:. (bench/gpu_check.sh adds /tmp/site when it exists; `source
# bench/gpu_setup.sh` exports it in the calling shell too). If a call says a part is missing, the machine
# went back in between: start again at call 1. A rerun of the check on the still-warm machine needs no
# carry: `bash bench/gpu_setup.sh && bench/gpu_check.sh`.
#
# Here (with PyPI), `bash bench/gpu_setup.sh build` remakes .whl/ and .whl/parts/ from the pinned
# versions below (about 10 minutes on 2 cores, most of it xz); the parts then differ from the ones above
# only in each dist-info/direct_url.json (the local path of the wheels), so SHA256SUMS is remade with them.

_gpu_setup_main() {
  local repo parts site stash
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  parts="$repo/.whl/parts" site="${GPU_SETUP_SITE:-/tmp/site}" stash="${GPU_SETUP_STASH:-/tmp/whl/parts}"
  local py="${GPU_SETUP_PYTHON:-python3}"
  if [ "${1:-}" = build ]; then
    _gpu_setup_build "$repo" || return 1
    return 0
  fi
  mkdir -p "$stash" || return 1
  [ -f "$parts/SHA256SUMS" ] && cp "$parts/SHA256SUMS" "$stash/SHA256SUMS"
  local f
  for f in "$parts"/site.tar.xz.part-*; do
    [ -f "$f" ] && cp "$f" "$stash/"
  done
  if [ ! -f "$stash/SHA256SUMS" ]; then
    echo "gpu_setup: no SHA256SUMS here or in $stash: carry .whl/parts/SHA256SUMS" >&2
    return 1
  fi
  local name missing=""
  while read -r _ name; do
    [ -f "$stash/$name" ] || missing="$missing $name"
  done <"$stash/SHA256SUMS"
  echo "gpu_setup: parts held in $stash: $(cd "$stash" && ls site.tar.xz.part-* 2>/dev/null | tr '\n' ' ')"
  if [ -n "$missing" ]; then
    echo "gpu_setup: still missing:$missing (carry them in the next call, within 30 s)"
    return 0
  fi
  if [ ! -f "$site/.gpu_setup_done" ] || ! cmp -s "$site/.gpu_setup_done" "$stash/SHA256SUMS"; then
    (cd "$stash" && sha256sum --quiet -c SHA256SUMS) || { echo "gpu_setup: a part is corrupt" >&2; return 1; }
    rm -rf "$site" && mkdir -p "$site"
    (cd "$stash" && cat $(awk '{print $2}' SHA256SUMS)) | "$py" -c '
import sys, tarfile
tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall(sys.argv[1], filter="tar")' "$site" \
      || { echo "gpu_setup: unpacking failed" >&2; return 1; }
    cp "$stash/SHA256SUMS" "$site/.gpu_setup_done"
    echo "gpu_setup: unpacked into $site ($(du -sh "$site" | cut -f1))"
  fi
  case ":${PYTHONPATH:-}:" in *":$site:"*) ;; *) export PYTHONPATH="$site:${PYTHONPATH:+$PYTHONPATH:}$repo" ;; esac
  "$py" -c 'import duckdb, webdataset, nvidia.dali as d; print("gpu_setup: duckdb", duckdb.__version__,
"webdataset", webdataset.__version__, "DALI", d.__version__, "from", d.__file__)'
}

_gpu_setup_build() {
  local repo="$1" staging=/tmp/gpu_site_build
  local plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
  local pins="duckdb==2.0.1 webdataset==1.0.2 braceexpand==0.1.7 nvidia-dali-cuda130==2.4.0
    nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.0.4.44 astunparse==1.6.3 gast==0.7.0 libcst==1.9.0
    makefun==1.16.0 nvtx==0.2.17 optree==0.20.0"
  cd "$repo" || return 1
  [ -d .git/info ] && { grep -qs '^/.whl/' .git/info/exclude || echo /.whl/ >>.git/info/exclude; }
  local pin
  for pin in $pins; do
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat \
      -d .whl "$pin" || return 1
  done
  rm -rf "$staging"
  local wheels=() w
  for pin in $pins; do
    w=$(ls .whl/"$(echo "${pin%%==*}" | tr - _)"-"${pin##*==}"-*.whl 2>/dev/null | head -1)
    [ -n "$w" ] || { echo "gpu_setup build: no wheel for $pin in .whl/" >&2; return 1; }
    wheels+=("$w")
  done
  # shellcheck disable=SC2086
  python3 -m pip install -q --target "$staging" --no-deps --no-compile --no-index --python-version 3.12 \
    --implementation cp $plat --only-binary=:all: "${wheels[@]}" || return 1
  find "$staging" -name '*.cpython-3*' ! -name '*.cpython-312-*' -delete
  rm -rf "$staging/bin"
  rm -rf .whl/parts && mkdir -p .whl/parts
  (cd "$staging" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - .) \
    | xz -9 -T2 >.whl/parts/site.tar.xz || return 1
  (cd .whl/parts && split -n 3 -d -a 1 site.tar.xz site.tar.xz.part- && rm site.tar.xz \
    && sha256sum site.tar.xz.part-* >SHA256SUMS)
  ls -l .whl/parts
}

_gpu_setup_main "$@"
_gpu_setup_rc=$?
unset -f _gpu_setup_main _gpu_setup_build
# shellcheck disable=SC2317  # return when sourced, exit when run
return "$_gpu_setup_rc" 2>/dev/null || exit "$_gpu_setup_rc"
