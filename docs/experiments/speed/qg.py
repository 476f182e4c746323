# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/qg.py
import onnxruntime as ort, numpy as np, time, json, collections
def sess(disabled=(), prof=False):
    o=ort.SessionOptions(); o.intra_op_num_threads=1; o.log_severity_level=3; o.enable_profiling=prof
    o.add_session_config_entry("session.set_denormal_as_zero","1")
    return ort.InferenceSession("checkpoints/unet/model.onnx",o,providers=["CPUExecutionProvider"], disabled_optimizers=list(disabled))
x=np.random.RandomState(0).randn(8,3,160,160).astype(np.float32)
S={"default":sess(),"noQuickGelu":sess(["QuickGeluFusion"])}
ref=S["default"].run(None,{"slices":x})[0]
res={k:[] for k in S}
for r in range(7):
    for k,s in S.items():
        t=time.perf_counter(); out=s.run(None,{"slices":x})[0]; res[k].append(time.perf_counter()-t)
for k in S: print(k, f"{np.median(res[k])/8*1000:.2f} ms/slice", np.abs(S[k].run(None,{"slices":x})[0]-ref).max())
s=sess(["QuickGeluFusion"],True)
for i in range(3): s.run(None,{"slices":x})
ev=json.load(open(s.end_profiling())); c=collections.Counter()
for e in ev:
    if e.get("cat")=="Node" and e["name"].endswith("_kernel_time"): c[e["args"]["op_name"]]+=e["dur"]
tot=sum(c.values())
for k,v in c.most_common(8): print(f"{k:25s} {v/tot*100:5.1f}%")
