# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/par2.py
import time, numpy as np, onnxruntime as ort
from concurrent.futures import ThreadPoolExecutor
from lasegm.data import load_volume
from lasegm.predict import Segmenter
D="../shared/data/Task02_Heart"
vol=load_volume(f"{D}/imagesTr/la_003.nii.gz")
seg=Segmenter("checkpoints/unet")
slices,_=seg.pre.prepare(vol.image, vol.affine)
from lasegm.preprocess import stack_context
X=np.stack([stack_context(slices,z,1) for z in range(len(slices))])
p="checkpoints/unet/model.onnx"
o=ort.SessionOptions(); o.intra_op_num_threads=1; o.log_severity_level=3
o.add_session_config_entry("session.set_denormal_as_zero","1")
s1=ort.InferenceSession(p,o,providers=["CPUExecutionProvider"])
pool=ThreadPoolExecutor(2)
def split_call(xb):
    parts=np.array_split(xb,2)
    return np.concatenate(list(pool.map(lambda a: s1.run(None,{"slices":a})[0], parts)))
ref=np.concatenate([seg.runner.session.run(None,{"slices":X[i:i+16]})[0] for i in range(0,len(X),16)])
for bs in (16,32):
  for rep in range(3):
    t=time.perf_counter(); out=np.concatenate([split_call(X[i:i+bs]) for i in range(0,len(X),bs)]); a=time.perf_counter()-t
    t=time.perf_counter(); [seg.runner.session.run(None,{"slices":X[i:i+16]}) for i in range(0,len(X),16)]; b=time.perf_counter()-t
    print(bs, f"split {a:.3f}  intra2 {b:.3f}  maxdiff {np.abs(out-ref).max():.2g}")
print("---interleaved")
def streams(bs=16):
    halves=[np.arange(len(X))[h::2] for h in (0,1)]
    def run(idx): return [s1.run(None,{"slices":X[idx[i:i+bs]]})[0] for i in range(0,len(idx),bs)]
    return list(pool.map(run, halves))
res={"split16":[], "split32":[], "intra2":[], "streams":[]}
for rep in range(7):
    t=time.perf_counter(); [split_call(X[i:i+16]) for i in range(0,len(X),16)]; res["split16"].append(time.perf_counter()-t)
    t=time.perf_counter(); [split_call(X[i:i+32]) for i in range(0,len(X),32)]; res["split32"].append(time.perf_counter()-t)
    t=time.perf_counter(); [seg.runner.session.run(None,{"slices":X[i:i+16]}) for i in range(0,len(X),16)]; res["intra2"].append(time.perf_counter()-t)
    t=time.perf_counter(); streams(); res["streams"].append(time.perf_counter()-t)
for k,v in res.items(): print(k, f"{np.median(v):.3f}", [round(x,2) for x in v])
