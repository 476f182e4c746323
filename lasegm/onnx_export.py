"""`lasegm export-onnx`: write a checkpoint's model.onnx, the same network for ONNX Runtime (exporting needs
PyTorch and the onnx package; running it needs only onnxruntime).

The file is checked before it is kept: ONNX Runtime must reproduce the PyTorch logits on random
input, and it records the sha256 of the weights it came from, so a retrained model.safetensors is
never served with a stale model.onnx (lasegm.runtime refuses it).
"""

from __future__ import annotations

import json
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPBlock

from lasegm import LasegmError, __version__
from lasegm.checkpoint import CONFIG_FILE, ONNX_FILE, WEIGHTS_FILE, checkpoint_recipe, slab_depth
from lasegm.models import load_checkpoint
from lasegm.preprocess import resize_weights
from lasegm.runtime import ONNX_INPUT, ONNX_OUTPUT, OnnxRunner
from lasegm.utils import atomic_path

OPSET = 17
TOLERANCE = 1e-3  # max |logit difference| ORT vs PyTorch; measured ~1e-5


def export_onnx(ckpt_dir: str | Path, opset: int = OPSET) -> tuple[Path, float]:
    """Write ckpt_dir/model.onnx (atomically); returns its path and the measured max logit difference."""
    ckpt_dir = Path(ckpt_dir)
    model, config = load_checkpoint(ckpt_dir)
    pre, _ = checkpoint_recipe(config, ckpt_dir / CONFIG_FILE)
    shape = (pre.channels, pre.image_size, pre.image_size)
    slab = slab_depth(config)  # a 3D model's batch is one slab of consecutive slices
    example = torch.randn(slab or 2, *shape, generator=torch.Generator().manual_seed(0))
    _exportable_pooling(model, example)
    with atomic_path(ckpt_dir / ONNX_FILE) as tmp:
        with warnings.catch_warnings():  # tracer chatter about shape arithmetic in smp's decoders
            warnings.simplefilter("ignore")
            # no constant folding: batch norm stays separate, so every stored weight is a checkpoint weight
            # (fp16-exact, stored as fp16 below); ONNX Runtime fuses conv + batch norm when it loads
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], do_constant_folding=False,
                              dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}})
        _finish(tmp, config)
        check = torch.randn(slab or 3, *shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            reference = model(check)[:, 0].numpy()
        got = OnnxRunner(tmp, config.get("weights_sha256"))(check.numpy())
        difference = float(np.abs(got - reference).max())
        if not difference <= TOLERANCE:
            raise LasegmError(f"{ckpt_dir}: ONNX Runtime differs from PyTorch by {difference:.2g} "
                              f"(tolerance {TOLERANCE}); model.onnx not written")
    return ckpt_dir / ONNX_FILE, difference


def onnx_matches(ckpt_dir: str | Path, config: dict) -> bool:
    """Whether ckpt_dir's model.onnx was exported from this config's weights and preprocessing (then a copy of
    the checkpoint may copy it instead of exporting again)."""
    import onnx

    path = Path(ckpt_dir) / ONNX_FILE
    if not path.is_file():
        return False
    try:
        made = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # unreadable: export again
        return False
    sha = config.get("weights_sha256")
    return bool(sha) and made.get("weights_sha256") == sha and \
        made.get("preprocessing") == json.dumps(config["preprocessing"], sort_keys=True)


class PoolByMatmul(torch.nn.Module):
    """Adaptive average pooling for one fixed input size, as two matrix products. The legacy ONNX
    exporter refuses adaptive pooling to a size that does not divide the input (PSPNet's 3x3 and 6x6 bins
    on a 20x20 feature map), or whose input size it cannot see (behind EfficientNet's computed padding); the
    exported graph has a fixed slice size anyway."""

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", torch.from_numpy(resize_weights(in_size[0], out_size[0], "area")))
        self.register_buffer("cols", torch.from_numpy(resize_weights(in_size[1], out_size[1], "area").T.copy()))

    def forward(self, x):
        return torch.matmul(torch.matmul(self.rows, x), self.cols)


def _exportable_pooling(model, example) -> None:
    """Swap each adaptive average pooling to more than one bin for PoolByMatmul."""
    seen: dict[str, tuple[int, int]] = {}
    pools = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)}
    def record(name):
        def hook(module, inputs, output):  # returns None: a hook's return value would replace the output
            seen[name] = tuple(inputs[0].shape[-2:])
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in pools.items()]
    with torch.no_grad():
        model(example)
    for h in hooks:
        h.remove()
    for name, module in pools.items():
        size = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,) * 2
        in_size = seen.get(name)
        # a global pool exports as GlobalAveragePool; any other needs its input size at export, which an encoder
        # with computed padding (EfficientNet's) hides from the tracer even where the bins divide the input
        if in_size is None or all(o == 1 for o in size):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, PoolByMatmul(in_size, tuple(o or i for i, o in zip(in_size, size))))
    for module in model.modules():
        if isinstance(module, PSPBlock):  # its export branch pools with F.interpolate(area): the same refusal
            module.forward = types.MethodType(_psp_block_forward, module)


def _psp_block_forward(self, x):
    """smp's PSPBlock.forward outside ONNX export: pool (now PoolByMatmul), 1x1 conv, upsample."""
    return F.interpolate(self.pool(x), size=tuple(x.shape[2:]), mode="bilinear", align_corners=True)


def _finish(path: Path, config: dict) -> None:
    """Point the weights into model.safetensors instead of copying them, and record where the file came from.

    safetensors stores each tensor as raw little-endian bytes, which is what ONNX external data reads: each
    initializer found among the checkpoint's tensors (by content, whatever name the exporter gave it) is read
    from its offset in model.safetensors. An fp16 checkpoint's weights become fp16 tensors followed by a Cast
    to fp32 that ONNX Runtime folds at load. The weights exist once; model.onnx holds the graph (~0.1 MB)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    located = _safetensors_locations(path.parent / WEIGHTS_FILE)
    proto = onnx.load(str(path))
    graph = proto.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init).astype("<f4")
        half = values.astype("<f2")
        name, dims = init.name, list(values.shape)
        if np.array_equal(half.astype(np.float32), values) and half.tobytes() in located:
            where, tensor = located[half.tobytes()], TensorProto(name=f"{name}__fp16", data_type=TensorProto.FLOAT16,
                                                                 dims=dims)
            casts.append(helper.make_node("Cast", [tensor.name], [name], to=TensorProto.FLOAT))
        elif values.tobytes() in located:
            where, tensor = located[values.tobytes()], TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
        else:  # not a checkpoint weight (e.g. PoolByMatmul's matrices): stays inside the file
            continue
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", WEIGHTS_FILE), ("offset", str(where[0])), ("length", str(where[1]))):
            tensor.external_data.add(key=key, value=value)
        init.CopyFrom(tensor)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    metadata = {"weights_sha256": config.get("weights_sha256", ""), "arch": config["arch"],
                "encoder": config["model_kwargs"].get("encoder_name", ""), "lasegm_version": __version__,
                "preprocessing": json.dumps(config["preprocessing"], sort_keys=True)}
    del proto.metadata_props[:]
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def _safetensors_locations(weights: Path) -> dict[bytes, tuple[int, int]]:
    """fp16 / fp32 tensor bytes -> (offset, length) in the file (format: u64 header size, JSON header, data)."""
    with open(weights, "rb") as fh:
        header_size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(header_size))
        data = fh.read()
    start = 8 + header_size
    return {data[b:e]: (start + b, e - b) for name, info in header.items() if name != "__metadata__"
            and info["dtype"] in ("F16", "F32") for b, e in [info["data_offsets"]]}
