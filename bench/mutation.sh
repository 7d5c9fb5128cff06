#!/usr/bin/env bash
# Issue 19: mutation testing of the core modules with mutmut, then the score per module and the mutants
# left alive (bench/mutation_score.py holds the scope; pyproject.toml's [tool.mutmut] the tests).
# Not in CI's default run: it takes minutes (bench/RESULTS.md, "Mutation testing"). One worker process
# by default (MUTMUT_CHILDREN=2 for two). mutmut lives in its own venv, .venv-mutation, which sees the
# project's packages: mutmut wants a newer click and libcst than the project's environment holds.
set -euo pipefail
# One torch thread: an OpenMP pool started in mutmut's parent deadlocks its forked workers (a timeout each).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd "$(dirname "$0")/.."
venv=.venv-mutation
if [ ! -x "$venv/bin/mutmut" ]; then
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install -q "$(grep -o '"mutmut[^"]*"' pyproject.toml | head -1 | tr -d '"')"  # the pin of extra `mutation`
fi
"$venv/bin/python" -c "import importlib.metadata as m; print('mutmut', m.version('mutmut'))"
mkdir -p mutants
# shellcheck disable=SC2046  # one argument per pattern
time "$venv/bin/mutmut" run --max-children "${MUTMUT_CHILDREN:-1}" $(python3 bench/mutation_score.py --patterns) \
  > mutants/run.log 2>&1 || { tail -c 2000 mutants/run.log; exit 1; }
"$venv/bin/mutmut" results --all true | python3 bench/mutation_score.py
