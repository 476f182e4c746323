# Sourced by the GPU scripts: python packages and data on a CUDA machine without internet (torch is there; the rest
# comes in .devrun/, built by docs/gpu/make-devrun.sh), a slice cache, W&B off, a fresh
# $RUNS, the script's clock (`elapsed`, seconds since it started) and `gpu_monitor SECONDS FILE`.
T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .devrun/whl ] && ! python3 -c "import segmentation_models_pytorch" 2>/dev/null; then
  # .devrun/site.tar.xz: the pure-Python packages (site/: albumentations, nibabel, smp, monai, ...)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devrun/whl/*.whl && tar xJf .devrun/site.tar.xz -C /tmp && echo "site ready" || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-}:$PWD
if [ ! -d "${LASEGM_DATA:-/nonexistent}" ]; then mkdir -p /tmp/data && tar xJf .devrun/data.tar.xz -C /tmp/data && export LASEGM_DATA=/tmp/data/Task02_Heart; fi
export LASEGM_CACHE=${LASEGM_CACHE:-/tmp/cache} WANDB_MODE=disabled PYTHONUNBUFFERED=1
RUNS=${RUNS:-/tmp/runs}; [ "${KEEP_RUNS:-0}" = 1 ] || rm -rf "$RUNS"; mkdir -p "$RUNS"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; nproc
# GPU utilisation (%) and memory (MiB) every SECONDS, appended to FILE with the script's clock; stop it with
# `kill $MON`
gpu_monitor() {
  ( while sleep "$1"; do echo "$(elapsed) $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits 2>/dev/null)"; done ) >> "$2" &
  MON=$!
}
