"""Typed training config with every default in one place; CLI flags are generated from it.

Flag names equal field names (`--lr=0.001 --encoder=resnet34`), so `wandb agent` drives
`lasegm train` unchanged; `--decoder-width` spellings are accepted too.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields


@dataclass
class TrainConfig:
    # model
    arch: str = "unet"  # pspnet | fpn | unet | unetplusplus
    encoder: str = "resnet18"
    encoder_weights: str = "none"  # none | imagenet (needs internet on first use)
    decoder_width: int = 0  # widest decoder channels; 0 = the architecture's default
    encoder_depth: int = 0  # 0 = the architecture's default
    decoder_attention: str = "none"  # none | scse (U-Net models)
    # preprocessing
    image_size: int = 128  # slices are padded square and resized to this
    context: int = 0  # neighbouring slices each side as extra channels (2.5D)
    fov_mm: float = 0.0  # central in-plane field of view in mm (0 = the whole slice)
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
    time_limit_min: float = 0.0  # stop after this many minutes of training (0 = no limit)
    seed: int = 0
    # post-processing recorded in the checkpoint
    largest_component: bool = False
    flip_tta: bool = False
    # io
    data: str = ""  # MSD task folder; default $LASEGM_DATA
    split_file: str = "splits/split.json"
    cache_dir: str = ""  # default $LASEGM_CACHE or ~/.cache/lasegm
    out_dir: str = "runs"
    run_name: str = ""
    fp16_checkpoint: bool = True  # halves the checkpoint size
    # runtime
    device: str = "auto"
    num_threads: int = 0  # 0 = all cores
    workers: int = 0  # DataLoader workers
    wandb_mode: str = ""  # online | offline | disabled; default $WANDB_MODE, else offline
    wandb_project: str = "lasegm"

    CHOICES = {
        "arch": ("pspnet", "fpn", "unet", "unetplusplus"),
        "encoder_weights": ("none", "imagenet"),
        "decoder_attention": ("none", "scse"),
        "scheduler": ("cosine", "constant"),
        "loss": ("dice_bce", "dice", "bce"),
        "wandb_mode": ("", "online", "offline", "disabled"),
    }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def add_config_flags(parser: argparse.ArgumentParser, cls=TrainConfig) -> None:
    defaults = cls()
    for f in fields(cls):
        default = getattr(defaults, f.name)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kwargs: dict = {"dest": f.name, "default": default, "help": f"(default: {default!r})"}
        if isinstance(default, bool):
            kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        else:
            kwargs["type"] = type(default)
        if f.name in cls.CHOICES:
            kwargs["choices"] = cls.CHOICES[f.name]
        parser.add_argument(*names, **kwargs)


def config_from_args(args: argparse.Namespace, cls=TrainConfig) -> TrainConfig:
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})
