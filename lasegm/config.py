"""Typed training config with every default in one place; CLI flags are generated from it.

Flag names equal field names (`--lr=0.001 --encoder=resnet34`), so `wandb agent` drives
`lasegm train` unchanged; `--decoder-width` spellings are accepted too.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields

from lasegm.postprocess import Postprocessing
from lasegm.preprocess import Preprocessing
from lasegm.split import DEFAULT_SPLIT_FILE


@dataclass
class TrainConfig:
    # model
    arch: str = "unet"  # a name of lasegm.models.ARCHITECTURES
    encoder: str = "resnet18"
    encoder_weights: str = "none"  # none | imagenet (needs internet on first use)
    decoder_width: int = 0  # widest decoder channels; 0 = the architecture's default
    encoder_depth: int = 0  # 0 = the architecture's default
    decoder_attention: str = "none"  # none | scse (U-Net models)
    slab_depth: int = 32  # unet3d: consecutive slices per 3D patch (a multiple of 16 with its 5 levels)
    deep_supervision: int = 2  # unet3d: decoder levels below the top also scored in training (nnU-Net), 0 = off
    # preprocessing (lasegm.preprocess.Preprocessing; its defaults)
    image_size: int = Preprocessing.image_size  # the field of view is resampled to image_size x image_size
    context: int = Preprocessing.context  # neighbouring slices each side as extra channels (2.5D)
    fov_mm: float = Preprocessing.fov_mm  # central field of view in mm (in-plane, and along the slices)
    plane: str = "native"  # the anatomical plane the model slices: native (as most training scans are stored),
    # sagittal, coronal or axial (lasegm.preprocess.PLANE_ORIENTATIONS)
    # optimisation
    epochs: int = 20
    samples_per_epoch: int = 0  # 0 = one pass over the training slices
    fg_fraction: float = 0.5  # share of samples drawn from slices that contain atrium
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | constant
    loss: str = "dice_bce"  # dice_bce | dice | bce
    augment: bool = True
    mirror: bool = False  # with augment: random left-right and up-down flips (nnU-Net style; pairs with --flip_tta)
    time_limit_min: float = 0.0  # stop after this many minutes of training (0 = no limit)
    val_every: int = 1  # validate every this many epochs (and after the last): the curves' resolution
    seed: int = 0
    select: str = "best"  # checkpoint kept: best validation epoch, or the last (cross-validation and all_folds use last)
    # post-processing recorded in the checkpoint (lasegm.postprocess.Postprocessing) and used for selection
    largest_component: bool = Postprocessing.largest_component
    flip_tta: bool = Postprocessing.flip_tta
    # io
    data: str = ""  # MSD task folder; default $LASEGM_DATA, else lasegm download's (lasegm.data.default_data_dir)
    data_axes: str = "auto"  # the data's voxel axes: auto (a Task02 release is relabelled), header, or e.g. ASR
    split_file: str = DEFAULT_SPLIT_FILE  # a train/val/test split, or a folds file with --fold
    fold: int = -1  # with a folds file: train on the other folds, validate on this one
    all_folds: bool = False  # with a folds file: train on every patient, no validation, keep the last epoch (the
    # final model of a cross-validated recipe; `lasegm cv --final` trains it and records the recipe's OOF result)
    cache_dir: str = ""  # default $LASEGM_CACHE or ~/.cache/lasegm
    out_dir: str = "runs"
    run_name: str = ""
    fp16_checkpoint: bool = True  # halves the checkpoint size
    # runtime
    device: str = "auto"
    num_threads: int = 0  # 0 = all cores
    workers: int = -1  # DataLoader workers; -1 = auto: none on CPU (the cores train), up to 8 beside a GPU
    channels_last: bool = True  # NHWC memory layout: 1.1-1.3x faster training on CPU, tensor-core friendly on GPU
    cudnn_benchmark: bool = False  # GPU: cuDNN times its kernels first (H200: a 50-s first epoch, no faster after)
    cuda_graph: bool = True  # GPU, 2D: replay forward and backward as CUDA graphs (4.5x faster on an H200: a small
    # 2D net on a fast GPU is bound by kernel launches, not arithmetic)
    wandb_mode: str = ""  # online | offline | disabled; default $WANDB_MODE, else offline
    wandb_project: str = "lasegm"
    wandb_group: str = ""  # e.g. the cross-validation's name: its folds are grouped in W&B

    CHOICES = {
        "encoder_weights": ("none", "imagenet"),
        "plane": ("native", "sagittal", "coronal", "axial"),
        "decoder_attention": ("none", "scse"),
        "scheduler": ("cosine", "constant"),
        "loss": ("dice_bce", "dice", "bce"),
        "select": ("best", "last"),
        "wandb_mode": ("", "online", "offline", "disabled"),
    }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def postprocessing(self) -> Postprocessing:
        return Postprocessing(largest_component=self.largest_component, flip_tta=self.flip_tta)

    def recipe_dict(self) -> dict:
        """The training recipe without the fields a checkpoint records once elsewhere (post-processing)."""
        post = {f.name for f in fields(Postprocessing)}
        return {k: v for k, v in self.to_dict().items() if k not in post}


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def add_config_flags(parser: argparse.ArgumentParser, cls=TrainConfig, arch_choices: bool = True) -> None:
    """arch_choices=False leaves --arch unchecked here (build_model still refuses an unknown name): the
    list comes from lasegm.models, whose import (torch, smp: ~3 s) a `lasegm predict` should not pay."""
    defaults = cls()
    for f in fields(cls):
        default = getattr(defaults, f.name)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kwargs: dict = {"dest": f.name, "default": default, "help": f"(default: {default!r})"}
        if isinstance(default, bool):
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        else:
            kwargs["type"] = type(default)
        choices = dict(cls.CHOICES)
        if cls is TrainConfig and arch_choices:
            from lasegm.models import ARCHITECTURES  # the one list of architectures

            choices["arch"] = tuple(ARCHITECTURES)
        if f.name in choices:
            kwargs["choices"] = choices[f.name]
        parser.add_argument(*names, **kwargs)


def config_from_args(args: argparse.Namespace, cls=TrainConfig) -> TrainConfig:
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
