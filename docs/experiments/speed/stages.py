"""Seconds per pipeline stage of the served U-Net on la_003 (ONNX Runtime): prepare, network, restore, binarize.

    python docs/experiments/speed/stages.py   (LASEGM_DATA: the data folder)
"""
import time, statistics, os, sys
import numpy as np
from pathlib import Path
from lasegm.predict import Segmenter, predict_slices
from lasegm.data import load_volume
from lasegm.checkpoint import slab_depth
data = Path(os.environ.get("LASEGM_DATA", "../shared/data/Task02_Heart"))
vol = load_volume(data/"imagesTr/la_003.nii.gz")
seg = Segmenter("checkpoints/unet", device="cpu", backend="onnx")
seg.segment(vol)
T = {k: [] for k in ["prepare","net","restore","binarize","total"]}
for _ in range(7):
    t0=time.perf_counter(); slices, geo = seg.pre.prepare(vol.image, vol.affine)
    t1=time.perf_counter(); p = seg.model_probabilities(slices)
    t2=time.perf_counter(); r = seg.pre.restore(p, geo)
    t3=time.perf_counter(); m = seg.post.binarize(r)
    t4=time.perf_counter()
    for k,v in zip(T,[t1-t0,t2-t1,t3-t2,t4-t3,t4-t0]): T[k].append(v)
print({k: round(statistics.median(v),3) for k,v in T.items()}, slices.shape, p.dtype, r.shape, r.dtype)
