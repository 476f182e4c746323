# Probe run for research_log.md (2026-11-27, 2 CPU cores), from the repository root with the venv's python:
#   python docs/experiments/speed/q8.py
import time, numpy as np, onnxruntime as ort, onnx
from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantType, QuantFormat
from onnxruntime.quantization.shape_inference import quant_pre_process
from lasegm.data import load_volume
from lasegm.predict import Segmenter
from lasegm.preprocess import stack_context
D="../shared/data/Task02_Heart"
seg=Segmenter("checkpoints/unet")
def X_of(case):
    vol=load_volume(f"{D}/imagesTr/{case}.nii.gz")
    s,_=seg.pre.prepare(vol.image, vol.affine)
    return np.stack([stack_context(s,z,1) for z in range(len(s))])
Xc=X_of("la_005")
# fp32 plain model (external data resolved)
m=onnx.load("checkpoints/unet/model.onnx"); onnx.save(m,"/tmp/u32.onnx")
quant_pre_process("/tmp/u32.onnx","/tmp/u32p.onnx")
class R(CalibrationDataReader):
    def __init__(s): s.it=iter([{"slices":Xc[i:i+8]} for i in range(0,len(Xc),8)][::2])
    def get_next(s): return next(s.it,None)
quantize_static("/tmp/u32p.onnx","/tmp/u8.onnx",R(),quant_format=QuantFormat.QDQ,per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
o=ort.SessionOptions(); o.intra_op_num_threads=2; o.log_severity_level=3
s8=ort.InferenceSession("/tmp/u8.onnx",o,providers=["CPUExecutionProvider"])
X=X_of("la_003")
for name,s in (("fp32",seg.runner.session),("int8",s8)):
    s.run(None,{"slices":X[:16]})
    t=time.perf_counter(); out=np.concatenate([s.run(None,{"slices":X[i:i+16]})[0] for i in range(0,len(X),16)]); dt=time.perf_counter()-t
    if name=="fp32": ref=out
    a=ref>0; b=out>0
    print(name, f"{dt:.3f}s dice_vs_fp32 {2*(a&b).sum()/(a.sum()+b.sum()):.4f}")
