#!/usr/bin/env bash
# Cross-validate several recipes at once on one CUDA machine, within a time budget, and pack what finished.
#
#   DEADLINE=540 OUT=results bash docs/gpu/cv-many.sh JOBS_FILE [tiny]
#
# JOBS_FILE, one line each (# starts a comment):
#   cv NAME FLAGS...              `lasegm cv --name NAME FLAGS...` (all its folds at once; add --final for the model
#                                 trained on every patient)
#   ensemble NAME CV1 CV2 ...     after the trainings: the out-of-fold table of the finished CVs' ensemble
#   run NAME COMMAND...           then, time permitting: a command (e.g. an analysis of the folds; $RUNS is the
#                                 runs folder, packed with everything else); its log is $RUNS/NAME.log
# Every training validates every $VAL_EVERY epochs (default 5) and after its last, and gets `--time_limit_min` so that the trainings end DEADLINE - RESERVE seconds after the start
# (RESERVE, default 180 s: start-up, held-out scoring, ensembles, packing); a watchdog stops whatever still runs
# 30 s before DEADLINE, so the records written by then are packed whatever happens. `tiny` shrinks every training
# to one short epoch (a dry run on a CPU). Packs $OUT/results.tgz (every record: configs, histories, out-of-fold
# tables; no weights) and, for each NAME in $WEIGHTS (space-separated), $OUT/NAME-final.tgz (the final model's
# checkpoint, trained on every patient: the one to serve).
# Packages and data: see docs/gpu/setup.sh (a machine without the packages or the data folder gets them from .devrun/).
set -uo pipefail
JOBS_FILE=${1:?usage: bash docs/gpu/cv-many.sh JOBS_FILE [tiny]}
TINY=${2:-}
source docs/gpu/setup.sh
export RUNS
DEADLINE=${DEADLINE:-540}
RESERVE=${RESERVE:-180}
LIMIT=$(python3 -c "print(round(max(0.5, ($DEADLINE - $RESERVE - $(elapsed)) / 60), 1))")
echo "time limit per training: $LIMIT min"
( sleep $(( DEADLINE - 30 - $(elapsed) )); echo "deadline: stopping what still runs at $(elapsed)s"
  pkill -TERM -f "[-]m lasegm" ) &
WATCH=$!
# many trainings share the machine's cores: one thread and no loader workers each
COMMON="--time_limit_min=$LIMIT --val_every=${VAL_EVERY:-5} --num_threads=1 --workers=0 --split_file=splits/cv5.json --out_dir=$RUNS"
[ "$TINY" = tiny ] && COMMON="$COMMON --epochs=1 --samples_per_epoch=32"
pids=()
while read -r kind name flags; do
  [ "$kind" = cv ] || continue
  python3 -m lasegm --quiet cv --name="$name" --jobs=${JOBS:-6} $flags $COMMON > "$RUNS/cv-$name.log" 2>&1 &
  pids+=($!)
done < <(grep -v '^\s*#' "$JOBS_FILE")
gpu_monitor 30 "$RUNS/gpu_util.txt"
for p in "${pids[@]}"; do wait "$p"; done
echo "trained at $(elapsed)s"
kill $MON 2>/dev/null
while read -r kind name members; do
  [ "$kind" = ensemble ] || continue
  [ $(elapsed) -lt $(( DEADLINE - 45 )) ] || { echo "no time left for ensemble $name"; continue; }
  python3 -m lasegm --quiet cv --name="$name" --ensemble $members --split_file=splits/cv5.json --out_dir=$RUNS \
    > "$RUNS/cv-$name.log" 2>&1
done < <(grep -v '^\s*#' "$JOBS_FILE")
while read -r kind name command; do
  [ "$kind" = run ] || continue
  [ $(elapsed) -lt $(( DEADLINE - 45 )) ] || { echo "no time left for $name"; continue; }
  timeout $(( DEADLINE - 40 - $(elapsed) )) bash -c "$command" > "$RUNS/$name.log" 2>&1; echo "$name: exit $?"
done < <(grep -v '^\s*#' "$JOBS_FILE")
tail -n 2 "$RUNS"/cv-*.log
kill $WATCH 2>/dev/null
(cd "$RUNS" && tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='*.onnx' --exclude='curves.png' .)
for name in ${WEIGHTS:-}; do
  [ -d "$RUNS/cv/$name/final/checkpoint" ] && tar czf "$OUT/$name-final.tgz" -C "$RUNS/cv/$name" final/checkpoint
done
ls -la "$OUT"
