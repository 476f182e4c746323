#!/usr/bin/env bash
# The CPU quick start cross-validated in each plane, and the means of the views scored from the folds' probability
# maps, paired with each other and with nnU-Net (research_log.md, 2026-12-02). Two trainings at a time, one thread
# each (~3 h on 2 CPU cores). Run from the repository root with LASEGM_DATA set; ANCHOR is nnU-Net's OOF CSV.
#     ANCHOR=../shared/anchors/nnunet_task02_oof_dice.csv bash docs/experiments/views_quickstart.sh
set -euo pipefail
: "${LASEGM_DATA:?set LASEGM_DATA to the Task02_Heart folder}" "${ANCHOR:=docs/anchors/nnunet_task02_oof_dice.csv}"
export OMP_NUM_THREADS=1 WANDB_MODE="${WANDB_MODE:-offline}"
RECIPE="--split_file=splits/cv5.json --arch=unet --loss=dice --decoder_width=128 --image_size=128 --epochs=20
  --samples_per_epoch=640 --val_every=10 --num_threads=1"
export RECIPE
mkdir -p runs  # the fold logs go there: a failed redirect would end in `|| true` and skip every fold silently
# one fold per process; `lasegm cv --folds K` exits 2 while other folds are missing, which is expected here
for k in 0 1 2 3 4; do for p in coronal axial sagittal; do echo "$p $k"; done; done |
  xargs -P 2 -L 1 bash -c 'lasegm cv --name qs-$0 --folds $1 $RECIPE --plane=$0 > runs/log-qs-$0-$1.txt 2>&1 || true'
for p in sagittal axial coronal; do lasegm cv --name qs-$p --collect_only $RECIPE --plane=$p; done
for views in sagittal+axial sagittal+coronal axial+coronal sagittal+axial+coronal; do
  lasegm cv --name qs-$views --ensemble $(printf 'qs-%s ' ${views//+/ }) --split_file=splits/cv5.json
done
for n in sagittal axial coronal sagittal+axial sagittal+coronal axial+coronal sagittal+axial+coronal; do
  lasegm compare runs/cv/qs-$n/oof.csv --reference "$ANCHOR"
  lasegm compare runs/cv/qs-$n/oof.csv --reference runs/cv/qs-sagittal/oof.csv --reference_column dice
done
lasegm compare runs/cv/qs-sagittal+axial+coronal/oof.csv --reference runs/cv/qs-sagittal+axial/oof.csv --reference_column dice
lasegm compare runs/cv/qs-sagittal+axial+coronal/oof.csv --reference runs/cv/qs-axial+coronal/oof.csv --reference_column dice
lasegm compare runs/cv/qs-axial+coronal/oof.csv --reference runs/cv/qs-coronal/oof.csv --reference_column dice
