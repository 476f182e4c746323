#!/usr/bin/env bash
# Issue #12, item 4, prepared for one lent GPU call (not yet run on a GPU; its tiny mode ran on 2 CPU cores, 2026-11-27).
# The final U-Net recipe (40 epochs x 800 slices, splits/split.json) with the new defaults (DataLoader workers
# beside a GPU, bf16 autocast, channels_last, cuDNN autotuning), then 10 epochs of the old data path
# (--workers=0 --channels_last=false) for comparison; GPU utilisation sampled every 2 s.
# The first run also builds the slice cache (its epoch times in history.csv exclude that). Carry .devrun/ as for docs/gpu/2026-11-27-h100-v2.sh (data.tar.xz, site/, whl/). Usage: bash docs/gpu/speed-check.sh [tiny]
set -uo pipefail
T0=$(date +%s)
source docs/gpu/setup.sh
UNET="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice --fov_mm=200 --context=1 --seed=0 --batch_size=16 --samples_per_epoch=800"
EPOCHS=40; OLD_EPOCHS=10
if [ "${1:-}" = tiny ]; then EPOCHS=1; OLD_EPOCHS=1; UNET="$UNET --samples_per_epoch=32"; fi
( while sleep 2; do echo "$(( $(date +%s) - T0 )) $(nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null)"; done ) > "$OUT/gpu_util.txt" &
MON=$!
for run in new old; do
  if [ $run = new ]; then FLAGS="--epochs=$EPOCHS"; else FLAGS="--epochs=$OLD_EPOCHS --workers=0 --channels_last=false --num_threads=1"; fi
  echo "start $run $(( $(date +%s) - T0 ))" >> "$OUT/gpu_util.txt"
  /usr/bin/time -f "$run wall %e s" python3 -m lasegm --quiet train $UNET $FLAGS --split_file=splits/split.json \
    --run_name=speed-$run --out_dir=/tmp/runs > "$OUT/train-$run.log" 2>&1
  echo "end $run $(( $(date +%s) - T0 ))" >> "$OUT/gpu_util.txt"
done
kill $MON 2>/dev/null
tail -n 4 "$OUT"/train-*.log
for run in new old; do cp /tmp/runs/speed-$run/summary.json "$OUT/summary-$run.json" 2>/dev/null; cp /tmp/runs/speed-$run/history.csv "$OUT/history-$run.csv" 2>/dev/null; done
ls -la "$OUT"
