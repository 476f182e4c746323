"""Does the served U-Net's model.onnx lose time to its fp16 weights? The export stores them in fp16, each behind a
`Cast` to fp32; this makes a copy with fp32 weights and no such casts and times both through lasegm's OnnxRunner
(2 threads, as predict runs it) on 130 random slices of 160 px, interleaved, median of 5. Prints the outputs'
largest difference too (research_log 2026-11-28, evening).

    python docs/experiments/speed/onnx_fp32_weights.py
"""
import statistics, tempfile, time
import numpy as np, onnx
from onnx import numpy_helper
from lasegm.runtime import OnnxRunner

model = onnx.load("checkpoints/unet/model.onnx")
weights = {w.name: w for w in model.graph.initializer}
nodes, casts = [], 0
for n in model.graph.node:
    if n.op_type == "Cast" and n.input[0] in weights and weights[n.input[0]].data_type == onnx.TensorProto.FLOAT16:
        model.graph.initializer.append(numpy_helper.from_array(
            numpy_helper.to_array(weights[n.input[0]]).astype(np.float32), n.output[0]))
        casts += 1
    else:
        nodes.append(n)
del model.graph.node[:]
model.graph.node.extend(nodes)
used = {i for n in model.graph.node for i in n.input}
kept = [w for w in model.graph.initializer if w.name in used]
del model.graph.initializer[:]
model.graph.initializer.extend(kept)
with tempfile.TemporaryDirectory() as tmp:
    onnx.save(model, f"{tmp}/fp32.onnx")
    runners = {"fp16 weights + casts": OnnxRunner("checkpoints/unet/model.onnx", None, threads=2),
               f"fp32 weights ({casts} casts removed)": OnnxRunner(f"{tmp}/fp32.onnx", None, threads=2)}
    x = np.random.default_rng(0).standard_normal((130, 3, 160, 160)).astype(np.float32)

    def run(r):
        return np.concatenate([r(x[i:i + r.batch_size]) for i in range(0, len(x), r.batch_size)])

    outs = {name: run(r) for name, r in runners.items()}  # also the warm-up
    times = {name: [] for name in runners}
    for _ in range(5):
        for name, r in runners.items():
            t0 = time.perf_counter()
            run(r)
            times[name].append(time.perf_counter() - t0)
    a, b = outs.values()
    print({name: round(statistics.median(t), 3) for name, t in times.items()}, "max abs diff", float(abs(a - b).max()))
