# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   LASEGM_DATA=../shared/data/Task02_Heart python docs/experiments/speed/prof.py unet fpn pspnet
import time, numpy as np, sys
from lasegm.predict import Segmenter, predict_slices
from lasegm.data import load_volume
import os
D=os.environ["LASEGM_DATA"]
vol=load_volume(f"{D}/imagesTr/la_003.nii.gz", f"{D}/labelsTr/la_003.nii.gz")
for arch in sys.argv[1:]:
    seg=Segmenter(f"checkpoints/{arch}")
    print(arch, seg.backend, seg.post)
    for rep in range(3):
        t=time.perf_counter(); slices, geo = seg.pre.prepare(vol.image, vol.affine); t1=time.perf_counter()
        p=seg.model_probabilities(slices); t2=time.perf_counter()
        r=seg.pre.restore(p, geo); t3=time.perf_counter()
        m=seg.post.binarize(r); t4=time.perf_counter()
        # pure model
        x=np.stack([__import__('lasegm.preprocess',fromlist=['x']).stack_context(slices,z,1) for z in range(16)])
        t5=time.perf_counter(); 
        for s in range(0,len(slices),16): seg.runner(x)
        t6=time.perf_counter()
        print(f"prep {t1-t:.3f} model {t2-t1:.3f} restore {t3-t2:.3f} post {t4-t3:.3f} total {t4-t:.3f} pure-model {t6-t5:.3f} slices {slices.shape}")
