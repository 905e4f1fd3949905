#!/usr/bin/env bash
# Candidates against a base recipe of the main job, each pair as two one-thread time_to_quality.py runs
# side by side, so that both share the machine's state (a shared machine's step rate drifts by 10-35%
# from one hour to the next, which a time budget turns into a difference in quality):
#
#   bash benchmarks/pairs.sh BASE CANDIDATE [CANDIDATE ...]      e.g. perc perc_derive perc_colour
#
# Records: benchmarks/results/time_to_quality/main_pairs/runs/, the base's named <base>_preset_seed0_vs_<candidate>.
# A finished pair is skipped; a stopped one runs again. Seed: SEED (default 0). KEEP, OUT: the records' and the
# runs' folders; TTQ_ARGS: more arguments of time_to_quality.py (the tests pass --quick --time 4).
# At the end, benchmarks/pairs_report.py tabulates every finished pair of KEEP, seed by seed (results.md beside it).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE
PY=${PYTHON:-.venv/bin/python}
SEED=${SEED:-0}
KEEP=${KEEP:-benchmarks/results/time_to_quality/main_pairs/runs}
OUT=${OUT:-runs/ttq_pairs}
LOGS=${LOGS:-runs/logs}
base=$1
shift
mkdir -p "$LOGS" "$KEEP" "$OUT/base_records"
for cand in "$@"; do
    done_base=$KEEP/${base}_preset_seed${SEED}_vs_${cand}.json
    if [ -e "$done_base" ] && [ -e "$KEEP/${cand}_preset_seed${SEED}.json" ]; then
        echo "[pairs] skip $base against $cand (finished)"
        continue
    fi
    echo "[pairs $(date +%H:%M:%S)] $base against $cand, seed $SEED"
    # the base's record is written outside KEEP until the pair ends: a recipe that is a base here may be a
    # candidate of other pairs, whose record has the same name
    pending=$OUT/base_records
    rm -rf "$OUT/main/${base}_preset_seed${SEED}" "$pending/${base}_preset_seed${SEED}.json"
    T="benchmarks/time_to_quality.py main --threads 1 --seeds $SEED --out $OUT ${TTQ_ARGS:-}"
    # shellcheck disable=SC2086  # T is a word list
    $PY $T --keep "$pending" --recipes "$base" > "$LOGS/pair_${base}_vs_${cand}.log" 2>&1 &
    a=$!
    # shellcheck disable=SC2086
    $PY $T --keep "$KEEP" --recipes "$cand" > "$LOGS/pair_${cand}.log" 2>&1 &
    b=$!
    wait $a || echo "[pairs] $base failed: $LOGS/pair_${base}_vs_${cand}.log"
    wait $b || echo "[pairs] $cand failed: $LOGS/pair_${cand}.log"
    # the base's record belongs to this pair: the next pair runs its own
    mv "$pending/${base}_preset_seed${SEED}.json" "$done_base"
    mv "$OUT/main/${base}_preset_seed${SEED}" "$OUT/main/${base}_preset_seed${SEED}_vs_${cand}"
done
$PY benchmarks/pairs_report.py --keep "$KEEP"
