#!/usr/bin/env bash
# One GPU call: 3 served retrains under preprocessing v2 (split.json) + 5-fold CV of the three recipes (cv5.json),
# 18 trainings at once. Usage: bash .devrun/gpu.sh [tiny]
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
if [ -d .devrun/whl ] && ! python3 -c "import segmentation_models_pytorch" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devrun/whl/*.whl && cp -r .devrun/site/* /tmp/site/ || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
if [ ! -d "${LASEGM_DATA:-/nonexistent}" ]; then mkdir -p /tmp/data && tar xJf .devrun/data.tar.xz -C /tmp/data && export LASEGM_DATA=/tmp/data/Task02_Heart; fi
export LASEGM_CACHE=${LASEGM_CACHE:-/tmp/cache} WANDB_MODE=disabled PYTHONUNBUFFERED=1
echo "setup $(( $(date +%s) - T0 ))s"; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
RUNS=/tmp/runs; rm -rf $RUNS; mkdir -p $RUNS
COMMON="--epochs=40 --samples_per_epoch=800 --batch_size=16 --fov_mm=200 --context=1 --seed=0 --augment=true --largest_component=true --time_limit_min=7.3 --num_threads=1"
if [ "${1:-}" = tiny ]; then COMMON="--epochs=1 --samples_per_epoch=32 --batch_size=16 --fov_mm=200 --context=1 --num_threads=1"; fi
UNET="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice"
FPN="--arch=fpn --encoder=resnet18 --decoder_width=128 --image_size=160 --lr=0.003 --loss=dice_bce"
PSP="--arch=pspnet --encoder=resnet18 --image_size=224 --lr=0.003 --loss=dice_bce"
pids=()
for a in unet fpn pspnet; do
  case $a in unet) R=$UNET;; fpn) R=$FPN;; pspnet) R=$PSP;; esac
  python3 -m lasegm --quiet train $R $COMMON --split_file=splits/split.json --run_name=v2-$a --out_dir=$RUNS > $RUNS/train-$a.log 2>&1 &
  pids+=($!)
  python3 -m lasegm --quiet cv --name=v2-$a --jobs=5 $R $COMMON --split_file=splits/cv5.json --out_dir=$RUNS > $RUNS/cv-$a.log 2>&1 &
  pids+=($!)
done
( while sleep 60; do echo "t=$(( $(date +%s) - T0 ))s $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null) load $(cut -d' ' -f1 /proc/loadavg)"; done ) &
MON=$!
for p in "${pids[@]}"; do wait $p; done
kill $MON 2>/dev/null
echo "all done at $(( $(date +%s) - T0 ))s"
tail -n 3 $RUNS/*.log $RUNS/cv/*/fold-*.log
# results: histories, summaries, OOF tables, fold logs (no fold weights); the three served checkpoints
(cd $RUNS && tar czf $OUT/results.tgz --exclude='*.safetensors' --exclude='curves.png' .)
for a in unet pspnet; do tar cf $OUT/ckpt-$a.tar -C $RUNS/v2-$a checkpoint; done
tar cf - -C $RUNS/v2-fpn checkpoint | split -b 15m - $OUT/ckpt-fpn.tar.part-
ls -la $OUT
