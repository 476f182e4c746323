"""The checkpoint folder's format, readable without PyTorch.

A checkpoint is a folder: `model.safetensors` (weights, never pickled) + `config.json` (everything
needed to rebuild the model and its preprocessing, plus provenance and metrics), and optionally
`model.onnx` (the same weights for ONNX Runtime, made by `lasegm export-onnx`) and `cv-oof.json` (the
out-of-fold table of its recipe's cross-validation, scored with its post-processing: `lasegm cv --final`
writes it). Building the PyTorch model lives in lasegm.models; running either file lives in lasegm.runtime.
"""

from __future__ import annotations

from pathlib import Path

from lasegm import LasegmError
from lasegm.postprocess import Postprocessing
from lasegm.preprocess import Preprocessing
from lasegm.utils import read_format_json

CHECKPOINT_FORMAT = "lasegm.checkpoint/1"
WEIGHTS_FILE, CONFIG_FILE, ONNX_FILE = "model.safetensors", "config.json", "model.onnx"
CV_TABLE_FILE = "cv-oof.json"  # config.json's "cv" block summarises it


def read_checkpoint_config(ckpt_dir: str | Path, weights: bool = True) -> dict:
    """The validated config.json. weights=False: the folder need not hold the weights (a record of what a
    training did, e.g. a cross-validation fold whose weights stayed on the machine that trained it)."""
    ckpt_dir = Path(ckpt_dir)
    cfg_path = ckpt_dir / CONFIG_FILE
    if not ckpt_dir.is_dir():
        raise LasegmError(f"{ckpt_dir}: checkpoint folder not found")
    for p in (cfg_path, ckpt_dir / WEIGHTS_FILE)[: 2 if weights else 1]:
        if not p.is_file():
            raise LasegmError(f"{p}: missing; a checkpoint holds {WEIGHTS_FILE} and {CONFIG_FILE}")
    config = read_format_json(cfg_path, CHECKPOINT_FORMAT, "checkpoint config")
    for key in ("arch", "model_kwargs", "preprocessing"):
        if key not in config:
            raise LasegmError(f"{cfg_path}: missing key {key!r}")
    pre, _ = checkpoint_recipe(config, cfg_path)
    channels = config["model_kwargs"].get("in_channels")
    if channels != pre.channels:
        raise LasegmError(f"{cfg_path}: inconsistent: the model takes {channels} input channels but the "
                          f"preprocessing (context {pre.context}) makes {pre.channels}")
    return config


def checkpoint_recipe(config: dict, source) -> tuple[Preprocessing, Postprocessing]:
    """The validated preprocessing and post-processing records of a checkpoint config."""
    return (Preprocessing.from_dict(config["preprocessing"], str(source)),
            Postprocessing.from_dict(config.get("postprocessing"), str(source)))


def check_arch(config: dict, ckpt_dir, expected_arch: str | None) -> None:
    """A checkpoint of another architecture than the caller serves is an error, not a surprise."""
    if expected_arch and config["arch"] != expected_arch:
        raise LasegmError(f"{ckpt_dir}: checkpoint is a {config['arch']} model, expected {expected_arch}")


def slab_depth(config: dict) -> int:
    """Consecutive slices the model sees at once: > 0 for a 3D model (lasegm.unet3d), 0 for a 2D one."""
    return int(config["model_kwargs"].get("slab_depth", 0))
