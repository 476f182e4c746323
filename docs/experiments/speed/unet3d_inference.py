# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/unet3d_inference.py
# (ran when unet3d's default width was 256; the widths are explicit below)
import time, numpy as np, torch, json
from lasegm.models import build_model, model_kwargs, save_checkpoint
from lasegm.onnx_export import export_onnx
from lasegm.predict import Segmenter
from lasegm.data import load_volume
pre={"image_size":160,"fov_mm":200.0,"context":0,"orientation":"RAS","version":2}
vol=load_volume("../shared/data/Task02_Heart/imagesTr/la_003.nii.gz")
for filters_w, slab in ((256,32),(128,32),(256,64)):
    kw=model_kwargs("unet3d","",1,decoder_width=filters_w, slab_depth=slab)
    torch.manual_seed(0)
    f=save_checkpoint(f"/tmp/u3d_{filters_w}_{slab}", build_model("unet3d",kw), {"arch":"unet3d","encoder":"","model_kwargs":kw,"preprocessing":pre}, half=True)
    export_onnx(f)
    for backend in ("onnx","torch"):
        seg=Segmenter(f, backend=backend, device="cpu")
        seg.segment(vol)
        t=time.perf_counter(); seg.segment(vol); print(filters_w, slab, backend, f"{time.perf_counter()-t:.2f} s/volume", flush=True)
