#!/usr/bin/env bash
# GPU check (issue 7, item 6): DALI vs CPU loader, training from shards vs in-memory, CHR inference.
# All logic is in bench/gpu_check.py; this wrapper runs it from the repo root without installing the
# package (PYTHONPATH=.), picking up the wheels that bench/gpu_setup.sh unpacked into /tmp/site if any.
#
#   bench/gpu_check.sh                 # full run on CUDA, small CPU run elsewhere; JSON to $OUT/gpu_check.json
#   bench/gpu_check.sh --small         # tiny smoke run;  --help lists every flag
set -euo pipefail
cd "$(dirname "$0")/.."
site=/tmp/site
[ -f "$site/.gpu_setup_done" ] && case ":${PYTHONPATH:-}:" in *":$site:"*) ;; *) PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" ;; esac
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
# Wall-clock cap: the check is sized for about 4 minutes; 8 minutes is its budget on the GPU machine.
exec timeout --signal=TERM --kill-after=10 "${GPU_CHECK_TIMEOUT:-480}" python3 -m bench.gpu_check "$@"
