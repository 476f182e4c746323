#!/usr/bin/env bash
# Issue #13, prepared for a lent GPU call (docs/gpu/next.sh runs it after the GPU tests; its one run, 2026-11-28
# 14:40, was cut short before it packed; tiny mode dry-run on 2 CPU cores): the committed U-Net, FPN and PSPNet
# recipes cross-validated again under the fixed augmentation of 2026-11-27 (5 folds of splits/cv5.json, no
# mirroring: it cost 0.10 OOF Dice on the CPU quick start): 15 trainings at once (on 2026-11-27, 18 took 432-442 s
# per U-Net fold without CUDA graphs; one U-Net alone trains 4.5x faster with them, 2026-11-28). No final models:
# the served ones were trained with these flags on 2 CPU cores (docs/experiments/finals_cpu.sh); `lasegm cv --name
# <arch>-v3 --final --collect_only` gives them these tables once the folds' records are in runs/cv/<arch>-v3/ beside
# runs/cv/<arch>-v3/final/checkpoint. Then the out-of-fold tables of the three-model and U-Net + FPN ensembles
# (`lasegm cv --ensemble`). The time limit (the same for every fold) is what $DEADLINE (seconds this script may
# take, default 540) leaves after 180 s for start-up, scoring, the ensembles and the copying. $OUT takes 8 files of
# <= 16 MiB, 64 MiB in all: results.tgz (every record, no weights), the U-Net folds' weights
# (unet-v3-folds.tgz.part-*) and PSPNet's (pspnet-v3-folds.tgz), for analyses and ensembles without a GPU; FPN's (5
# x 23 MB) stay behind.
# Carry .devrun/ (build it first: docs/gpu/make-devrun.sh).
# Usage: bash docs/gpu/cv-2d.sh [tiny]   (CPU dry run: PATH=$PWD/.venv/bin:$PATH JOBS=2 RUNS=/tmp/tiny-runs
#   OUT=/tmp/o LASEGM_DATA=<data> bash docs/gpu/cv-2d.sh tiny)
set -uo pipefail
source docs/gpu/setup.sh
DEADLINE=${DEADLINE:-540}
# The limit counts a training's epochs only: on 2026-11-28 14:40 (H200) 15 processes' start (imports, slice caches)
# and their held-out scoring took the call past its end with a 100-s margin, and nothing came back. So 180 s are
# kept for those, and a watchdog stops what still runs 30 s before the deadline: the records written by then return.
LIMIT=$(python3 -c "print(round(max(1.0, ($DEADLINE - 180) / 60), 1))")
echo "time limit per training: $LIMIT min"
( sleep $(( DEADLINE - 30 - $(elapsed) )); echo "deadline: stopping what still runs at $(elapsed)s"
  pkill -TERM -f "[-]m lasegm" ) &
WATCH=$!
# 15 trainings (and 3 CV drivers) share 16 cores: one thread and no loader workers each
COMMON="--epochs=40 --samples_per_epoch=800 --batch_size=16 --fov_mm=200 --context=1 --seed=0 --augment=true --mirror=false --largest_component=true --time_limit_min=$LIMIT --num_threads=1 --workers=0"
if [ "${1:-}" = tiny ]; then COMMON="--epochs=1 --samples_per_epoch=32 --batch_size=16 --fov_mm=200 --context=1 --num_threads=1 --workers=0"; fi
UNET="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice"
FPN="--arch=fpn --encoder=resnet18 --decoder_width=128 --image_size=160 --lr=0.003 --loss=dice_bce"
PSP="--arch=pspnet --encoder=resnet18 --image_size=224 --lr=0.003 --loss=dice_bce"
pids=()
for job in fpn-v3:FPN unet-v3:UNET pspnet-v3:PSP; do
  IFS=: read -r name recipe <<< "$job"
  python3 -m lasegm --quiet cv --name=$name --jobs=${JOBS:-5} ${!recipe} $COMMON --flip_tta=false \
    --split_file=splits/cv5.json --out_dir=$RUNS > $RUNS/cv-$name.log 2>&1 &
  pids+=($!)
done
gpu_monitor 60 /dev/stdout
for p in "${pids[@]}"; do wait $p; done
echo "trained at $(elapsed)s"
kill $MON 2>/dev/null
# The ensembles the demo serves, scored out of fold (no training: each fold's three or two checkpoints averaged on
# its held-out patients; ~10 s each on a GPU), if a minute is left
if [ $(elapsed) -lt $(( DEADLINE - 40 )) ]; then
  for members in "unet-v3 fpn-v3 pspnet-v3" "unet-v3 fpn-v3"; do
    python3 -m lasegm --quiet cv --name="ens-${members// /+}" --ensemble $members --largest_component=true \
      --flip_tta=false --split_file=splits/cv5.json --out_dir=$RUNS > "$RUNS/cv-ens-${members// /+}.log" 2>&1 &
  done
  wait
fi
tail -n 3 $RUNS/cv-*.log
kill $WATCH 2>/dev/null
(cd $RUNS && tar czf $OUT/results.tgz --exclude='*.safetensors' --exclude='*.onnx' --exclude='curves.png' .)
for name in unet-v3 pspnet-v3; do  # fold weights ($OUT: <= 16 MiB a file)
  [ -d $RUNS/cv/$name ] || continue
  (cd $RUNS/cv/$name && tar czf "$OUT/$name-folds.tgz" fold-*/checkpoint)
  [ $(stat -c %s "$OUT/$name-folds.tgz") -gt 15000000 ] && split -b 15000000 -d "$OUT/$name-folds.tgz" "$OUT/$name-folds.tgz.part-" && rm "$OUT/$name-folds.tgz"
done
ls -la $OUT
