#!/usr/bin/env bash
# Download the wheels of benchmarks/gpu_check_wheels.txt into .whl/ (or DIR) for the GPU machine's Python 3.12 on
# manylinux x86-64, without their dependencies (the list is complete): bash benchmarks/gpu_check_wheels.sh [DIR]
# PYTHON picks the pip to run (default: .venv/bin/python, else python3); PY_VERSION the target (default 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
mkdir -p "$DEST"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version "${PY_VERSION:-3.12}" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" -r benchmarks/gpu_check_wheels.txt
du -sh "$DEST"
