#!/usr/bin/env bash
# Cross-validate several recipes on one CUDA machine, within a time budget, and pack what finished.
#
#   DEADLINE=540 OUT=results bash docs/gpu/cv-many.sh JOBS_FILE [tiny]
#
# JOBS_FILE, one line each (# starts a comment):
#   cv NAME FLAGS...              `lasegm cv --name NAME FLAGS...`, its folds $JOBS at a time (default 5; add --final
#                                 for the model trained on every patient); the CVs run one after another
#   ensemble NAME CV1 CV2 ...     after the trainings: the out-of-fold table of the finished CVs' ensemble
#   run NAME COMMAND...           then, time permitting: a command (e.g. an analysis of the folds; $RUNS is the
#                                 runs folder, packed with everything else); its log is $RUNS/NAME.log
# The machine's CPU cores are the limit, not the GPU (measured on a 16-core H200 machine: 17 single-threaded
# trainings at once kept the GPU ~10 % busy, and those of the views that resample had begun no epoch after 8
# minutes; 3 trainings with 4 loader workers each trained the U-Net recipe's 40 epochs in 80-125 s). So a CV's folds
# share the cores with loader workers (lasegm cv --jobs), after the CV has built its slice cache once. Every training
# validates every $VAL_EVERY epochs (default 5) and after its last; a CV that starts gets `--time_limit_min` with what
# is left until DEADLINE - RESERVE seconds (RESERVE, default 150 s: held-out scoring, ensembles, packing); a watchdog
# stops whatever still runs 30 s before DEADLINE, so the records written by then are packed whatever happens. With
# RESUME=1 the runs folder of an earlier call on the same machine is kept and finished CVs are skipped. Trainings
# continue where they stopped (`lasegm cv --resume`: each saves its state when stopped and about every minute;
# finished folds are kept): with FROM=DIR the records and states an earlier call packed on another machine (DIR/*.tgz: results.tgz and
# state-*.tgz) are unpacked into the runs folder first, so a CV longer than one call spreads over several. `tiny`
# shrinks every training to one short epoch (a dry run on a CPU). Packs $OUT/results.tgz (every record: configs,
# histories, out-of-fold tables; no weights), for each NAME in $WEIGHTS (space-separated), $OUT/NAME-final.tgz
# (the final model's checkpoint, trained on every patient: the one to serve), and for each training stopped before
# its last epoch, $OUT/state-CV-RUN.tgz (its weights and optimiser state: what FROM= continues).
# Packages and data: docs/gpu/setup.sh (a machine without the packages or the data folder gets them from .devrun/).
set -uo pipefail
JOBS_FILE=${1:?usage: bash docs/gpu/cv-many.sh JOBS_FILE [tiny]}
TINY=${2:-}
export TINY  # a `run` line may pass it on (docs/gpu/fold-ensemble.jobs)
[ "${RESUME:-0}" = 1 ] && export KEEP_RUNS=1
source docs/gpu/setup.sh
export RUNS
for packed in ${FROM:+"$FROM"/*.tgz}; do tar xzf "$packed" -C "$RUNS" && echo "unpacked $packed"; done
DEADLINE=${DEADLINE:-540}
RESERVE=${RESERVE:-150}
( sleep $(( DEADLINE - 30 - $(elapsed) )); echo "deadline: stopping what still runs at $(elapsed)s"
  pkill -TERM -f "[-]m lasegm" ) &
WATCH=$!
COMMON="--val_every=${VAL_EVERY:-5} --split_file=splits/cv5.json --out_dir=$RUNS"
[ "$TINY" = tiny ] && COMMON="$COMMON --epochs=1 --samples_per_epoch=32"
gpu_monitor 30 "$RUNS/gpu_util.txt"
while read -r kind name flags; do
  [ "$kind" = cv ] || continue
  [ -f "$RUNS/cv/$name/oof.json" ] && { echo "$name: finished before"; continue; }
  LIMIT=$(python3 -c "print(round(($DEADLINE - $RESERVE - $(elapsed)) / 60, 1))")
  python3 -c "import sys; sys.exit($LIMIT < 0.5)" || { echo "no time left for $name"; continue; }
  echo "$name: time limit $LIMIT min, from $(elapsed)s"
  python3 -m lasegm --quiet cv --name="$name" --jobs="${JOBS:-5}" $flags $COMMON --time_limit_min="$LIMIT" \
    --resume=true < /dev/null > "$RUNS/cv-$name.log" 2>&1
done < <(grep -v '^\s*#' "$JOBS_FILE")
echo "trained at $(elapsed)s"
kill $MON 2>/dev/null
while read -r kind name members; do
  [ "$kind" = ensemble ] || continue
  [ $(elapsed) -lt $(( DEADLINE - 45 )) ] || { echo "no time left for ensemble $name"; continue; }
  python3 -m lasegm --quiet cv --name="$name" --ensemble $members --split_file=splits/cv5.json --out_dir=$RUNS \
    < /dev/null > "$RUNS/cv-$name.log" 2>&1
done < <(grep -v '^\s*#' "$JOBS_FILE")
while read -r kind name command; do
  [ "$kind" = run ] || continue
  [ $(elapsed) -lt $(( DEADLINE - 45 )) ] || { echo "no time left for $name"; continue; }
  timeout $(( DEADLINE - 40 - $(elapsed) )) bash -c "$command" < /dev/null > "$RUNS/$name.log" 2>&1
  echo "$name: exit $?"
done < <(grep -v '^\s*#' "$JOBS_FILE")
tail -n 2 "$RUNS"/cv-*.log
kill $WATCH 2>/dev/null
(cd "$RUNS" && tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='*.onnx' --exclude='curves.png' \
  --exclude=resume .)
(cd "$RUNS" && find cv -type d -name resume) | while read -r state; do  # cv/NAME/RUN/resume
  run=${state%/resume}; tar czf "$OUT/state-$(echo "${run#cv/}" | tr / -).tgz" -C "$RUNS" "$state"
done
for name in ${WEIGHTS:-}; do
  [ -d "$RUNS/cv/$name/final/checkpoint" ] && tar czf "$OUT/$name-final.tgz" -C "$RUNS/cv/$name" final/checkpoint
done
ls -la "$OUT"
