#!/usr/bin/env bash
# Issue #12 item 4, the second GPU call of 2026-11-28. The first (docs/gpu/next.sh, H200) trained the U-Net recipe at
# ~280 slices/s with the GPU 15-20 % busy (kernel launches, not arithmetic, set the pace of a small 2D net), after a
# 62-s first epoch during which the GPU sat idle. Two runs of the same recipe on splits/split.json, GPU utilisation
# every second:
#  1. graph: forward and backward replayed as CUDA graphs, no cuDNN autotuning; 40 epochs (capped at 2 min)
#  2. eager: the plain loop without cuDNN autotuning, 8 epochs: is autotuning the first epoch's stall?
# Carry .devrun/ (docs/gpu/setup.sh). Usage: bash docs/gpu/2026-11-28-h200/speed-graph.sh [tiny]   (CPU dry run, where both flags
#   are no-ops: PATH=$PWD/.venv/bin:$PATH RUNS=/tmp/tiny-runs OUT=/tmp/o LASEGM_DATA=<data> bash docs/gpu/2026-11-28-h200/speed-graph.sh tiny)
set -uo pipefail
T0=$(date +%s)
source docs/gpu/setup.sh
RUNS=${RUNS:-/tmp/runs}; rm -rf $RUNS; mkdir -p $RUNS
elapsed() { echo $(( $(date +%s) - T0 )); }
( while sleep 1; do echo "$(elapsed) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits 2>/dev/null)"; done ) > "$OUT/gpu_util.txt" &
MON=$!
UNET="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice --fov_mm=200 --context=1 --seed=0 --batch_size=16 --samples_per_epoch=800"
E=40; E2=8; [ "${1:-}" = tiny ] && E=1 && E2=1 && UNET="$UNET --samples_per_epoch=32"
for run in "graph:--epochs=$E --cuda_graph=true --cudnn_benchmark=false --time_limit_min=2" \
           "eager:--epochs=$E2 --cudnn_benchmark=false --time_limit_min=1"; do
  name=${run%%:*}; flags=${run#*:}
  echo "start $name $(elapsed)" >> "$OUT/gpu_util.txt"
  /usr/bin/time -f "$name wall %e s" python3 -m lasegm --quiet train $UNET $flags --split_file=splits/split.json \
    --run_name=speed-$name --out_dir=$RUNS > "$OUT/train-$name.log" 2>&1
  echo "end $name $(elapsed)" >> "$OUT/gpu_util.txt"
  tail -n 2 "$OUT/train-$name.log"
  cp $RUNS/speed-$name/summary.json "$OUT/summary-$name.json" 2>/dev/null
done
kill $MON 2>/dev/null
ls -la "$OUT"
