"""Run a checkpoint's network on prepared slices: ONNX Runtime or PyTorch, same answer.

A runner maps a (N, C, S, S) float32 batch to (N, S, S) logits. `open_runner` picks one:
- "onnx": the checkpoint's model.onnx on ONNX Runtime (CPU, or CUDA when that provider is installed).
  Nothing here imports torch for it, so `lasegm predict` starts in a fraction of a second.
- "torch": model.safetensors rebuilt in PyTorch (any device; channels_last on CPU).
- "auto" (the default): ONNX when model.onnx is there, was exported from these very weights and
  onnxruntime is installed, unless a GPU is present for PyTorch; PyTorch otherwise.
"""

from __future__ import annotations

import importlib.util
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lasegm import LasegmError
from lasegm.checkpoint import ONNX_FILE, WEIGHTS_FILE, slab_depth
from lasegm.utils import available_cores

BACKENDS = ("auto", "onnx", "torch")
ONNX_INPUT, ONNX_OUTPUT = "slices", "logits"


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def nvidia_gpu_present() -> bool:
    """Without importing torch (1 s): the NVIDIA driver exposes itself under /proc."""
    return Path("/proc/driver/nvidia/version").exists()


class OnnxRunner:
    name = "onnx"

    def __init__(self, path: str | Path, weights_sha256: str | None, threads: int = 0, split: bool = True):
        """split: a batch may be cut into independent parts (not for a 3D model, whose batch is one slab)."""
        import onnxruntime as ort

        path = Path(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # no ORT chatter on stderr
        # tiny activations (< 1e-38) become zero instead of taking the CPU's slow path: 6 % faster on real
        # scans, and no mask changes (tests/test_onnx.py compares with PyTorch)
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        # On CPU a batch is split over `threads` single-threaded runs at once: these small convolutions
        # parallelise better across slices than inside one slice (8 % faster on 2 cores, identical output).
        self.parts = threads if split and threads > 1 and providers[0] == "CPUExecutionProvider" else 1
        # small batches keep each run's activations in cache: 2 slices per core were 5 % faster than 16 per call
        self.batch_size = 2 * self.parts if providers[0] == "CPUExecutionProvider" else 16
        if self.parts > 1:
            options.intra_op_num_threads = 1
            self._pool = ThreadPoolExecutor(self.parts, thread_name_prefix="ort")
        elif threads > 0:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable or invalid files
            raise LasegmError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        made_from = self.session.get_modelmeta().custom_metadata_map.get("weights_sha256")
        if weights_sha256 and made_from != weights_sha256:
            raise LasegmError(f"{path} was exported from other weights than {path.parent / WEIGHTS_FILE}; "
                              f"re-export it: lasegm export-onnx --checkpoint {path.parent}")
        spec = self.session.get_inputs()[0]
        self.input_name, self.input_shape = spec.name, spec.shape  # ['batch', C, S, S]
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        channels, height, width = self.input_shape[1:]
        if batch.ndim != 4 or batch.shape[1:] != (channels, height, width):
            raise LasegmError(f"this model.onnx takes slices of shape (batch, {channels}, {height}, {width}) "
                              f"({channels} channels = the slice and its neighbours), got {tuple(batch.shape)}")
        if self.parts == 1 or len(batch) == 1:
            return self._run(batch)
        return np.concatenate(list(self._pool.map(self._run, np.array_split(batch, min(self.parts, len(batch))))))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0][:, 0]


class TorchRunner:
    name = "torch"

    def __init__(self, model, device, channels_last: bool | None = None):
        """channels_last (default: on CPU) is 1.3-2x faster there for these convolutional nets."""
        import torch

        self.model, self.device = model.eval(), torch.device(device)
        # slices per call (lasegm.predict.predict_slices). A GPU idles between the ~1,500 small kernels of one
        # call (research_log 2026-11-28, day), so it gets fewer, larger calls; eval-mode BatchNorm makes the
        # logits independent of the batch.
        self.batch_size = 64 if self.device.type == "cuda" else 16
        self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
        self.volumetric = getattr(model, "volumetric", False)  # a 3D model: 5D weights, its input stays 4D
        if self.channels_last:
            self.model = self.model.to(memory_format=memory_layout(model))

    @classmethod
    def from_checkpoint(cls, ckpt_dir, device: str = "auto", channels_last: bool | None = None) -> TorchRunner:
        from lasegm.models import load_checkpoint
        from lasegm.utils import resolve_device

        device = resolve_device(device)
        model, _ = load_checkpoint(ckpt_dir, device=device)
        return cls(model, device, channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        if self.channels_last and not self.volumetric:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                             enabled=self.device.type == "cuda"):
            return self.model(x)[:, 0].float().cpu().numpy()


def memory_layout(model):
    """The channels-last memory format for a model's weights and its training batches (NHWC, or NDHWC in 3D)."""
    import torch

    return torch.channels_last_3d if getattr(model, "volumetric", False) else torch.channels_last


def open_runner(ckpt_dir, config: dict, backend: str = "auto", device: str = "auto"):
    """The runner for a checkpoint folder whose config.json has been read and validated."""
    if backend not in BACKENDS:
        raise LasegmError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    onnx_path = Path(ckpt_dir) / ONNX_FILE
    device = str(device)
    if backend == "auto":
        usable = onnx_path.is_file() and onnxruntime_installed() and device in ("auto", "cpu")
        if usable and not (device == "auto" and nvidia_gpu_present()):
            try:
                return OnnxRunner(onnx_path, config.get("weights_sha256"), available_cores(),
                                  split=not slab_depth(config))
            except LasegmError as e:
                warnings.warn(f"{e}; using PyTorch instead", stacklevel=2)
        return TorchRunner.from_checkpoint(ckpt_dir, device)
    if backend == "onnx":
        if not onnx_path.is_file():
            raise LasegmError(f"{onnx_path}: not found; make it with: lasegm export-onnx --checkpoint {ckpt_dir}")
        if not onnxruntime_installed():
            raise LasegmError("--backend onnx needs the onnxruntime package (pip install onnxruntime)")
        runner = OnnxRunner(onnx_path, config.get("weights_sha256"), available_cores(), split=not slab_depth(config))
        if device not in ("auto", runner.device):
            raise LasegmError(f"--device {device}: ONNX Runtime here runs on {runner.device}; "
                              "use --backend torch for other devices")
        return runner
    return TorchRunner.from_checkpoint(ckpt_dir, device)
