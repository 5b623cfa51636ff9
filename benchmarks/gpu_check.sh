#!/usr/bin/env bash
# The GPU check in one command, for a bare GPU machine that has python3 with torch, timm, numpy, pandas, scipy,
# fsspec, typer, tqdm, matplotlib and pyyaml but no network: run from anywhere as
#
#     bash benchmarks/gpu_check.sh [ARGS of python -m benchmarks.gpu_check, e.g. --budget-s 300]
#
# with the wheels of benchmarks/gpu_check_wheels.txt in .whl/ at the repository root (bash
# benchmarks/gpu_check_wheels.sh downloads them). It installs them into $GPU_CHECK_SITE (default /tmp/site; not the
# project itself: its pyproject pins torch), puts that and the repository first on PYTHONPATH and runs
# `python3 -m benchmarks.gpu_check --out "${OUT:-benchmarks/results/gpu}"`. bench.json, bench.md and
# gpu_check.log end up in that folder. Nothing fails silently: a failed install is recorded (stage wheels) and the
# check goes on; a check that dies before writing bench.json leaves one saying so, with the log's last lines.
# Environment: PYTHON (default python3), GPU_CHECK_TIMEOUT (seconds for the python run, default 450).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
RESULTS=${OUT:-benchmarks/results/gpu}
SITE=${GPU_CHECK_SITE:-/tmp/site}
LIMIT=${GPU_CHECK_TIMEOUT:-450}
mkdir -p "$RESULTS" || exit 2
LOG="$RESULTS/gpu_check.log"
PIPLOG="${SITE%/}.pip.log"

run() {
  echo "== benchmarks/gpu_check.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname), repository $PWD"
  echo "== $("$PY" --version 2>&1) at $(command -v "$PY")"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "(no nvidia-smi)"

  # 1. the wheels the machine lacks; cffi and pycparser only where the machine has no cffi of its own
  local wheels=() skip_cffi=0 w rc
  "$PY" -c "import cffi" >/dev/null 2>&1 && skip_cffi=1
  for w in .whl/*.whl; do
    [ -e "$w" ] || continue
    case "$(basename "$w")" in
      cffi-*|pycparser-*) [ "$skip_cffi" = 1 ] && { echo "   (the machine has cffi: not installing $(basename "$w"))"; continue; } ;;
    esac
    wheels+=("$w")
  done
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "!! no wheels in .whl/ (carry .whl; bash benchmarks/gpu_check_wheels.sh downloads them)" | tee "$PIPLOG"
    rc=127
  else
    echo "== installing ${#wheels[@]} wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "${wheels[@]}" >"$PIPLOG" 2>&1
    rc=$?
    cat "$PIPLOG"
    echo "== pip exit status $rc"
    if [ "$rc" != 0 ]; then  # no pip, or it refused: these wheels need nothing but unpacking
      echo "!! pip failed: unpacking the wheels with python -m zipfile instead" | tee -a "$PIPLOG"
      mkdir -p "$SITE"
      for w in "${wheels[@]}"; do "$PY" -m zipfile -e "$w" "$SITE" 2>&1 | tee -a "$PIPLOG"; done
    fi
  fi
  export GPU_CHECK_INSTALL_RC=$rc GPU_CHECK_INSTALL_LOG=$PIPLOG GPU_CHECK_SITE=$SITE
  export GPU_CHECK_WHEELS="${wheels[*]:-}"
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1

  # 2. the check (SIGINT at the time limit: the stage under way is recorded as interrupted; KILL 20 s later)
  timeout -s INT -k 20 "$LIMIT" "$PY" -m benchmarks.gpu_check --out "$RESULTS" "$@"
  rc=$?
  echo "== python -m benchmarks.gpu_check exit status $rc"
  if [ ! -s "$RESULTS/bench.json" ]; then
    echo "!! no bench.json: writing one that says so"
    "$PY" - "$RESULTS/bench.json" "$rc" "$LOG" <<'EOF' || echo "{\"check\": \"benchmarks.gpu_check\", \"exit_status\": $rc, \"failures\": [{\"stage\": \"start\", \"error\": \"python died before writing bench.json; see gpu_check.log\"}]}" >"$RESULTS/bench.json"
import json, sys
path, rc, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    lines = open(log, errors="replace").read().splitlines()[-40:]
except OSError:
    lines = []
json.dump({"check": "benchmarks.gpu_check", "exit_status": rc, "stages": {},
           "failures": [{"stage": "start", "error": f"python -m benchmarks.gpu_check exited with {rc} before writing "
                                                  "bench.json", "traceback": lines}]}, open(path, "w"), indent=1)
EOF
  fi
  return "$rc"
}

run "$@" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
echo "results: $(ls "$RESULTS" | tr '\n' ' ')(in $RESULTS)"
exit "$status"
