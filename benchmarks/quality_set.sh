#!/usr/bin/env bash
# The quality benchmark's data set and trainings (issue 10), end to end:
#
#     bash benchmarks/quality_set.sh WORK [ROUNDS] [NAME=SETTINGS ...]
#
# synthesises the benchmark-scale set (600 train + 150 test clips of 60 s, seed 1, the default zipf species mix:
# competition-sparse labels, real rainforest backgrounds from $BACKGROUNDS), builds its store, trains the oracle
# (every call's truth) and, for each variant, rounds 0..ROUNDS (default 1: the cpu config's rounds 0-1, about
# 16 of its 45 minutes on 2 cores) of the cpu config with the variant's
# settings (comma-separated key=value, passed as --set; NAME= alone is the config as it is), then writes the
# quality benchmark (bench.json, bench.md) to WORK/quality. Complete steps are skipped on a re-run.
# Variants run one after another; PARALLEL=1 runs them side by side (a GPU machine with many cores; on 2 cores
# two torch processes slow each other 10-100x).
# Environment: RFCX (the command, default `python -m rfcx`), BACKGROUNDS (folder of real recordings, default
# ../shared/rfcx/backgrounds), CONFIG (default cpu), DEVICE (train --device, default the config's), TRAIN/TEST
# (clip counts), SYNTH_ARGS (more `rfcx synth` options: the held-back shape of issue 10, about one labelled call
# per clip with TP boxes that follow presence, is SYNTH_ARGS="--tp-per-clip 1.0 --fp-per-clip 2.0 --tp-balance 0"
# TRAIN=300 TEST=80), SYNTH_WORKERS.
set -euo pipefail
WORK=${1:?usage: quality_set.sh WORK [ROUNDS] [NAME=SETTINGS ...]}
ROUNDS=${2:-1}
shift $(( $# >= 2 ? 2 : 1 ))
VARIANTS=("$@")
[ ${#VARIANTS[@]} -gt 0 ] || VARIANTS=("cpu=")
cd "$(dirname "$0")/.."
RFCX=${RFCX:-python -m rfcx}
BACKGROUNDS=${BACKGROUNDS:-../shared/rfcx/backgrounds}
CONFIG=${CONFIG:-cpu}
mkdir -p "$WORK"
bg=()
[ -d "$BACKGROUNDS" ] && bg=(--background "$BACKGROUNDS")
if [ ! -f "$WORK/data/test_labels.csv" ]; then
  $RFCX synth "$WORK/data" --train "${TRAIN:-600}" --test "${TEST:-150}" --seed 1 \
    --workers "${SYNTH_WORKERS:-$(nproc)}" "${bg[@]}" ${SYNTH_ARGS:-}
fi
$RFCX build-store --data "$WORK/data" --store "$WORK/features.zarr"
STORE=$WORK/features.zarr
dev=()
[ -n "${DEVICE:-}" ] && dev=(--device "$DEVICE")
oracle() { $RFCX train --oracle --store "$STORE" --runs "$WORK/runs/oracle-host" --config "$CONFIG" "${dev[@]}"; }
variant() {
  local name=${1%%=*} settings=${1#*=} sets=() kv
  IFS=, read -r -a kvs <<< "$settings"
  for kv in "${kvs[@]}"; do [ -n "$kv" ] && sets+=(--set "$kv"); done
  mkdir -p "$WORK/runs/$name"
  ln -sfn "../oracle-host/oracle" "$WORK/runs/$name/oracle"  # every variant's report shows the one oracle
  $RFCX train --round "$ROUNDS" --store "$STORE" --runs "$WORK/runs/$name" --config "$CONFIG" "${dev[@]}" "${sets[@]}"
}
if [ "${PARALLEL:-0}" = 1 ]; then
  pids=()
  oracle > "$WORK/oracle.log" 2>&1 & pids+=($!)
  for v in "${VARIANTS[@]}"; do variant "$v" > "$WORK/${v%%=*}.log" 2>&1 & pids+=($!); done
  status=0
  for p in "${pids[@]}"; do wait "$p" || status=1; done
else
  oracle
  for v in "${VARIANTS[@]}"; do variant "$v"; done
  status=0
fi
args=()
for v in "${VARIANTS[@]}"; do args+=(--quality-runs "${v%%=*}=$WORK/runs/${v%%=*}"); done
$RFCX bench --only quality --out "$WORK/quality" "${args[@]}" || status=1
exit $status
