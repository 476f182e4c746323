# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/bs.py
import time, numpy as np
from lasegm.data import load_volume
from lasegm.predict import Segmenter, predict_slices
seg=Segmenter("checkpoints/unet")
vol=load_volume("../shared/data/Task02_Heart/imagesTr/la_003.nii.gz")
s,_=seg.pre.prepare(vol.image, vol.affine)
res={}
for r in range(11):
    for bs in (4,16):
        t=time.perf_counter(); predict_slices(seg.runner, s, 1, batch_size=bs); res.setdefault(bs,[]).append(time.perf_counter()-t)
for bs,v in res.items(): print(bs, f"{np.median(v):.3f}")
