#!/usr/bin/env bash
# The served models (2026-11-28): the three recipes cross-validated on one H100 on 2026-11-27 (docs/cv/2026-11-27-h100),
# each trained on all 16 development patients on 2 CPU cores with `lasegm cv --folds --final`, which checks them
# against the folds' records (config.json + summary.json; the folds' weights stayed on the GPU machine) and
# writes the out-of-fold table into the final checkpoint. Then: lasegm export --checkpoint
# runs/cv/v2-<arch>/final/checkpoint --out checkpoints/<arch>.
# Usage: bash docs/experiments/finals_cpu.sh [unet fpn pspnet]   (~25 min each on 2 cores)
set -euo pipefail
COMMON="--encoder_weights=none --encoder_depth=0 --decoder_attention=none --context=1 --fov_mm=200.0 --epochs=40
  --samples_per_epoch=800 --fg_fraction=0.5 --batch_size=16 --weight_decay=0.0001 --scheduler=cosine --augment=True
  --seed=0 --fp16_checkpoint=True --split_file=splits/cv5.json --num_threads=2"
declare -A RECIPE=(
  [unet]="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice"
  [fpn]="--arch=fpn --encoder=resnet18 --decoder_width=128 --image_size=160 --lr=0.003 --loss=dice_bce"
  [pspnet]="--arch=pspnet --encoder=resnet18 --decoder_width=0 --image_size=224 --lr=0.003 --loss=dice_bce"
)
for a in ${*:-unet fpn pspnet}; do
  mkdir -p runs/cv && [ -d runs/cv/v2-$a ] || cp -r docs/cv/2026-11-27-h100/folds/v2-$a runs/cv/
  /usr/bin/time -f "$a: %e s" lasegm --quiet cv --name=v2-$a --folds --final ${RECIPE[$a]} $COMMON
done
