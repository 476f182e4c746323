# Sourced by the GPU scripts: python packages and data on a bare lent machine (torch is there; the rest
# comes in .devrun/, see docs/gpu/2026-11-27-h100-v2.sh and research_log.md), a slice cache, W&B off.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .devrun/whl ] && ! python3 -c "import segmentation_models_pytorch" 2>/dev/null; then
  # .devrun/site.tar.xz: the pure-Python packages (site/: albumentations, nibabel, smp, monai, ...)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devrun/whl/*.whl && tar xJf .devrun/site.tar.xz -C /tmp && echo "site ready" || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
if [ ! -d "${LASEGM_DATA:-/nonexistent}" ]; then mkdir -p /tmp/data && tar xJf .devrun/data.tar.xz -C /tmp/data && export LASEGM_DATA=/tmp/data/Task02_Heart; fi
export LASEGM_CACHE=${LASEGM_CACHE:-/tmp/cache} WANDB_MODE=disabled PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; nproc

# A CV's final model is served with mirrored TTA only where TTA scores higher out of fold: the folds are re-scored
# with it (`--reevaluate --final`: the final model takes that post-processing and table), else the plain table
# is recorded again (`--final --collect_only`). Usage: rescore_with_tta NAME (in $RUNS/cv, folds file cv5).
rescore_with_tta() {
  local cv=(--name=$1 --final --split_file=splits/cv5.json --out_dir=$RUNS)
  python3 -m lasegm --quiet cv "${cv[@]}" --reevaluate --flip_tta=true || return 1
  python3 - "$RUNS/cv/$1" <<'PY' || python3 -m lasegm --quiet cv "${cv[@]}" --collect_only
import json, sys
mean = lambda stem: json.load(open(f"{sys.argv[1]}/{stem}.json"))["summary"]["dice"]["mean"]
tta, plain = mean("oof-lc-true-tta-true"), mean("oof")
print(f"{sys.argv[1]}: out-of-fold 3D Dice {plain:.4f} plain, {tta:.4f} with flip TTA -> serve {'TTA' if tta > plain else 'plain'}")
sys.exit(0 if tta > plain else 1)
PY
}
