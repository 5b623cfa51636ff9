#!/usr/bin/env bash
# Issue 12, items 4 and 5: the store build and training input benchmarks on this 2-core machine, full mode, with
# both cores (run it when the machine is quiet: nothing else running). Writes benchmarks/results/cpu-2core/issue12/
# (bench.md, bench.json, plots) and prints the rows that README's benchmark table and
# benchmarks/results/cpu-2core/bench.md quote (sections "1. Store build" and "3. Training input").
#   bash benchmarks/cpu_speed.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/cpu-2core/issue12
unset OMP_NUM_THREADS MKL_NUM_THREADS  # as the full `rfcx bench` ran: torch's choice (2 threads), builds on 2 threads
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m benchmarks --only store_build training_input --out "$OUT" "$@"
echo
echo "== rows to carry into benchmarks/results/cpu-2core/bench.md and README.md =="
grep -E '^\| (decode|librosa|\*\*librosa|rfcx build-store|crop_loader|\*\*model)|^- .*(backend|Augmenter)' "$OUT/bench.md" || true
