# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/lcc.py
# Pipeline stages of the served U-Net on la_003; "lcc" is the largest-component step (47 ms before the
# bounding-box change, 20 ms after; also visible as "post" in prof.py).
import time, numpy as np
from lasegm.data import load_volume
from lasegm.predict import Segmenter
from lasegm.postprocess import largest_component
seg=Segmenter("checkpoints/unet")
vol=load_volume("../shared/data/Task02_Heart/imagesTr/la_003.nii.gz")
s,g=seg.pre.prepare(vol.image, vol.affine)
p=seg.pre.restore(seg.model_probabilities(s), g)
for i in range(3):
    t=time.perf_counter(); seg.pre.prepare(vol.image, vol.affine); a=time.perf_counter()-t
    t=time.perf_counter(); m=(p>=0.5).astype(np.uint8); b=time.perf_counter()-t
    t=time.perf_counter(); largest_component(m); c=time.perf_counter()-t
    print(f"prep {a:.3f} thresh {b:.3f} lcc {c:.3f}")
