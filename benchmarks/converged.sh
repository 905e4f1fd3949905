#!/usr/bin/env bash
# The long runs behind BENCHMARKS.md section 6 ("with the main recipe": the paper's comparison on students
# trained for the budget the time-to-quality curves call enough) and the 3 seeds of section 7, as two
# one-thread lanes, one per core, then the candidate pairs of section 7 (benchmarks/pairs.sh). Every
# command is resumable: a finished run is skipped and a stopped one resumes from its checkpoint
# (reproduce.py) or starts again (time_to_quality.py, pairs.sh), so the script can be stopped at any
# time and started again later; it writes the tables of what has finished after the lanes.
#
#   nohup bash benchmarks/converged.sh > runs/logs/converged.log 2>&1 &
#   nohup bash benchmarks/converged.sh 1 > runs/logs/lane1.log 2>&1 &   (lane 1 alone; 2: lane 2)
#
# Two one-thread processes side by side: the reproduce.py runs have a step budget (4,000 steps), so a
# busy machine only slows them; the time_to_quality.py runs in the lanes are the one-thread students
# (ResNet-9 ngf 16, mobile ngf 16), whose step is no faster at 2 threads (BENCHMARKS.md section 2.1),
# so one core of two is a fair stand-in for a user's 2-core run. The ngf 32 time-to-quality runs gain
# from a second thread and run alone: `python benchmarks/time_to_quality.py real_teacher --recipes
# no_gan --students r32 --train-photos 400 --no-test-curve --seeds 2
# --keep benchmarks/results/time_to_quality/real_teacher/runs`.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
VARIANTS="kd kd_srp feat feat_srp at sp scratch"
KEEP=benchmarks/results/real_teacher_main
TTQ_KEEP=benchmarks/results/time_to_quality/real_teacher
# --keep: each finished run's figures are copied into the committed results folder as soon as it is scored,
# so a fresh checkout (whose runs/ is empty) skips it; commit them as they come
REP="benchmarks/reproduce.py real_teacher --recipe main --steps 4000 --threads 1 --out runs/bench/rt128main --keep $KEEP/runs"
TTQ="benchmarks/time_to_quality.py real_teacher --recipes no_gan --train-photos 400 --no-test-curve --threads 1 --keep $TTQ_KEEP/runs"

lane() {
    for cmd in "$@"; do
        echo "[converged $(date +%H:%M:%S)] $cmd"
        # shellcheck disable=SC2086  # each command is a word list
        $PY $cmd || echo "[converged $(date +%H:%M:%S)] failed ($?): $cmd"
    done
}

# Lane 1 finishes ResNet-9 ngf 16 (the paper's student), then both lanes run the one-thread time-to-quality
# seeds (time-budgeted: two one-thread processes and nothing else on the machine, or the budget is stolen
# from), then the step-budgeted comparison runs of mobile ngf 16 and ngf 32. Memory: a time-to-quality run
# on 800 photos holds a 6.5 GiB teacher cache; two side by side fit in 24 GiB.
lane1() {
    lane "$REP --students r16 --seeds 0 1 2 --variants $VARIANTS" \
         "$TTQ --students r16 --seeds 0" \
         "$TTQ --students r16 --seeds 2" \
         "$TTQ --students m16 --seeds 2" \
         "$REP --students m16 --seeds 0 --variants $VARIANTS" \
         "$REP --students m16 --seeds 2 --variants scratch" \
         "$REP --students r32 --seeds 2 --variants kd kd_srp" \
         "$REP --students r32 --seeds 0 --variants $VARIANTS" \
         "$REP --students r32 --seeds 2 --variants at scratch"
}
# lane 2 takes mobile ngf 16's seed 2 but its last variant (lane 1 takes that one, after the rest of seed 0), so that
# the mobile table is complete first, both lanes reaching it at about the same time (20-25 minutes a mobile run); the
# ngf 32 runs (55-65 minutes each on one thread) run the paper's pairs first: seed 2 of kd and kd_srp in lane 1 and of
# feat_srp and feat in lane 2 (the third seed that the verdicts need), then scratch (GAN only, no verdict rests on it),
# then seed 2 of AT and scratch (lane 1) and of SP (lane 2); no run is in both lanes, so two lanes never write one
# run folder
lane2() {
    lane "$TTQ --students r16 --seeds 1" \
         "$TTQ --students m16 --seeds 1" \
         "$REP --students m16 --seeds 1 --variants $VARIANTS" \
         "$REP --students m16 --seeds 2 --variants kd kd_srp feat feat_srp at sp" \
         "$REP --students r32 --seeds 2 --variants feat_srp feat" \
         "$REP --students r32 --seeds 1 --variants $VARIANTS" \
         "$REP --students r32 --seeds 2 --variants sp"
}
# bash benchmarks/converged.sh 1 (or 2): that lane alone, without the tables (to restart one lane)
case "${1:-}" in
    1) lane1; exit ;;
    2) lane2; exit ;;
esac
lane1 &
lane2 &
wait

# shellcheck disable=SC2086
$PY $REP --students r16 m16 r32 --seeds 0 1 2 --report-only && cp runs/bench/rt128main/real_teacher/results.{json,md} $KEEP/
$PY benchmarks/time_to_quality.py real_teacher --recipes default fast no_gan --students r16 r32 m16 \
    --seeds 0 1 2 --train-photos 192 400 --report-only --keep $TTQ_KEEP/runs \
    && cp runs/ttq/real_teacher/{results.json,results.md,curves.png} $TTQ_KEEP/

# Last, with nothing else running (they are time-budgeted): the candidate pairs of section 7 (main job) for three
# seeds, each candidate beside its own run of the preset; finished pairs are skipped (seed 0 has two already)
for seed in 0 1 2; do
    SEED=$seed bash benchmarks/pairs.sh perc perc_derive perc_colour perc_prog perc_gan_all perc_const_lr
done
# then the preset with one of its own parts taken away, the same way: perceptual KD, feature KD, the student's input
# skip (the paper's plain ResNet-9 ngf 16), the discriminator
for seed in 0 1 2; do
    SEED=$seed bash benchmarks/pairs.sh perc perc_off perc_no_feat perc_plain perc_no_gan
done
