# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/ensval.py
import numpy as np, glob, os, time
from lasegm.data import load_volume
from lasegm.predict import Ensemble, Segmenter
ms=[Segmenter(f"checkpoints/{a}") for a in ("unet","fpn","pspnet")]
fast=Ensemble(ms); full=Ensemble(ms, exhaustive=True)
D="../shared/data/Task02_Heart"
tf=tx=0
for f in sorted(glob.glob(D+"/imagesTr/*.nii.gz")):
    vol=load_volume(f)
    t=time.perf_counter(); a=fast.segment(vol); t1=time.perf_counter(); b=full.segment(vol); t2=time.perf_counter()
    tf+=t1-t; tx+=t2-t1
    d=2*(a&b).sum()/max(1,a.sum()+b.sum())
    print(os.path.basename(f), vol.image.shape[2], f"agree_dice {d:.6f} differing_voxels {(a!=b).sum()} gated {t1-t:.2f}s full {t2-t1:.2f}s")
print(f"total gated {tf:.1f}s full {tx:.1f}s")
