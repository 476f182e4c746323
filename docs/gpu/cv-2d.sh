#!/usr/bin/env bash
# Issue #13, the step after docs/gpu/next.sh, prepared for one lent GPU call (not yet run on a GPU; tiny mode dry-run
# on 2 CPU cores with JOBS=1): the committed FPN and PSPNet recipes cross-validated again under the fixed
# augmentation of 2026-11-27 (5 folds of splits/cv5.json), each with its final model on all 16 patients (`--final`:
# with next.sh's U-Net, every served architecture then trains on all development patients), and one check whether
# the GPU schedule (40 x 800 slices, 2.5x the CPU quick start's) rescues mirroring: the U-Net recipe with
# `--mirror=true` and its final model, re-scored with flip TTA (rescore_with_tta, docs/gpu/setup.sh: the final model
# keeps TTA only where it scores higher out of fold). On the CPU quick start mirroring cost 0.10 (research_log
# 2026-11-28). 18 trainings at once (18 took 9 min on one H100). The final checkpoints come back in
# $OUT/final-<name>.tgz[.part-*].
# Carry .devrun/ as for docs/gpu/2026-11-27-h100-v2.sh.
# Usage: bash docs/gpu/cv-2d.sh [tiny]   (CPU dry run: PATH=$PWD/.venv/bin:$PATH JOBS=1 RUNS=/tmp/tiny-runs
#   OUT=/tmp/o LASEGM_DATA=<data> bash docs/gpu/cv-2d.sh tiny)
set -uo pipefail
T0=$(date +%s)
source docs/gpu/setup.sh
RUNS=${RUNS:-/tmp/runs}; rm -rf $RUNS; mkdir -p $RUNS
# 20 processes share 16 cores: one thread and no loader workers each
COMMON="--epochs=40 --samples_per_epoch=800 --batch_size=16 --fov_mm=200 --context=1 --seed=0 --augment=true --largest_component=true --time_limit_min=7.3 --num_threads=1 --workers=0"
if [ "${1:-}" = tiny ]; then COMMON="--epochs=1 --samples_per_epoch=32 --batch_size=16 --fov_mm=200 --context=1 --num_threads=1 --workers=0"; fi
UNET="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice"
FPN="--arch=fpn --encoder=resnet18 --decoder_width=128 --image_size=160 --lr=0.003 --loss=dice_bce"
PSP="--arch=pspnet --encoder=resnet18 --image_size=224 --lr=0.003 --loss=dice_bce"
pids=()
for job in fpn-v3:FPN:--mirror=false unet-mirror:UNET:--mirror=true pspnet-v3:PSP:--mirror=false; do
  IFS=: read -r name recipe extra <<< "$job"
  python3 -m lasegm --quiet cv --name=$name --final --jobs=${JOBS:-6} ${!recipe} $COMMON $extra --flip_tta=false \
    --split_file=splits/cv5.json --out_dir=$RUNS > $RUNS/cv-$name.log 2>&1 &
  pids+=($!)
done
( while sleep 60; do echo "t=$(( $(date +%s) - T0 ))s $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)"; done ) &
MON=$!
for p in "${pids[@]}"; do wait $p; done
echo "trained at $(( $(date +%s) - T0 ))s"
rescore_with_tta unet-mirror > $RUNS/reeval-unet-mirror.log 2>&1  # docs/gpu/setup.sh: the final keeps TTA if it pays
kill $MON 2>/dev/null
echo "all done at $(( $(date +%s) - T0 ))s"
tail -n 2 $RUNS/reeval-*.log
tail -n 3 $RUNS/cv-*.log
(cd $RUNS && tar czf $OUT/results.tgz --exclude='*.safetensors' --exclude='*.onnx' --exclude='curves.png' .)
for d in $RUNS/cv/*/final/checkpoint; do  # the models to serve; $OUT takes <= 16 MiB a file (FPN's fp16 weights: 23 MB)
  name=$(basename $(dirname $(dirname $d))); tar czf "$OUT/final-$name.tgz" -C $(dirname $d) checkpoint
  [ $(stat -c %s "$OUT/final-$name.tgz") -gt 15000000 ] && split -b 15000000 -d "$OUT/final-$name.tgz" "$OUT/final-$name.tgz.part-" && rm "$OUT/final-$name.tgz"
done
ls -la $OUT
