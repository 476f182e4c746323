#!/usr/bin/env bash
# Prepared for the next lent GPU call (one command, <= 9.5 min; not yet run on a GPU, its tiny mode ran on 2 CPU
# cores). In order:
#  1. #12 item 4: the final U-Net recipe (40 epochs x 800 slices, splits/split.json) alone on the GPU with the
#     GPU defaults (loader workers, bf16, channels_last, cuDNN autotuning); GPU utilisation every 2 s.
#  2. #13: the 3D U-Net variant (unet3d, widest level 128 so that it serves in ~3 s on 2 CPU cores, slabs of 32
#     slices, deep supervision: it commits to the atrium within ~300 steps instead of ~900, no mirroring) as a
#     5-fold CV (splits/cv5.json) plus its final model on all 16 patients (`--final`): six trainings sharing the
#     GPU. The epochs are sized from a measured step time so the cosine schedule ends inside the time left (CV
#     keeps each fold's last epoch, and the final model must reach the same epoch to record the CV).
#     The 2D CVs are docs/gpu/cv-2d.sh: a 2D U-Net fold takes ~7 min among 18 trainings (432-442 s on
#     2026-11-27), which does not fit beside the speed check.
#  The final checkpoint comes back in $OUT/final-unet3d-ds.tgz, carrying its OOF table (cv-oof.json).
# Carry .devrun/ (data.tar.xz, site.tar.xz, whl/: see docs/gpu/setup.sh).
# Usage: bash docs/gpu/next.sh [tiny]    (CPU dry run:
#   PATH=$PWD/.venv/bin:$PATH JOBS=2 RUNS=/tmp/tiny-runs OUT=/tmp/o LASEGM_DATA=<data> bash docs/gpu/next.sh tiny)
set -uo pipefail
T0=$(date +%s)
source docs/gpu/setup.sh
RUNS=${RUNS:-/tmp/runs}; rm -rf $RUNS; mkdir -p $RUNS
TINY=${1:-}
elapsed() { echo $(( $(date +%s) - T0 )); }
( while sleep 2; do echo "$(elapsed) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits 2>/dev/null)"; done ) > "$OUT/gpu_util.txt" &
MON=$!
# preflight: the versions, and whether DataLoader workers work here (shared memory in a sandbox can refuse them):
# if not, every training below runs without workers rather than failing
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; df -h /dev/shm | tail -n 1
WORKERS=""
timeout 60 python3 -c "
import torch
ds = torch.utils.data.TensorDataset(torch.randn(64, 3, 160, 160))
print('loader workers ok:', sum(b[0].shape[0] for b in torch.utils.data.DataLoader(ds, batch_size=16, num_workers=4)))
" || { WORKERS="--workers=0"; echo "DataLoader workers failed here: training without them"; }

UNET="--arch=unet --encoder=efficientnet-b0 --decoder_width=128 --image_size=160 --lr=0.0016 --loss=dice --fov_mm=200 --context=1 --seed=0 --batch_size=16"
SPEED="--epochs=40 --samples_per_epoch=800"; [ "$TINY" = tiny ] && SPEED="--epochs=1 --samples_per_epoch=32"
echo "speed start $(elapsed)" >> "$OUT/gpu_util.txt"
# a 2.5-min limit (the target is 90 s) keeps a slow run from eating the 3D CV's time
/usr/bin/time -f "speed wall %e s" python3 -m lasegm --quiet train $UNET $SPEED $WORKERS --time_limit_min=2.5 \
  --split_file=splits/split.json --run_name=speed --out_dir=$RUNS > "$OUT/train-speed.log" 2>&1
echo "speed end $(elapsed)" >> "$OUT/gpu_util.txt"
tail -n 3 "$OUT/train-speed.log"
# back in $OUT at once: should the call be cut short, the speed check still comes back
cp $RUNS/speed/summary.json "$OUT/summary-speed.json" 2>/dev/null; cp $RUNS/speed/history.csv "$OUT/history-speed.csv" 2>/dev/null

# 3D step time alone (the default unet3d with deep supervision, batch 2 x 32 x 160 x 160, bf16 on a GPU) -> epochs
# that fit the time left
STEP=$(python3 - <<'EOF'
import time, torch
from lasegm.models import build_model, model_kwargs
from lasegm.runtime import memory_layout
dev = "cuda" if torch.cuda.is_available() else "cpu"
m = build_model("unet3d", model_kwargs("unet3d", "", 1, slab_depth=32, deep_supervision=2)).to(dev)
m = m.to(memory_format=memory_layout(m))
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x = torch.randn(2, 1, 32, 160, 160, device=dev).contiguous(memory_format=memory_layout(m))
times = []
for i in range(8 if dev == "cuda" else 2):
    t = time.perf_counter()
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
        loss = m(x).float().mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if dev == "cuda": torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
print(f"{sorted(times)[len(times) // 2]:.4f}")
EOF
)
LEFT=$(( 540 - $(elapsed) ))  # seconds left for the CV, in a 9.5-min command
# six 3D trainings (5 folds + final) share the GPU: assume 90 % of it is theirs and 75 % of the time trains
ITERS=$(python3 -c "print(max(40, int($LEFT * 0.75 * 0.9 / (6 * $STEP))))")
EPOCHS3D=20; SAMPLES3D=$(( ITERS * 2 / EPOCHS3D ))
LIMIT=$(python3 -c "print(round(($LEFT - 45) / 60, 1))")  # a safety stop, should the estimate be off
[ "$TINY" = tiny ] && EPOCHS3D=1 && SAMPLES3D=4
echo "3D step ${STEP}s alone; ${LEFT}s left -> $ITERS iterations per fold: --epochs=$EPOCHS3D --samples_per_epoch=$SAMPLES3D" | tee "$OUT/plan.txt"

U3D="--arch=unet3d --context=0 --image_size=160 --fov_mm=200 --slab_depth=32 --deep_supervision=2 --batch_size=2 --lr=0.001 --loss=dice_bce --augment=true --mirror=false --largest_component=true --seed=0 --epochs=$EPOCHS3D --samples_per_epoch=$SAMPLES3D --time_limit_min=$LIMIT --workers=1 --num_threads=1 $WORKERS"
python3 -m lasegm --quiet cv --name=unet3d-ds --final --jobs=${JOBS:-6} $U3D --flip_tta=false --split_file=splits/cv5.json \
  --out_dir=$RUNS > $RUNS/cv-unet3d-ds.log 2>&1
echo "trained at $(elapsed)s"
kill $MON 2>/dev/null
tail -n 3 $RUNS/cv-*.log
(cd $RUNS && tar czf $OUT/results.tgz --exclude='*.safetensors' --exclude='*.onnx' --exclude='curves.png' .)
for d in $RUNS/cv/*/final/checkpoint; do  # the models to serve (fp16 weights: a few MB each; $OUT takes <= 16 MiB a file)
  name=$(basename $(dirname $(dirname $d))); tar czf "$OUT/final-$name.tgz" -C $(dirname $d) checkpoint
done
ls -la "$OUT"
