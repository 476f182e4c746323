# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/lvl.py unet 160; ... fpn 160; ... pspnet 224
import onnxruntime as ort, numpy as np, time, sys
from concurrent.futures import ThreadPoolExecutor
arch=sys.argv[1]; S=int(sys.argv[2])
x=np.random.RandomState(0).randn(8,3,S,S).astype(np.float32)
res={}
sess={}
for name,lvl in (("all",ort.GraphOptimizationLevel.ORT_ENABLE_ALL),("extended",ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)):
    o=ort.SessionOptions(); o.intra_op_num_threads=1; o.log_severity_level=3; o.graph_optimization_level=lvl
    o.add_session_config_entry("session.set_denormal_as_zero","1")
    sess[name]=ort.InferenceSession(f"checkpoints/{arch}/model.onnx",o,providers=["CPUExecutionProvider"])
    res[name]=[]
ref=sess["all"].run(None,{"slices":x})[0]
for r in range(6):
    for name,s in sess.items():
        t=time.perf_counter(); out=s.run(None,{"slices":x})[0]; res[name].append(time.perf_counter()-t)
for name in sess: print(arch,name,f"{np.median(res[name])/8*1000:.2f} ms/slice (1 thread)", np.abs(sess[name].run(None,{"slices":x})[0]-ref).max())
