#!/usr/bin/env bash
# The quality benchmark's data sets and trainings, end to end:
#
#     SEEDS="201 202 203" bash benchmarks/quality_set.sh WORK [ROUNDS] [NAME=SETTINGS ...]
#
# For each data seed S of SEEDS (default 1): synthesises a data set into WORK/seedS (default: the benchmark scale,
# 600 train + 150 test clips of 60 s, the default zipf species mix with competition-sparse labels, variable calls,
# real rainforest backgrounds from $BACKGROUNDS), builds its store, trains the oracle (every call's truth) and, for
# each variant, rounds 0..ROUNDS (default 1) of the cpu config with the variant's settings (comma-separated
# key=value, passed as --set; NAME= alone is the config as it is), then round 0 of the same settings trained as long
# as the pseudo-label rounds (`rfcx train --equal-compute`, the yardstick of the pseudo labels; EQUAL=0 skips it).
# Last, the quality benchmark over every seed and variant (runs named VARIANT@S: mean and spread over the seeds) in
# WORK/quality (bench.json, bench.md, quality.png). Complete steps are skipped on a re-run.
#
# Choose levers on dev seeds and report on fresh ones: a figure is only worth quoting from seeds that chose nothing
# (the README's quality table names both).
#
# Variants run one after another; PARALLEL=1 runs them side by side (a GPU machine with many cores; on 2 cores
# two torch processes slow each other 10-100x).
# Environment: RFCX (the command, default `python -m rfcx`), BACKGROUNDS (folder of real recordings, default
# ../shared/rfcx/backgrounds), CONFIG (default cpu), DEVICE (train --device, default the config's), TRAIN/TEST
# (clip counts), SYNTH_ARGS (more `rfcx synth` options: the held-back shape, about one labelled call per clip with TP
# boxes that follow presence, is SYNTH_ARGS="--tp-per-clip 1.0 --fp-per-clip 2.0 --tp-balance 0" TRAIN=300 TEST=80;
# `--calls fixed` gives the one-call-shape generator), SYNTH_WORKERS, ORACLE=0 (no oracle), EQUAL=0.
set -euo pipefail
WORK=${1:?usage: quality_set.sh WORK [ROUNDS] [NAME=SETTINGS ...]}
ROUNDS=${2:-1}
shift $(( $# >= 2 ? 2 : 1 ))
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=("cpu=")
read -r -a SEED_LIST <<< "${SEEDS:-1}"
cd "$(dirname "$0")/.."
RFCX=${RFCX:-python -m rfcx}
BACKGROUNDS=${BACKGROUNDS:-../shared/rfcx/backgrounds}
CONFIG=${CONFIG:-cpu}
bg=()
[ -d "$BACKGROUNDS" ] && bg=(--background "$BACKGROUNDS")
dev=()
[ -n "${DEVICE:-}" ] && dev=(--device "$DEVICE")

one_seed() {  # one_seed S: data set, store, oracle and every variant of data seed S in WORK/seedS
  local seed=$1 dir="$WORK/seed$1"
  mkdir -p "$dir"
  if [ ! -f "$dir/data/test_labels.csv" ]; then
    $RFCX synth "$dir/data" --train "${TRAIN:-600}" --test "${TEST:-150}" --seed "$seed" \
      --workers "${SYNTH_WORKERS:-$(nproc)}" "${bg[@]}" ${SYNTH_ARGS:-}
  fi
  $RFCX build-store --data "$dir/data" --store "$dir/features.zarr"
  local store=$dir/features.zarr
  oracle() {
    [ "${ORACLE:-1}" = 1 ] || return 0
    $RFCX train --oracle --store "$store" --runs "$dir/runs/oracle-host" --config "$CONFIG" "${dev[@]}"
  }
  variant() {
    local name=${1%%=*} settings=${1#*=} sets=() kv
    IFS=, read -r -a kvs <<< "$settings"
    for kv in "${kvs[@]}"; do [ -n "$kv" ] && sets+=(--set "$kv"); done
    mkdir -p "$dir/runs/$name"
    ln -sfn "../oracle-host/oracle" "$dir/runs/$name/oracle"  # every variant's report shows the one oracle
    $RFCX train --round "$ROUNDS" --store "$store" --runs "$dir/runs/$name" --config "$CONFIG" "${dev[@]}" "${sets[@]}"
    if [ "${EQUAL:-1}" = 1 ]; then
      $RFCX train --equal-compute --store "$store" --runs "$dir/runs/$name" --config "$CONFIG" "${dev[@]}" "${sets[@]}"
    fi
  }
  if [ "${PARALLEL:-0}" = 1 ]; then
    local pids=() status=0
    oracle > "$dir/oracle.log" 2>&1 & pids+=($!)
    for v in "${VARIANTS[@]}"; do variant "$v" > "$dir/${v%%=*}.log" 2>&1 & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p" || status=1; done
    return $status
  fi
  oracle
  for v in "${VARIANTS[@]}"; do variant "$v"; done
}

status=0
args=()
for seed in "${SEED_LIST[@]}"; do
  one_seed "$seed"  # set -e: a failed step stops the script (a re-run resumes)
  for v in "${VARIANTS[@]}"; do args+=(--quality-runs "${v%%=*}@$seed=$WORK/seed$seed/runs/${v%%=*}"); done
done
$RFCX bench --only quality --out "$WORK/quality" "${args[@]}" || status=1
exit $status
