#!/usr/bin/env bash
# Does training on the relabelled Task02 data (ASR affines, orientation ASR) repeat the training on the release's
# headers (RAS) step for step? The served U-Net recipe, shortened to 2 epochs x 64 slices (2 CPU threads), trained by
# the code before the relabelling (commit 50a1543, in a temporary worktree) and by this checkout; prints both weight
# files' SHA-256 (equal = the same training) and the orientations they record.
# Usage: LASEGM_DATA=... bash docs/experiments/relabel_retrain_check.sh   (~10 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=${OLD:-50a1543} WORK=$(mktemp -d)
git worktree add -q "$WORK/old" "$OLD"
trap 'git worktree remove --force "$WORK/old"; rm -rf "$WORK"' EXIT
R="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice --fov_mm=200
   --context=1 --epochs=2 --samples_per_epoch=64 --batch_size=16 --seed=0 --split_file=splits/split.json
   --num_threads=2 --select=last"
export WANDB_MODE=disabled
(cd "$WORK/old" && PYTHONPATH="$WORK/old" LASEGM_CACHE="$WORK/cache-old" "$OLDPWD/.venv/bin/python" -m lasegm --quiet \
  train $R --out_dir="$WORK/runs-old" --run_name=u)
LASEGM_CACHE="$WORK/cache-new" .venv/bin/python -m lasegm --quiet train $R --out_dir="$WORK/runs-new" --run_name=u
sha256sum "$WORK"/runs-{old,new}/u/checkpoint/model.safetensors
grep -h '"orientation"' "$WORK"/runs-{old,new}/u/checkpoint/config.json
