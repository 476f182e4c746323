#!/usr/bin/env bash
# A served recipe (checkpoints/ARCH) cross-validated per plane on 2 CPU cores, one fold per process, one thread
# each (research_log.md, 2026-12-05 onwards). Each plane's folds are collected and paired with nnU-Net and with the
# served model of the architecture; with two or more planes their mean is scored from the folds' probability maps.
# Folds already finished (runs/cv/ARCH-PLANE/fold-K/summary.json, e.g. committed records copied back) are not
# retrained; a stopped or killed one continues from its last saved state (--resume): run the same line again.
# Run from the repository root with LASEGM_DATA set.
#   ARCH    unet, fpn or pspnet: the served recipe of that architecture (below)
#   PLANES  the planes (coronal first: the best plane of the quick start)
#   JOBS    trainings at once (3 on 2 cores cost ~15 % throughput each but leave no core idle while a fold trains
#           alone)
#   FINAL   true: also train each plane's final model on all 16 patients, and with two or more planes publish them
#           as one multi-view checkpoint carrying the mean's table (runs/served/ARCH-PLANE+ARCH-PLANE; copy it to
#           checkpoints/ARCH to serve it)
#   FOLDS   the folds to train in this run (default all five): a share that fits the time at hand; a later run
#           with the rest (or all) finishes the plane, and the planes are scored once all their folds exist
#   EXTRA   flags added to the recipe, TAG the variant's name (its CVs are ARCH-TAG-PLANE; the served FPN's
#           encoder was such a variant first, so its CVs are fpn-b0-PLANE: name them with TAG=b0)
#     ARCH=pspnet TAG=160 EXTRA=--image_size=160 PLANES="axial coronal" FOLDS="0 1 2" bash docs/experiments/views.sh
# The GPU route is docs/gpu/ARCH-views.jobs (the same recipes).
set -euo pipefail
: "${LASEGM_DATA:?set LASEGM_DATA to the Task02_Heart folder}" "${ANCHOR:=docs/anchors/nnunet_task02_oof_dice.csv}"
: "${ARCH:=unet}" "${PLANES:=coronal axial}" "${JOBS:=2}" "${FINAL:=false}"
: "${SERVED:=checkpoints/$ARCH/cv-oof.json}" "${EXTRA:=}" "${TAG:=}" "${FOLDS:=0 1 2 3 4}"
[ -z "$EXTRA" ] || [ -n "$TAG" ] || { echo "EXTRA changes the recipe: name the variant with TAG" >&2; exit 2; }
NAME=$ARCH${TAG:+-$TAG}
export OMP_NUM_THREADS=1 WANDB_MODE="${WANDB_MODE:-offline}"
COMMON="--split_file=splits/cv5.json --fov_mm=200 --context=1 --epochs=40 --samples_per_epoch=800 --batch_size=16
  --seed=0 --augment=true --mirror=false --largest_component=true --flip_tta=false --val_every=10 --num_threads=1"
case "$ARCH" in
  unet) RECIPE="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice" ;;
  fpn) RECIPE="--arch=fpn --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.003 --loss=dice_bce" ;;
  pspnet) RECIPE="--arch=pspnet --encoder=resnet18 --image_size=224 --lr=0.003 --loss=dice_bce" ;;
  *) echo "ARCH must be unet, fpn or pspnet, not '$ARCH'" >&2; exit 2 ;;
esac
RECIPE="$RECIPE $EXTRA $COMMON"  # a flag given twice: the last one counts
export RECIPE NAME
# "PLANE FOLD" for each fold among $1 not finished yet (finished: its summary, and no saved state left), fold by
# fold, so that with JOBS as many as the planes a run cut short leaves whole folds of every plane to pair up
unfinished() {
  for k in $1; do for p in $PLANES; do d="runs/cv/$NAME-$p/fold-$k"
    [ -f "$d/summary.json" ] && [ ! -d "$d/resume" ] || echo "$p $k"; done; done
}
mkdir -p runs  # the logs go there: a failed redirect would end in `|| true` and skip every training silently
# one line per training: PLANE FOLD (or PLANE final); `lasegm cv --folds K` exits 2 while other folds are missing,
# which is expected here; `--folds --final` trains only the final model, after checking the folds' recipe
unfinished "$FOLDS" | xargs -r -P "$JOBS" -L 1 bash -c 'lasegm cv --name $NAME-$0 --folds $1 $RECIPE --plane=$0 \
  --resume=true >> runs/log-$NAME-$0-$1.txt 2>&1 || true'
failed=$(unfinished "$FOLDS" | sed 's| |/fold-|' | tr '\n' ' ')
[ -z "$failed" ] || { echo "did not finish: $failed(runs/log-$NAME-PLANE-FOLD.txt says why)" >&2; exit 1; }
rest=$(unfinished "0 1 2 3 4" | sed 's| |/fold-|' | tr '\n' ' ')
# a share of the folds (FOLDS): the planes are scored once a later run has trained the rest
[ -z "$rest" ] || { echo "folds still to train: $rest(a later run with FOLDS naming them trains them)"; exit 0; }
if [ "$FINAL" = true ]; then
  for p in $PLANES; do d="runs/cv/$NAME-$p/final"
    [ -f "$d/checkpoint/model.safetensors" ] && [ ! -d "$d/resume" ] || echo "$p"; done |
    xargs -r -P "$JOBS" -L 1 bash -c 'lasegm cv --name $NAME-$0 --folds --final $RECIPE --plane=$0 --resume=true \
      >> runs/log-$NAME-$0-final.txt 2>&1'
fi
names=()
for p in $PLANES; do
  lasegm cv --name "$NAME-$p" --collect_only $RECIPE --plane="$p"
  lasegm compare "runs/cv/$NAME-$p/oof.csv" --reference "$ANCHOR"
  lasegm compare "runs/cv/$NAME-$p/oof.csv" --reference "$SERVED" --reference_column dice
  names+=("$NAME-$p")
done
if [ ${#names[@]} -gt 1 ]; then
  mean=$(IFS=+; echo "${names[*]}")
  lasegm cv --name "$mean" --ensemble "${names[@]}" --split_file=splits/cv5.json --largest_component=true \
    --flip_tta=false
  lasegm compare "runs/cv/$mean/oof.csv" --reference "$ANCHOR"
  lasegm compare "runs/cv/$mean/oof.csv" --reference "$SERVED" --reference_column dice
  if [ "$FINAL" = true ]; then
    finals=(); for n in "${names[@]}"; do finals+=("runs/cv/$n/final/checkpoint"); done
    lasegm export --checkpoint "${finals[@]}" --cv_table "runs/cv/$mean/oof.json" --out "runs/served/$mean"
  fi
fi
