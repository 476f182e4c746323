# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/bf16.py
import time, numpy as np, torch
from lasegm.models import load_checkpoint
torch.set_num_threads(2)
for arch in ["unet","fpn","pspnet"]:
    m,cfg=load_checkpoint(f"checkpoints/{arch}"); m=m.eval().float().to(memory_format=torch.channels_last)
    S=cfg["preprocessing"]["image_size"]
    X=torch.randn(64,3,S,S).contiguous(memory_format=torch.channels_last)
    def run(bf):
        with torch.no_grad(), torch.autocast("cpu",dtype=torch.bfloat16,enabled=bf):
            for i in range(0,64,16): m(X[i:i+16])
    for bf in (False,True):
        run(bf); ts=[]
        for r in range(3):
            t=time.perf_counter(); run(bf); ts.append(time.perf_counter()-t)
        print(arch,"bf16" if bf else "fp32", f"{np.median(ts)/64*1000:.2f} ms/slice")
