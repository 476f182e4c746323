"""The checkpoint folder's format, readable without PyTorch.

A checkpoint is a folder: `model.safetensors` (weights, never pickled) + `config.json` (everything
needed to rebuild the model and its preprocessing, plus provenance and metrics), and optionally
`model.onnx` (the same weights for ONNX Runtime, made by `lasegm export-onnx`) and `cv-oof.json` (the
out-of-fold table of its recipe's cross-validation, scored with its post-processing: `lasegm cv --final`
writes it). Building the PyTorch model lives in lasegm.models; running either file lives in lasegm.runtime.

A multi-view checkpoint (view aggregation, as FastSurfer's) is a folder whose config.json lists `views`: models of
one architecture slicing along different anatomical planes, each a checkpoint of its own in the subfolder named
by its plane (`sagittal/`, `axial/`, `coronal/`), served as the mean of their probabilities on the scan's grid with
the post-processing and out-of-fold table the folder records (`lasegm export --checkpoint A B C` writes it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lasegm import LasegmError
from lasegm.postprocess import Postprocessing
from lasegm.preprocess import PLANE_ORIENTATIONS, Preprocessing, plane_of
from lasegm.utils import read_format_json

# 2: the preprocessing's orientation names anatomy. Format 1 checkpoints were trained on the Task02 release's
# headers (lasegm.anatomy): their orientation is in that header frame, and is converted on load.
CHECKPOINT_FORMAT = "lasegm.checkpoint/2"
LEGACY_FORMAT = "lasegm.checkpoint/1"
TASK02_CASE = re.compile(r"la_\d{3}")  # the release's case names
WEIGHTS_FILE, CONFIG_FILE, ONNX_FILE = "model.safetensors", "config.json", "model.onnx"
CV_TABLE_FILE = "cv-oof.json"  # config.json's "cv" block summarises it
# The architectures with a served checkpoint (checkpoints/<name>): the demo, the benchmark and the tests use these
SERVED = ("pspnet", "fpn", "unet")
# The served ensemble's members in the order they run (predict.Ensemble skips a network's slices that the networks
# before it rule out). The order changes only the work done, not the mask; with the two-view U-Net every order but
# the U-Net first took 4.3-4.7 s on la_003 (benchmarks/ensemble_order.py, docs/speed.md, 2026-12-06).
ENSEMBLE_MEMBERS = ("pspnet", "unet", "fpn")


def cv_block(result: dict, trained_on: int) -> dict:
    """config.json's summary of the out-of-fold table (CV_TABLE_FILE) a served checkpoint carries."""
    d = result["summary"]["dice"]
    return {"name": result["cv"], "folds_file": result["folds_file"], "folds_sha256": result["folds_sha256"],
            "oof_dice_3d_mean": d["mean"], "oof_dice_3d_std": d["std"], "oof_dice_3d_min": d["min"],
            "oof_hd95_mm_mean": result["summary"]["hd95_mm"]["mean"], "table": CV_TABLE_FILE,
            "note": f"out-of-fold result of this checkpoint's recipe and post-processing ({len(result['folds'])} "
                    f"folds, last epoch); this checkpoint was trained on all {trained_on} patients"}


def read_checkpoint_config(ckpt_dir: str | Path, weights: bool = True) -> dict:
    """The validated config.json. weights=False: the folder need not hold the weights (a record of what a
    training did, e.g. a cross-validation fold whose weights stayed on the machine that trained it)."""
    ckpt_dir = Path(ckpt_dir)
    cfg_path = ckpt_dir / CONFIG_FILE
    if not ckpt_dir.is_dir():
        raise LasegmError(f"{ckpt_dir}: checkpoint folder not found")
    missing = f"missing; a checkpoint holds {WEIGHTS_FILE} and {CONFIG_FILE}"
    if not cfg_path.is_file():
        raise LasegmError(f"{cfg_path}: {missing}")
    config = read_format_json(cfg_path, None, "checkpoint config")
    if "views" in config:
        views = config["views"] if isinstance(config["views"], list) else []
        raise LasegmError(f"{ckpt_dir}: a multi-view checkpoint, not one model: its views are the checkpoints "
                          f"{', '.join(str(ckpt_dir / str(v)) for v in views)}")
    if weights and not (ckpt_dir / WEIGHTS_FILE).is_file():
        raise LasegmError(f"{ckpt_dir / WEIGHTS_FILE}: {missing}")
    if config.get("format") == LEGACY_FORMAT:
        config = legacy_to_anatomy(config, cfg_path)
    elif config.get("format") != CHECKPOINT_FORMAT:
        raise LasegmError(f"{cfg_path}: not a lasegm checkpoint config (format must be {CHECKPOINT_FORMAT})")
    for key in ("arch", "model_kwargs", "preprocessing"):
        if key not in config:
            raise LasegmError(f"{cfg_path}: missing key {key!r}")
    pre, _ = checkpoint_recipe(config, cfg_path)
    channels = config["model_kwargs"].get("in_channels")
    if channels != pre.channels:
        raise LasegmError(f"{cfg_path}: inconsistent: the model takes {channels} input channels but the "
                          f"preprocessing (context {pre.context}) makes {pre.channels}")
    return config


def legacy_to_anatomy(config: dict, source) -> dict:
    """A format-1 config read in anatomy: trained on the Task02 release, whose headers say RAS for voxel axes
    that run ASR, its recorded orientation is the header's; the same voxels in anatomy are what it saw, so the
    converted record gives the same input arrays on the release files relabelled (and on any correctly-headed
    scan). A format-1 checkpoint trained on other data cannot be placed, and is refused."""
    from lasegm.anatomy import task02_header_to_anatomy

    trained_on = config.get("trained_on")
    pre = config.get("preprocessing")
    # lasegm's first checkpoints (preprocessing version 1) did not record their patients: all were Task02's
    first = trained_on is None and isinstance(pre, dict) and pre.get("version", 1) == 1
    task02 = bool(trained_on) and all(TASK02_CASE.fullmatch(str(c)) for c in trained_on)
    if not (first or task02) or not isinstance(pre, dict):
        raise LasegmError(f"{source}: a checkpoint of format 1, written before lasegm read the anatomy of a scan, "
                          "and not trained on the Task02 release: its orientation cannot be placed; retrain it")
    legacy = pre.get("orientation", "RAS")  # format-1 records without it were trained on RAS-stored files
    orientation = task02_header_to_anatomy(legacy)
    print(f"lasegm: {source}: format 1 (trained on the Task02 release's headers): its orientation {legacy} is "
          f"the anatomy's {orientation}; converted (`lasegm export` rewrites it)", file=sys.stderr)
    return {**config, "format": CHECKPOINT_FORMAT, "preprocessing": {**pre, "orientation": orientation},
            "converted_from": {"format": LEGACY_FORMAT, "orientation": legacy}}


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


def read_views(ckpt_dir: str | Path) -> tuple[dict, list[Path]] | None:
    """A multi-view checkpoint folder -> (its validated config.json, the view checkpoints' folders); None for any
    other folder (read_checkpoint_config reports what is wrong with it). A missing or broken view is one line
    naming it."""
    ckpt_dir = Path(ckpt_dir)
    cfg_path = ckpt_dir / CONFIG_FILE
    if not cfg_path.is_file():
        return None
    config = read_format_json(cfg_path, None, "checkpoint config")
    if "views" not in config:
        return None
    views = config["views"]
    if config.get("format") != CHECKPOINT_FORMAT or "arch" not in config:
        raise LasegmError(f"{cfg_path}: not a lasegm multi-view checkpoint (format {CHECKPOINT_FORMAT}, with arch)")
    if not (isinstance(views, list) and views and len(set(views)) == len(views)
            and all(v in PLANE_ORIENTATIONS for v in views)):
        raise LasegmError(f"{cfg_path}: views must be distinct plane names ({', '.join(PLANE_ORIENTATIONS)}), "
                          f"got {views!r}")
    Postprocessing.from_dict(config.get("postprocessing"), str(cfg_path))  # the aggregate's, checked here
    folders = []
    for view in views:
        folder = ckpt_dir / view
        try:
            member = read_checkpoint_config(folder)
        except LasegmError as e:
            raise LasegmError(f"{ckpt_dir}: view {view!r} cannot be read: {e}") from None
        sliced = plane_of(checkpoint_recipe(member, folder / CONFIG_FILE)[0].orientation)
        if sliced != view or member["arch"] != config["arch"]:
            raise LasegmError(f"{folder}: a {member['arch']} model slicing {sliced}ly, but {cfg_path} lists it as "
                              f"its {config['arch']} {view} view")
        folders.append(folder)
    return config, folders


def model_folders(ckpt_dir: str | Path) -> list[Path]:
    """The single-model checkpoints a folder runs: a multi-view checkpoint's views, or the folder itself."""
    views = read_views(ckpt_dir)
    return [Path(ckpt_dir)] if views is None else views[1]


def read_served_config(ckpt_dir: str | Path) -> dict:
    """The validated config.json of any checkpoint folder, multi-view (its views checked too) or one model: what
    it serves (arch, post-processing, trained_on, cv)."""
    views = read_views(ckpt_dir)
    return read_checkpoint_config(ckpt_dir) if views is None else views[0]


def slicing_planes(ckpt_dir: str | Path) -> list[str]:
    """The anatomical planes a checkpoint folder's networks slice along, in the order they run."""
    return [plane_of(checkpoint_recipe(read_checkpoint_config(f), f / CONFIG_FILE)[0].orientation)
            for f in model_folders(ckpt_dir)]
