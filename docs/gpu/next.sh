#!/usr/bin/env bash
# Prepared for the next lent GPU call (one command, <= 9.5 min; tiny mode dry-run on 2 CPU cores). In order:
#  1. tests/test_gpu.py (~30 s), printed at once: it has never run on a GPU (on 2026-11-28 14:40 it ran beside the
#     CVs and its log was lost when the call was cut).
#  2. Only with SPEED_CHECK=1: #12 item 4's speed check, measured on 2026-11-28 14:40 (77.3 s whole process,
#     docs/gpu/2026-11-28-h200-b/): the U-Net recipe alone on the GPU (40 epochs x 800 slices, splits/split.json,
#     validated every epoch; GPU utilisation every 2 s), then `benchmarks/benchmark.py --gpu_training` (each
#     served recipe's training step, eager and CUDA-graphed), packed as speed.tgz. Off by default: its ~2.5 min
#     are the CVs' time.
#  3. #13: docs/gpu/cv-2d.sh in the time left: the U-Net, FPN and PSPNet recipes cross-validated under the fixed
#     augmentation (the served models' recipes), then the ensembles' out-of-fold tables; U-Net and PSPNet fold
#     weights come back.
# The 3D U-Net's CV ran on 2026-11-28 (docs/gpu/2026-11-28-h200/next.sh; OOF 0.865).
# Before the call: `bash docs/gpu/slim-tree.sh out` (the tracked checkpoints, examples and figures push the call
# over its 64 MiB), after it `bash docs/gpu/slim-tree.sh in`. Carry .devrun/ (build it first: docs/gpu/make-devrun.sh).
# Usage: [SPEED_CHECK=1] bash docs/gpu/next.sh [tiny]    (CPU dry run:
#   PATH=$PWD/.venv/bin:$PATH JOBS=2 RUNS=/tmp/tiny-runs OUT=/tmp/o LASEGM_DATA=<data> bash docs/gpu/next.sh tiny)
set -uo pipefail
source docs/gpu/setup.sh
TINY=${1:-}
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
timeout 120 python3 -m pytest -q -p no:cacheprovider -o addopts="-ra" tests/test_gpu.py 2>&1 | tail -n 12

if [ "${SPEED_CHECK:-0}" = 1 ]; then
  gpu_monitor 2 "$OUT/gpu_util.txt"
  UNET="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice --fov_mm=200 --context=1 --seed=0 --batch_size=16"
  SPEED="--epochs=40 --samples_per_epoch=800"; [ "$TINY" = tiny ] && SPEED="--epochs=1 --samples_per_epoch=32"
  echo "speed start $(elapsed)" >> "$OUT/gpu_util.txt"
  # a 2.5-min cap keeps a slow run from eating the CVs' time
  /usr/bin/time -f "speed wall %e s" python3 -m lasegm --quiet train $UNET $SPEED --time_limit_min=2.5 \
    --split_file=splits/split.json --run_name=speed --out_dir=$RUNS > "$OUT/train-speed.log" 2>&1
  echo "speed end $(elapsed)" >> "$OUT/gpu_util.txt"
  tail -n 3 "$OUT/train-speed.log"
  cp $RUNS/speed/summary.json "$OUT/summary-speed.json" 2>/dev/null; cp $RUNS/speed/history.csv "$OUT/history-speed.csv" 2>/dev/null
  # the networks' training steps alone, kernel by kernel and CUDA-graphed, for each served recipe (~30 s)
  python3 benchmarks/benchmark.py --data "$LASEGM_DATA" --gpu_training --out "$OUT/benchmarks-gpu.json" > "$OUT/benchmark-gpu.log" 2>&1
  tail -n 3 "$OUT/benchmark-gpu.log"
  kill $MON 2>/dev/null
  # one file for all of the above ($OUT takes 8 files; cv-2d.sh needs 6)
  (cd "$OUT" && tar czf speed.tgz gpu_util.txt train-speed.log summary-speed.json history-speed.csv benchmarks-gpu.json \
    benchmark-gpu.log 2>/dev/null; rm -f gpu_util.txt train-speed.log summary-speed.json history-speed.csv benchmarks-gpu.json benchmark-gpu.log)
fi

DEADLINE=$(( 540 - $(elapsed) )) RUNS=$RUNS/cv2d bash docs/gpu/cv-2d.sh $TINY
