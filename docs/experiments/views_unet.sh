#!/usr/bin/env bash
# The served U-Net recipe (checkpoints/unet) cross-validated in the coronal and axial planes on 2 CPU cores, one fold
# per process, two at a time, one thread each (research_log.md, 2026-12-05). Each plane's folds are collected and
# paired with nnU-Net and with the served sagittal recipe; the views are then averaged from the folds' probability
# maps. Run from the repository root with LASEGM_DATA set; PLANES picks the planes (coronal first: the best plane of
# the quick start). The GPU route is docs/gpu/unet-views.jobs.
# JOBS sets how many folds train at once (3 on 2 cores cost ~15 % throughput per fold but leave no core idle while
# the fifth fold trains alone).
#     PLANES="coronal axial" JOBS=2 bash docs/experiments/views_unet.sh
set -euo pipefail
: "${LASEGM_DATA:?set LASEGM_DATA to the Task02_Heart folder}" "${ANCHOR:=docs/anchors/nnunet_task02_oof_dice.csv}"
: "${PLANES:=coronal axial}" "${SERVED:=checkpoints/unet/cv-oof.json}" "${JOBS:=2}"
export OMP_NUM_THREADS=1 WANDB_MODE="${WANDB_MODE:-offline}"
RECIPE="--split_file=splits/cv5.json --arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160
  --lr=0.0016 --loss=dice --fov_mm=200 --context=1 --epochs=40 --samples_per_epoch=800 --batch_size=16 --seed=0
  --augment=true --mirror=false --largest_component=true --flip_tta=false --val_every=10 --num_threads=1"
export RECIPE
mkdir -p runs  # the fold logs go there: a failed redirect would end in `|| true` and skip every fold silently
# `lasegm cv --folds K` exits 2 while other folds are missing, which is expected here
for p in $PLANES; do for k in 0 1 2 3 4; do echo "$p $k"; done; done |
  xargs -P "$JOBS" -L 1 bash -c 'lasegm cv --name unet-$0 --folds $1 $RECIPE --plane=$0 > runs/log-unet-$0-$1.txt 2>&1 || true'
for p in $PLANES; do
  lasegm cv --name unet-$p --collect_only $RECIPE --plane=$p
  lasegm compare runs/cv/unet-$p/oof.csv --reference "$ANCHOR"
  lasegm compare runs/cv/unet-$p/oof.csv --reference "$SERVED" --reference_column dice
done
