"""Typed training config with every default in one place; CLI flags are generated from it.

A training is a `Recipe` (what the checkpoint records, and what makes two trainings comparable: the model, its
preprocessing, the optimisation and the post-processing) run with `RunOptions` (where, on what and how fast this
run executes). `TrainConfig` is both, flat: `cfg.lr`, `cfg.device`. Flag names equal field names (`--lr=0.001
--encoder=resnet34`), so `wandb agent` drives `lasegm train` unchanged; `--decoder-width` spellings are accepted
too. A field's help, and its choices, sit with its default.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path

from lasegm import LasegmError
from lasegm.postprocess import Postprocessing
from lasegm.preprocess import Preprocessing
from lasegm.split import DEFAULT_SPLIT_FILE


def _opt(default, what: str, choices: tuple | None = None):
    """A field with its default, its help text and (if fixed) its choices."""
    return field(default=default, metadata={"help": what, "choices": choices})


@dataclass
class Recipe:
    """What a training learns with: recorded in its checkpoint (config.json's "train_config"; the post-processing
    in its own "postprocessing" block), and what the folds and the final model of a cross-validation must share."""

    # model
    arch: str = _opt("unet", "the network (lasegm.models)")
    encoder: str = _opt("resnet18", "a segmentation_models_pytorch encoder")
    encoder_weights: str = _opt("none", "pretrained encoder weights; imagenet needs internet on first use",
                                ("none", "imagenet"))
    decoder_width: int = _opt(0, "widest decoder channels; 0 = the architecture's default")
    encoder_depth: int = _opt(0, "0 = the architecture's default")
    decoder_attention: str = _opt("none", "attention in the decoder (U-Net models)", ("none", "scse"))
    slab_depth: int = _opt(32, "unet3d: consecutive slices per 3D patch (a multiple of 16 with its 5 levels)")
    deep_supervision: int = _opt(2, "unet3d: decoder levels below the top also scored in training (nnU-Net); "
                                    "0 = off")
    # preprocessing (lasegm.preprocess.Preprocessing; its defaults)
    image_size: int = _opt(Preprocessing.image_size, "the field of view is resampled to image_size x image_size")
    context: int = _opt(Preprocessing.context, "neighbouring slices each side as extra channels (2.5D)")
    fov_mm: float = _opt(Preprocessing.fov_mm, "central field of view in mm (in-plane, and along the slices)")
    slice_mm: float = _opt(Preprocessing.slice_mm, "the model slices' spacing in mm; 0 = the in-plane pixel "
                           "(fov_mm / image_size)")
    plane: str = _opt("native", "the anatomical plane the model slices: native is as most training scans are "
                      "stored (lasegm.preprocess.PLANE_ORIENTATIONS)", ("native", "sagittal", "coronal", "axial"))
    # optimisation
    epochs: int = _opt(20, "training epochs")
    samples_per_epoch: int = _opt(0, "0 = one pass over the training slices")
    fg_fraction: float = _opt(0.5, "share of samples drawn from slices that contain atrium")
    batch_size: int = _opt(16, "samples per step")
    optimizer: str = _opt("adamw", "AdamW, or SGD with Nesterov momentum 0.99 and gradients clipped to norm 12 "
                          "(nnU-Net's: with --lr=0.01 --weight_decay=3e-5 --scheduler=poly)", ("adamw", "sgd"))
    lr: float = _opt(1e-3, "peak learning rate")
    weight_decay: float = _opt(1e-4, "weight decay (AdamW's decoupled one; SGD's L2 term)")
    scheduler: str = _opt("cosine", "learning-rate schedule over the steps; poly is nnU-Net's (1 - step/steps)^0.9",
                          ("cosine", "constant", "poly"))
    loss: str = _opt("dice_bce", "training loss", ("dice_bce", "dice", "bce"))
    augment: bool = _opt(True, "augment the training samples (lasegm.augment; the policy: --augment_2d, "
                         "--augment_3d)")
    augment_2d: str = _opt("lasegm", "2D models, with augment: lasegm's in-plane augmentation of each sample in the "
                           "loader (affine +-15 deg, elastic, brightness/contrast, noise), or nnU-Net's 2D one of "
                           "each batch on the training device (rotation +-180 deg, scaling, noise, blur, brightness, "
                           "contrast, low resolution, gamma)", ("lasegm", "nnunet"))
    augment_3d: bool = _opt(False, "unet3d, with augment: nnU-Net's 3D augmentation of each whole slab on the "
                            "training device (rotation about all three axes, scaling, elastic, noise, blur, "
                            "brightness, contrast, low resolution, gamma) instead of the in-plane one "
                            "(lasegm.augment)")
    mirror: bool = _opt(False, "with augment: random flips, left-right and up-down (2D) or along every axis "
                        "(--augment_3d) (nnU-Net style; pairs with --flip_tta)")
    seed: int = _opt(0, "seeds the weights, the sampling and the augmentation")
    # post-processing (lasegm.postprocess.Postprocessing): recorded in the checkpoint, used for epoch selection
    largest_component: bool = _opt(Postprocessing.largest_component, "keep only the largest connected component")
    flip_tta: bool = _opt(Postprocessing.flip_tta, "average with the left-right flipped prediction (for "
                          "mirror-trained models)")

    def postprocessing(self) -> Postprocessing:
        return Postprocessing(largest_component=self.largest_component, flip_tta=self.flip_tta)

    def recipe_dict(self) -> dict:
        """What a checkpoint records as its "train_config": the recipe without the post-processing (recorded
        once, in its own block)."""
        post = {f.name for f in fields(Postprocessing)}
        return {f.name: getattr(self, f.name) for f in fields(Recipe) if f.name not in post}


@dataclass
class RunOptions:
    """Where, on which patients and how fast a training runs: a checkpoint records them apart from its recipe
    ("run_options"), and the folds and the final model of one recipe differ in them."""

    # the patients and the epoch kept (the checkpoint records which: split_sha256, trained_on, fold, selection)
    split_file: str = _opt(DEFAULT_SPLIT_FILE, "a train/val/test split, or a folds file with --fold")
    fold: int = _opt(-1, "with a folds file: train on the other folds, validate on this one")
    all_folds: bool = _opt(False, "with a folds file: train on every patient, no validation, keep the last epoch "
                           "(the final model of a cross-validated recipe; `lasegm cv --final` trains it)")
    select: str = _opt("best", "checkpoint kept: the best validation epoch, or the last (cross-validation and "
                       "all_folds use last)", ("best", "last"))
    # when to stop and to validate: they change what a run returns, not the recipe. A time limit that stopped a
    # fold early shows as another epoch count, which the cross-validation refuses on its own.
    time_limit_min: float = _opt(0.0, "stop after this many minutes of training (0 = no limit)")
    resume: bool = _opt(False, "continue the run's training from its last saved epoch (run_dir/resume, saved when a "
                        "time limit stops it and about every minute; lasegm.resume); without a saved state it starts "
                        "from the beginning")
    val_every: int = _opt(1, "validate every this many epochs (and after the last): the curves' resolution")
    # io
    data: str = _opt("", "MSD task folder; default $LASEGM_DATA, else lasegm download's "
                     "(lasegm.data.default_data_dir)")
    data_axes: str = _opt("auto", "the data's voxel axes: auto (a Task02 release is relabelled), header, or e.g. ASR")
    cache_dir: str = _opt("", "default $LASEGM_CACHE or ~/.cache/lasegm")
    out_dir: str = _opt("runs", "the run's folder is out_dir/run_name")
    run_name: str = _opt("", "default <arch>-<encoder>-<time>")
    fp16_checkpoint: bool = _opt(True, "store the weights as float16 (half the size; the checkpoint records "
                                 "weights_dtype)")
    # runtime: speed, not what is learned
    device: str = _opt("auto", "auto: CUDA when present, else Apple MPS, else CPU; or a torch device (cpu, cuda:1)")
    num_threads: int = _opt(0, "CPU threads; 0 = all cores")
    workers: int = _opt(-1, "DataLoader workers; -1 = auto: none on CPU (the cores train), up to 8 beside a GPU")
    channels_last: bool = _opt(True, "NHWC memory layout: 1.1-1.3x faster training on CPU, tensor-core friendly "
                               "on GPU")
    cudnn_benchmark: bool = _opt(False, "GPU: cuDNN times its kernels first (H200: a 50-s first epoch, no faster "
                                 "after)")
    # a small 2D net on a fast GPU is bound by kernel launches, not arithmetic
    cuda_graph: bool = _opt(True, "GPU, 2D: replay forward and backward as CUDA graphs (4.5x faster on an H200)")
    # tracking
    wandb_mode: str = _opt("", "default $WANDB_MODE, else offline", ("", "online", "offline", "disabled"))
    wandb_project: str = _opt("lasegm", "W&B project")
    wandb_group: str = _opt("", "e.g. the cross-validation's name: its folds are grouped in W&B")

    def run_options_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(RunOptions)}


@dataclass
class TrainConfig(RunOptions, Recipe):  # fields: the recipe's, then the run options'
    """One training: a recipe and the options it runs with, as `lasegm train`'s flags."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RUN_OPTION_NAMES = frozenset(f.name for f in fields(RunOptions))


def recorded_recipe(checkpoint_config: dict) -> dict:
    """The recipe a checkpoint's config.json records. One written before recipe and run options were recorded
    apart holds both in its "train_config"; its run options are left out."""
    return {k: v for k, v in checkpoint_config.get("train_config", {}).items() if k not in RUN_OPTION_NAMES}


def recorded_run_options(checkpoint_config: dict) -> dict:
    """The run options a checkpoint's config.json records (in an older one, among its "train_config")."""
    if "run_options" in checkpoint_config:
        return checkpoint_config["run_options"]
    return {k: v for k, v in checkpoint_config.get("train_config", {}).items() if k in RUN_OPTION_NAMES}


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


FLAG_GROUPS = ((Recipe, "recipe (recorded in the checkpoint; what makes two trainings comparable)"),
               (RunOptions, "run options (where, on which patients and how fast this run trains)"))


def add_config_flags(parser: argparse.ArgumentParser, arch_choices: bool = True) -> None:
    """One flag per TrainConfig field, in a group per type. arch_choices=False leaves --arch unchecked here
    (build_model still refuses an unknown name): the list comes from lasegm.models, whose import (torch, smp: ~3 s)
    a `lasegm predict` should not pay."""
    for cls, title in FLAG_GROUPS:
        group = parser.add_argument_group(title)
        for f in fields(cls):
            names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
            choices = f.metadata["choices"]
            if f.name == "arch" and arch_choices:
                from lasegm.models import ARCHITECTURES  # the one list of architectures

                choices = tuple(ARCHITECTURES)
            # %(default)r: the parser's default, e.g. `lasegm cv`'s folds file
            kwargs: dict = {"dest": f.name, "default": f.default, "choices": choices,
                            "help": f"{f.metadata['help']} (default: %(default)r)"}
            if isinstance(f.default, bool):
                kwargs.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
            else:
                kwargs.update(type=type(f.default), metavar=None if choices else type(f.default).__name__.upper())
            group.add_argument(*names, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def same_recipe(recipe: dict, fold_checkpoint: Path, what: str) -> dict:
    """A fold's out-of-fold score describes a model only if the fold trained the same recipe (`recipe`: a recorded
    one, or recipe_dict()); returns the fold checkpoint's config. Run options are no part of it (recorded_recipe
    leaves out those that older records hold among the recipe), whatever the folds and the final model ran with."""
    from lasegm.checkpoint import read_checkpoint_config

    fold_config_json = read_checkpoint_config(fold_checkpoint, weights=False)  # what it trained, not its weights
    fold_recipe = recorded_recipe(fold_config_json)
    defaults = Recipe().recipe_dict()  # a field added since a run was trained: it ran with the default
    differ = sorted(key for key in set(recipe) | set(fold_recipe)
                    if recipe.get(key, defaults.get(key)) != fold_recipe.get(key, defaults.get(key)))
    if differ:
        pairs = ", ".join(f"{key}: {recipe.get(key)!r} vs {fold_recipe.get(key)!r}" for key in differ)
        raise LasegmError(f"{what} and {fold_checkpoint} train different recipes ({pairs}); one out-of-fold "
                          "result describes one recipe")
    return fold_config_json
