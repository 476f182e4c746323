"""Stage 3: train a 2D model on slices, validate on whole patients (3D Dice), log to W&B.

`setup` builds everything a run needs, `train_epoch` is one pass over the sampled slices,
`validate` scores whole patients with the post-processing the checkpoint will be served with,
and `train` is the loop that ties them together.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from tqdm import tqdm

from lasegm import LasegmError, __version__
from lasegm.augment import NnUNetAugmentation, augmentation, seed_loader_worker
from lasegm.checkpoint import slab_depth
from lasegm.config import Recipe, TrainConfig, same_recipe
from lasegm.data import CachedCase, Case, default_data_dir, find_cases, load_all_cached
from lasegm.metrics import patient_row, summarize
from lasegm.models import ARCHITECTURES, build_model, model_kwargs, save_checkpoint
from lasegm.ood import intensity_profile, make_reference
from lasegm.postprocess import Postprocessing
from lasegm.predict import predict_slices
from lasegm.preprocess import PLANE_ORIENTATIONS, Preprocessing, stack_context
from lasegm.probability_maps import FOLDER as MAPS_FOLDER
from lasegm.probability_maps import save_probability_maps
from lasegm.resume import SAVE_EVERY_S, clear_state, load_state, save_state, saved_wandb_run_id
from lasegm.runtime import TorchRunner, memory_layout
from lasegm.split import split_cases, split_hash
from lasegm.tracking import Tracker
from lasegm.utils import available_cores, resolve_device, set_cpu_threads, write_csv, write_json


class SliceDataset(torch.utils.data.Dataset):
    """(case, z) pairs -> (C, S, S) image with 2*context+1 channels, (1, S, S) mask."""

    def __init__(self, cases: list[CachedCase], context: int, augment: bool, seed: int | None = None,
                 mirror: bool = False):
        self.cases, self.context = cases, context
        self.index = [(i, z) for i, c in enumerate(cases) for z in range(len(c.image))]
        self.has_fg = np.array([bool(cases[i].label[z].any()) for i, z in self.index])
        self.transform = augmentation(seed, mirror) if augment else None

    def __len__(self):
        return len(self.index)

    def __getitem__(self, k):
        i, z = self.index[k]
        image = stack_context(self.cases[i].image, z, self.context).astype(np.float32)
        mask = self.cases[i].label[z]
        if self.transform is not None:
            out = self.transform(image=np.moveaxis(image, 0, -1), mask=mask)
            image, mask = np.moveaxis(out["image"], -1, 0), out["mask"]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(mask[None].astype(np.float32))

    def sample_weights(self, fg_fraction: float) -> torch.Tensor:
        """Per-sample weights so that samples with atrium make up fg_fraction of the draws."""
        n_fg = max(int(self.has_fg.sum()), 1)
        n_bg = max(len(self.has_fg) - n_fg, 1)
        return torch.tensor(np.where(self.has_fg, fg_fraction / n_fg, (1 - fg_fraction) / n_bg))


class SlabDataset(SliceDataset):
    """(case, first slice) -> (C, D, S, S) slab of D consecutive slices, (1, D, S, S) mask: the 3D model's
    training patches, whole in-plane. A case thinner than D repeats its end slices (as predict pads it)."""

    def __init__(self, cases: list[CachedCase], context: int, depth: int, augment: bool, seed: int | None = None,
                 mirror: bool = False):
        self.cases, self.context, self.depth = cases, context, depth
        self.index = [(i, z) for i, c in enumerate(cases) for z in range(max(len(c.image) - depth, 0) + 1)]
        self.has_fg = np.array([bool(cases[i].label[z : z + depth].any()) for i, z in self.index])
        self.transform = augmentation(seed, mirror) if augment else None

    def __getitem__(self, k):
        i, z = self.index[k]
        case = self.cases[i]
        zs = np.minimum(np.arange(z, z + self.depth), len(case.image) - 1)
        image = np.stack([stack_context(case.image, q, self.context) for q in zs]).astype(np.float32)  # D,C,S,S
        mask = case.label[zs]
        if self.transform is not None:  # one draw of the in-plane augmentation for every slice of the slab
            out = self.transform(images=np.moveaxis(image, 1, -1), masks=mask)
            image, mask = np.moveaxis(out["images"], -1, 1), np.asarray(out["masks"])
        return (torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, 1, 0))),
                torch.from_numpy(mask[None].astype(np.float32)))


def loss_terms(kind: str):
    """The loss of a batch. Deep-supervised logits (a model's top and lower decoder outputs stacked on dim 1,
    one more dimension than the target) are scored each against the target with nnU-Net's weights 1/2^i,
    normalised to sum to 1."""
    dice = DiceLoss(mode="binary", from_logits=True)

    def one(logits, target):
        terms = []
        if "dice" in kind:
            terms.append(dice(logits, target))
        if "bce" in kind:
            terms.append(F.binary_cross_entropy_with_logits(logits, target))
        return sum(terms)

    def loss(logits, target):
        if logits.ndim == target.ndim:
            return one(logits, target)
        weights = 0.5 ** torch.arange(logits.shape[1], dtype=torch.float32)
        weights /= weights.sum()
        return sum(w * one(logits[:, i], target) for i, w in enumerate(weights.tolist()))

    return loss


def batch_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of the thresholded batch (1 when prediction and target are both empty), as a tensor on the batch's
    device: reading it back every step would make the CPU wait for the GPU instead of queueing the next step."""
    pred = (logits > 0).float()
    inter = (pred * target).sum()
    denom = pred.sum() + target.sum()
    return torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))


def validate(model, cases: list[CachedCase], pre: Preprocessing, post: Postprocessing,
             device, channels_last: bool = False, slab: int = 0,
             runner: Callable | None = None) -> tuple[dict, list[dict], dict, dict]:
    """Whole-patient validation on the scan's own grid, post-processed exactly as the checkpoint will be
    served: 3D Dice per patient is the headline. Returns the metrics, the per-patient rows, the thresholded
    slices (for overlays) and each patient's probability map on the scan's grid (lasegm.probability_maps).
    `runner` stands in for the model (the benchmark replays recorded outputs to time the rest)."""
    rows, predictions, maps, losses = [], {}, {}, []
    runner = runner or TorchRunner(model, device, channels_last=channels_last)  # the training model, in its layout
    for c in cases:
        t0 = time.perf_counter()
        probs = predict_slices(runner, c.image, pre.context, tta=post.flip_tta, slab=slab)
        maps[c.case_id] = pre.restore(probs, c.geometry)
        mask = post.binarize(maps[c.case_id])
        seconds = time.perf_counter() - t0
        target = c.label.astype(np.float32)
        p = np.clip(probs, 1e-6, 1 - 1e-6)
        bce = -np.mean(target * np.log(p) + (1 - target) * np.log1p(-p))
        losses.append(float(bce + 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)))
        rows.append(patient_row(c.case_id, mask, c.label_full, c.spacing, seconds))
        predictions[c.case_id] = (probs >= post.threshold).astype(np.uint8)
    s = summarize(rows, ["dice", "dice_slice", "hd95_mm", "seconds"])
    return ({"val_loss": float(np.mean(losses)), "val_dice_3d": s["dice"]["mean"],
             "val_dice_slice": s["dice_slice"]["mean"], "val_hd95_mm": s["hd95_mm"]["mean"],
             "inference_s_per_volume": s["seconds"]["mean"]}, rows, predictions, maps)


def overlay_slices(cases: list[CachedCase], n: int = 4) -> list[tuple[int, int]]:
    """Fixed (case, z) validation slices for the W&B overlays: spread through the atrium."""
    picks = []
    for i, c in enumerate(cases[:2]):
        zs = np.flatnonzero(c.label.any(axis=(1, 2)))
        if zs.size:
            picks += [(i, int(z)) for z in np.quantile(zs, [0.3, 0.6]).round().astype(int)]
    return picks[:n]


def training_orientation(cases: list[Case]) -> str:
    """The voxel orientation most training scans are stored in (read from the headers only, with the cases'
    declared axes)."""
    from lasegm.anatomy import axis_codes

    return Counter(axis_codes(affine) for affine in scan_affines(cases).values()).most_common(1)[0][0]


def scan_affines(cases: list[Case]) -> dict[str, np.ndarray]:
    """Each case's scan affine with its declared axes, from the header alone."""
    import nibabel as nib

    from lasegm.anatomy import declared_affine

    return {c.case_id: declared_affine(nib.load(str(c.image)).affine, c.axes) for c in cases}


def recipe_preprocessing(cfg: Recipe, train_cases: list[Case] | None = None) -> Preprocessing:
    """The preprocessing a training of this recipe records: the field of view, context, and the plane it slices in
    (native: the orientation most of its training scans are stored in). Without cases a native recipe gets the
    default orientation: enough to check the recipe and count its channels before any data is read."""
    orientation = PLANE_ORIENTATIONS.get(cfg.plane) or (
        training_orientation(train_cases) if train_cases else Preprocessing.orientation)
    return Preprocessing(image_size=cfg.image_size, fov_mm=cfg.fov_mm, context=cfg.context, orientation=orientation,
                         slice_mm=cfg.slice_mm)


@dataclass
class Setup:
    """Everything one training run needs, built once by `setup`."""

    cfg: TrainConfig
    device: torch.device
    pre: Preprocessing
    post: Postprocessing
    model: torch.nn.Module
    loader: torch.utils.data.DataLoader
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Callable
    val_cases: list[CachedCase]
    parts: dict[str, list[str]]
    run_name: str
    run_dir: Path
    meta: dict  # written into every checkpoint's config.json
    graphed: bool = False  # forward and backward replayed as CUDA graphs (graph_forward_backward)
    layout: torch.memory_format = torch.contiguous_format  # the model's and its batches' memory format
    clip: float = 0.0  # gradient-norm clip (0 = none)
    augment_batch: Callable | None = None  # a batch's augmentation on the device (lasegm.augment)
    val_affines: dict = field(default_factory=dict)  # case_id -> the scan's affine (its saved probability maps')


def recipe_model_kwargs(cfg: Recipe) -> dict:
    """The network a recipe builds (lasegm.models.model_kwargs), after checking its preprocessing and model options;
    raises LasegmError for a recipe that cannot train, without reading any data."""
    channels = recipe_preprocessing(cfg).channels  # checked
    kwargs = model_kwargs(cfg.arch, cfg.encoder, channels, cfg.decoder_width, cfg.encoder_depth,
                          cfg.decoder_attention, cfg.slab_depth, cfg.deep_supervision)
    volumetric = getattr(ARCHITECTURES[cfg.arch], "volumetric", False)
    if cfg.augment_3d and not volumetric:
        raise LasegmError(f"--augment_3d augments 3D slabs: it applies to unet3d, not {cfg.arch}")
    if cfg.augment_2d != "lasegm" and volumetric:
        raise LasegmError(f"--augment_2d augments 2D slices: it applies to the 2D models, not {cfg.arch} "
                          "(--augment_3d is its nnU-Net augmentation)")
    return kwargs


def setup(cfg: TrainConfig, quiet: bool = False) -> Setup:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    set_cpu_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    post = cfg.postprocessing()
    kwargs = recipe_model_kwargs(cfg)  # fail before reading data
    fold = cfg.fold if cfg.fold >= 0 else None
    parts = split_cases(cfg.split_file, find_cases(cfg.data or default_data_dir(), cfg.data_axes), fold=fold,
                        all_folds=cfg.all_folds)
    if not parts["val"] and not cfg.all_folds:
        raise LasegmError(f"{cfg.split_file}: the validation part is empty")
    pre = recipe_preprocessing(cfg, parts["train"])
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    train_cases, val_cases = (load_all_cached(parts[p], pre, cache_dir, progress=not quiet, threads=cfg.num_threads)
                              for p in ("train", "val"))

    run_name = cfg.run_name or f"{cfg.arch}-{cfg.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.out_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg.arch, kwargs, None if cfg.encoder_weights == "none" else cfg.encoder_weights)
    layout = memory_layout(model) if cfg.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark

    ids = {p: [c.case_id for c in cs] for p, cs in parts.items()}
    meta = {
        "arch": cfg.arch, "encoder": cfg.encoder, "model_kwargs": kwargs,
        "preprocessing": pre.to_dict(), "postprocessing": post.to_dict(),
        "split_file": Path(cfg.split_file).name, "split_sha256": split_hash(cfg.split_file),
        "fold": fold, "trained_on": ids["train"], "validated_on": ids["val"],
        "train_config": cfg.recipe_dict(), "run_options": cfg.run_options_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        # what its training scans look like, to tell a user's scan unlike them (lasegm.ood)
        "input_reference": make_reference([intensity_profile(c.image) for c in train_cases],
                                          [c.spacing for c in train_cases]),
    }
    slab = slab_depth(meta)  # one reader of the slab depth, as in validation and prediction
    on_device = cfg.augment and (cfg.augment_3d or cfg.augment_2d == "nnunet")  # nnU-Net's: the batch, on the device
    in_loader = cfg.augment and not on_device
    data = (SlabDataset(train_cases, pre.context, slab, in_loader, seed=cfg.seed, mirror=cfg.mirror) if slab else
            SliceDataset(train_cases, pre.context, in_loader, seed=cfg.seed, mirror=cfg.mirror))
    n_samples = cfg.samples_per_epoch or len(data)
    sampler = torch.utils.data.WeightedRandomSampler(data.sample_weights(cfg.fg_fraction), n_samples,
                                                     generator=torch.Generator().manual_seed(cfg.seed))
    workers = loader_workers(cfg.workers, device)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
                                         worker_init_fn=seed_loader_worker,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    if len(loader) == 0:
        raise LasegmError(f"samples_per_epoch ({n_samples}) is smaller than batch_size ({cfg.batch_size})")
    batch_shape = (cfg.batch_size, pre.channels, cfg.image_size, cfg.image_size)  # drop_last: every batch's
    graphed = (cfg.cuda_graph and device.type == "cuda" and not slab
               and graph_forward_backward(model, batch_shape, layout))
    opt, sched, clip = optimisation(cfg, model, cfg.epochs * len(loader), device)
    augment_batch = NnUNetAugmentation(cfg.seed, cfg.mirror, planar=not slab) if on_device else None
    return Setup(cfg, device, pre, post, model, loader, opt, sched, loss_terms(cfg.loss), val_cases, ids,
                 run_name, run_dir, meta, graphed, layout, clip, augment_batch, scan_affines(parts["val"]))


def optimisation(cfg: Recipe, model: torch.nn.Module, total_steps: int, device: torch.device):
    """The optimiser, its per-step schedule and the gradient-norm clip (0 = none) of a recipe. SGD is nnU-Net's:
    Nesterov momentum 0.99, gradients clipped to norm 12 (at momentum 0.99 an unclipped spike compounds)."""
    fused = device.type == "cuda"  # one kernel for the whole update on a GPU instead of a few per parameter tensor
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.99, nesterov=True,
                              weight_decay=cfg.weight_decay, fused=fused)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    schedules = {"cosine": lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total_steps, 1.0))),
                 "poly": lambda s: (1 - min(s / total_steps, 1.0)) ** 0.9,
                 "constant": lambda s: 1.0}
    clip = 12.0 if cfg.optimizer == "sgd" else 0.0
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedules[cfg.scheduler]), clip


def graph_forward_backward(model: torch.nn.Module, batch_shape: tuple, memory_format) -> bool:
    """Capture the model's training forward and backward pass as CUDA graphs (make_graphed_callables): a few
    launches per step instead of ~1,500 small kernels, which leave a fast GPU idle between them (the U-Net recipe
    trained 4.5x faster on an H200, research_log 2026-11-28). In eval mode the model runs as before. The
    capture's warm-up passes leave no trace: weights and BatchNorm statistics are put back. Autocast must not cache
    casts across a graph (PyTorch's rule), hence cache_enabled=False here and in train_epoch. A model that cannot
    be captured trains as before, and says so; returns whether it was captured."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sample = torch.zeros(batch_shape, device=next(model.parameters()).device).contiguous(memory_format=memory_format)
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            torch.cuda.make_graphed_callables(model, (sample,), allow_unused_input=True)  # e.g. an unused head
        return True
    except Exception as e:  # a speed-up, not a requirement: never the reason a training fails
        print(f"CUDA graph capture failed ({type(e).__name__}: {e}); training without it (--cuda_graph=false "
              "silences this)", flush=True)
        return False
    finally:
        model.load_state_dict(state)


def loader_workers(requested: int, device: torch.device) -> int:
    """-1 = auto. On a CPU the cores are busy training, and augmenting in the same process is fastest
    (measured); beside a GPU, augmentation in one process starves it (the recorded GPU runs trained at
    ~120 slices/s on one CPU thread), so workers take it over."""
    if requested >= 0:
        return requested
    if device.type != "cuda":
        return 0
    return max(1, min(8, available_cores() - 1))


def train_step(model, opt, loss_fn, x: torch.Tensor, y: torch.Tensor, graphed: bool = False, clip: float = 0.0):
    """One optimisation step, bf16 autocast on a GPU (no effect on CPU); returns (logits, loss), left on the
    device. The benchmark times this same step."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda",
                        cache_enabled=not graphed):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return logits, loss


def train_epoch(s: Setup, epoch: int, quiet: bool = False) -> dict:
    """One pass over the sampled training slices."""
    s.model.train()
    t0 = time.perf_counter()
    losses, dices, slices = [], [], 0  # per-batch tensors, read back once per epoch (no per-step GPU sync)
    bar = tqdm(s.loader, desc=f"epoch {epoch}/{s.cfg.epochs}", unit="batch", disable=quiet, leave=False)
    for step, (x, y) in enumerate(bar):
        x = x.to(s.device, non_blocking=True, memory_format=s.layout)
        y = y.to(s.device, non_blocking=True)
        if s.augment_batch is not None:
            x, y = s.augment_batch(x, y)
            x = x.contiguous(memory_format=s.layout)
        logits, loss = train_step(s.model, s.opt, s.loss_fn, x, y, s.graphed, s.clip)
        s.sched.step()
        losses.append(loss.detach())
        top = logits if logits.ndim == y.ndim else logits[:, 0]  # deep supervision: the output served
        dices.append(batch_dice(top.detach().float(), y))
        slices += y.shape[0] * (y.shape[2] if y.ndim == 5 else 1)  # a 3D batch holds slabs of slices
        if not quiet and step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1].item():.3f}")
    train_loss, train_dice = (float(torch.stack(v).mean()) for v in (losses, dices))
    seconds = time.perf_counter() - t0
    return {"train_loss": train_loss, "train_dice": train_dice, "train_slices_per_s": slices / seconds}


def finished_run(cfg: TrainConfig) -> dict | None:
    """With --resume: the summary of the run folder's training if it ran to its end with this recipe (then there
    is nothing to do), else None (it continues from its state, or starts). A run of another recipe is refused."""
    from lasegm.resume import finished

    if not cfg.run_name:
        raise LasegmError("--resume continues a named run: give its --run_name (and --out_dir)")
    run_dir = Path(cfg.out_dir) / cfg.run_name
    if not finished(run_dir):
        return None
    same_recipe(cfg.recipe_dict(), run_dir / "checkpoint", "--resume")
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary if summary.get("epochs_run") == cfg.epochs else None


def train(cfg: TrainConfig, quiet: bool = False, should_stop: Callable[[list[dict]], bool] | None = None) -> dict:
    """Train one model; returns the run summary. The checkpoint kept is the best validation epoch
    (--select best) or the last one (--select last, as cross-validation does).

    `should_stop(history)` is asked after every epoch (a local sweep's early termination).
    """
    if cfg.all_folds:  # nothing to validate on: the last epoch is the model
        cfg = dataclasses.replace(cfg, select="last")
    if cfg.resume:
        finished = finished_run(cfg)
        if finished is not None:
            print(f"{Path(cfg.out_dir) / cfg.run_name}: finished before ({cfg.epochs} epochs); nothing to resume")
            return finished
    s = setup(cfg, quiet)
    if not cfg.resume:  # a state left by an earlier training in this folder must not be continued later
        clear_state(s.run_dir)
    tracker = Tracker(cfg.wandb_project, s.run_name, cfg.wandb_mode, group=cfg.wandb_group or None,
                      job_type="final" if cfg.all_folds else f"fold-{cfg.fold}" if cfg.fold >= 0 else "train",
                      config={**cfg.to_dict(), "split": s.parts, "parameters": s.meta["parameters"],
                              "lasegm_version": __version__, "run_dir": str(s.run_dir)},
                      run_id=saved_wandb_run_id(s.run_dir) if cfg.resume else None)  # resumed: the same W&B run
    picks = overlay_slices(s.val_cases)
    history: list[dict] = []
    kept: dict = {}
    first, earlier_s = 1, 0.0  # a resumed training: the epochs and the training time before this process
    saved = load_state(s) if cfg.resume else None
    if saved:
        first, history, kept, earlier_s = saved["epoch"] + 1, saved["history"], saved["kept"], saved["training_time_s"]
        print(f"resuming after epoch {saved['epoch']} of {cfg.epochs} ({s.run_dir / 'resume'})", flush=True)
    t_start = saved_at = time.perf_counter()  # this process's start: the time limit counts from here
    try:
        for epoch in range(first, cfg.epochs + 1):
            t0 = time.perf_counter()
            row = {"epoch": epoch, **train_epoch(s, epoch, quiet)}
            out_of_time = cfg.time_limit_min and time.perf_counter() - t_start > cfg.time_limit_min * 60
            last = epoch == cfg.epochs or out_of_time
            t_val = time.perf_counter()
            validating = bool(s.val_cases) and (epoch % cfg.val_every == 0 or last)
            val, val_rows, predictions, maps = (validate(s.model, s.val_cases, s.pre, s.post, s.device,
                                                         s.cfg.channels_last, slab_depth(s.meta))
                                                if validating else ({}, [], {}, {}))
            # val_time_s (W&B val/time_s): an epoch's time beside training (half of it on a GPU: research_log)
            row.update(**val, lr=s.opt.param_groups[0]["lr"], val_time_s=time.perf_counter() - t_val,
                       epoch_s=time.perf_counter() - t0)
            history.append(row)
            keep = (validating or (last and not s.val_cases)) and (
                cfg.select == "last" or row["val_dice_3d"] > kept.get("val_dice_3d", -1.0))
            if keep:
                kept = {**row, "per_patient": val_rows}
                save_checkpoint(s.run_dir / "checkpoint", s.model, {
                    **s.meta, "epoch": epoch, "selection": cfg.select, "metrics": {k: row[k] for k in (
                        "val_dice_3d", "val_dice_slice", "val_hd95_mm", "val_loss") if k in row},
                    "training_time_s": earlier_s + time.perf_counter() - t_start}, half=cfg.fp16_checkpoint)
                if maps:  # the kept model's maps of its validation patients: out of fold for a CV fold
                    save_probability_maps(s.run_dir / MAPS_FOLDER, {c: (m, s.val_affines[c]) for c, m in maps.items()},
                                          s.post.flip_tta)
            tracker.log_epoch(row, [(f"{s.val_cases[i].case_id} slice {z}", s.val_cases[i].image[z],
                                     s.val_cases[i].label[z], predictions[s.val_cases[i].case_id][z])
                                    for i, z in picks] if validating else [])
            write_csv(s.run_dir / "history.csv", history)
            write_json(s.run_dir / "history.json", history)
            # what `--resume` continues from if this process stops before the last epoch: when a time limit stops it,
            # and every minute or so in case it is killed (a 2D state is ~3x its weights: not after every short epoch)
            if epoch < cfg.epochs and (out_of_time or time.perf_counter() - saved_at >= SAVE_EVERY_S):
                save_state(s, epoch, history, kept, earlier_s + time.perf_counter() - t_start, tracker.run_id)
                saved_at = time.perf_counter()
            # one line per epoch even with --quiet (which only hides progress bars)
            scores = (f"val loss {row['val_loss']:.4f}  val 3D Dice {row['val_dice_3d']:.4f}  slice Dice "
                      f"{row['val_dice_slice']:.4f}" if val else "not validated" if s.val_cases else
                      "no validation (all folds)")
            print(f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  {scores}  "
                  f"{row['epoch_s']:.1f}s{'  *kept' if keep else ''}", flush=True)
            if should_stop and should_stop(history):
                print(f"stopped early after epoch {epoch} (the sweep's early_terminate)")
                break
            if out_of_time:
                print(f"time limit of {cfg.time_limit_min} min reached after epoch {epoch}")
                break
        from lasegm.viz import save_curves

        save_curves(history, s.run_dir / "curves.png", title=s.run_name)
        # without validation (all folds) there is no best epoch and the scores are None: the recipe's
        # cross-validation scores it
        best = max((h for h in history if "val_dice_3d" in h), key=lambda h: h["val_dice_3d"], default={})
        summary = {"run_name": s.run_name, "run_dir": str(s.run_dir), "checkpoint": str(s.run_dir / "checkpoint"),
                   "selection": cfg.select, "checkpoint_epoch": kept["epoch"],
                   "checkpoint_val_dice_3d": kept.get("val_dice_3d"), "best_epoch": best.get("epoch"),
                   "best_val_dice_3d": best.get("val_dice_3d"), "best_val_dice_slice": best.get("val_dice_slice"),
                   "epochs_run": len(history), "training_time_s": earlier_s + time.perf_counter() - t_start,
                   "inference_s_per_volume": kept.get("inference_s_per_volume"),
                   "train_slices_per_s": float(np.mean([h["train_slices_per_s"] for h in history])),
                   "device": str(s.device), "fold": s.meta["fold"], "per_patient_val": kept["per_patient"],
                   "history": history}
        write_json(s.run_dir / "summary.json", summary)
        if len(history) == cfg.epochs:  # finished: nothing left to resume
            clear_state(s.run_dir)
        tracker.log_table("val/per_patient", kept["per_patient"])
        tracker.finish({k: v for k, v in summary.items() if k not in ("per_patient_val", "history")},
                       s.run_dir / "curves.png", s.run_dir / "checkpoint", f"{cfg.arch}-model",
                       {"val_dice_3d": kept.get("val_dice_3d")})
        return summary
    finally:
        tracker.close()
