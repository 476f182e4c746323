#!/usr/bin/env bash
# Issue #13, prepared for a whole lent GPU call (tiny mode dry-run on 2 CPU cores; not yet run on a GPU): the
# deep-supervised 3D U-Net of 2026-11-28 (OOF 0.865 at 1,820 steps per fold, six trainings sharing an H200) with the
# whole call for its 5 folds alone (no final model, no speed check): ~1.9x the steps, same recipe otherwise, so the
# paired comparison with docs/cv/2026-11-28-h200/ says what a longer schedule buys in 3D. The epochs are sized from
# a measured step time (the 2026-11-28 sizing used 79 % of the time it was given). The folds' weights come back
# ($OUT/unet3d-long-folds.tgz.part-*, ~28 MB), so that a 2D + 3D ensemble can be scored out of fold without a GPU
# (`lasegm cv --name ENS --ensemble unet-v3 unet3d-long`, once docs/gpu/cv-2d.sh has brought the 2D folds back).
# Before the call `bash docs/gpu/slim-tree.sh out`, after it `... in`. Carry .devrun/ (build it first:
# docs/gpu/make-devrun.sh).
# Usage: bash docs/gpu/cv-3d-long.sh [tiny]   (CPU dry run: PATH=$PWD/.venv/bin:$PATH JOBS=2 RUNS=/tmp/tiny-runs
#   OUT=/tmp/o LASEGM_DATA=<data> bash docs/gpu/cv-3d-long.sh tiny)
set -uo pipefail
source docs/gpu/setup.sh
TINY=${1:-}
gpu_monitor 5 "$OUT/gpu_util.txt"
# one training step alone (unet3d, deep supervision, 2 slabs of 32 x 160 x 160, bf16 on a GPU)
STEP=$(python3 - <<'PY'
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
PY
)
LEFT=$(( 540 - $(elapsed) ))
# five trainings share the GPU: 90 % of it theirs, 75 % of the time training (the rest: loading, validation)
ITERS=$(python3 -c "print(max(40, int($LEFT * 0.75 * 0.9 / (5 * $STEP))))")
EPOCHS3D=20; SAMPLES3D=$(( ITERS * 2 / EPOCHS3D ))
LIMIT=$(python3 -c "print(round(($LEFT - 60) / 60, 1))")  # a safety stop, should the estimate be off
[ "$TINY" = tiny ] && EPOCHS3D=1 && SAMPLES3D=4
echo "3D step ${STEP}s alone; ${LEFT}s left -> $ITERS iterations per fold: --epochs=$EPOCHS3D --samples_per_epoch=$SAMPLES3D" | tee "$OUT/plan.txt"
U3D="--arch=unet3d --context=0 --image_size=160 --fov_mm=200 --slab_depth=32 --deep_supervision=2 --batch_size=2 --lr=0.001 --loss=dice_bce --augment=true --mirror=false --largest_component=true --seed=0 --epochs=$EPOCHS3D --samples_per_epoch=$SAMPLES3D --time_limit_min=$LIMIT --workers=1 --num_threads=1"
python3 -m lasegm --quiet cv --name=unet3d-long --jobs=${JOBS:-5} $U3D --flip_tta=false --split_file=splits/cv5.json \
  --out_dir=$RUNS > $RUNS/cv-unet3d-long.log 2>&1
echo "trained at $(elapsed)s"
kill $MON 2>/dev/null
tail -n 3 $RUNS/cv-*.log
(cd $RUNS && tar czf $OUT/results.tgz --exclude='*.safetensors' --exclude='*.onnx' --exclude='curves.png' .)
(cd $RUNS/cv/unet3d-long && tar czf "$OUT/unet3d-long-folds.tgz" fold-*/checkpoint)  # $OUT: 8 files of <= 16 MiB
[ $(stat -c %s "$OUT/unet3d-long-folds.tgz") -gt 15000000 ] && split -b 15000000 -d "$OUT/unet3d-long-folds.tgz" \
  "$OUT/unet3d-long-folds.tgz.part-" && rm "$OUT/unet3d-long-folds.tgz"
ls -la "$OUT"
