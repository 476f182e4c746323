"""Stage 3: train a 2D model on slices, validate on whole patients (3D Dice), log to W&B."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from tqdm import tqdm

from lasegm import LasegmError, __version__
from lasegm.config import TrainConfig
from lasegm.data import (
    NORMALIZATION,
    CachedCase,
    default_data_dir,
    find_cases,
    load_cached,
    restore_slices,
    stack_context,
    window_pixels,
)
from lasegm.metrics import case_metrics, slice_dice, summarize
from lasegm.models import build_model, model_kwargs, save_checkpoint
from lasegm.predict import predict_slices
from lasegm.split import split_cases, split_hash
from lasegm.utils import resolve_device, set_cpu_threads, write_csv, write_json


def augmentation(seed: int | None = None) -> A.Compose:
    # No flips: left/right and up/down are anatomically fixed in these scans. No gamma either:
    # slices are z-scored (negative values), where a power transform gives NaN.
    return A.Compose([
        A.Affine(scale=(0.85, 1.15), rotate=(-15, 15), translate_percent=(-0.08, 0.08), p=0.7),
        A.ElasticTransform(alpha=20, sigma=5, p=0.15),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.GaussNoise(std_range=(0.0, 0.05), p=0.2),
    ], seed=seed)  # albumentations keeps its own RNG: without a seed, reruns of one command differ


class SliceDataset(torch.utils.data.Dataset):
    """(case, z) pairs -> (C, S, S) image with 2*context+1 channels, (1, S, S) mask."""

    def __init__(self, cases: list[CachedCase], context: int, augment: bool, seed: int | None = None):
        self.cases, self.context = cases, context
        self.index = [(i, z) for i, c in enumerate(cases) for z in range(len(c.image))]
        self.has_fg = np.array([bool(cases[i].label[z].any()) for i, z in self.index])
        self.transform = augmentation(seed) if augment else None

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
        """Per-slice weights so that atrium slices make up fg_fraction of the draws."""
        n_fg = max(int(self.has_fg.sum()), 1)
        n_bg = max(len(self.has_fg) - n_fg, 1)
        return torch.tensor(np.where(self.has_fg, fg_fraction / n_fg, (1 - fg_fraction) / n_bg))


def loss_terms(kind: str):
    dice = DiceLoss(mode="binary", from_logits=True)

    def loss(logits, target):
        terms = []
        if "dice" in kind:
            terms.append(dice(logits, target))
        if "bce" in kind:
            terms.append(F.binary_cross_entropy_with_logits(logits, target))
        return sum(terms)

    return loss


def batch_dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    pred = (logits > 0).float()
    inter = (pred * target).sum()
    denom = pred.sum() + target.sum()
    return 1.0 if denom == 0 else float(2 * inter / denom)


def validate(model, cases: list[CachedCase], cfg: TrainConfig, device) -> tuple[dict, list[dict], dict]:
    """Whole-patient validation on the scan's own grid: 3D Dice per patient is the headline."""
    rows, predictions, losses = [], {}, []
    for c in cases:
        t0 = time.perf_counter()
        probs = predict_slices(model, c.image, cfg.context, device, tta=cfg.flip_tta)
        full = restore_slices(probs, c.label_full.shape, window_pixels(cfg.fov_mm, c.spacing, c.label_full.shape))
        mask = (full >= 0.5).numpy().astype(np.uint8)
        seconds = time.perf_counter() - t0
        target = torch.from_numpy(c.label.astype(np.float32))
        losses.append(float(F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), target)
                            + 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)))
        m = case_metrics(mask, c.label_full, c.spacing)
        rows.append({"case": c.case_id, "dice": m["dice"], "hd95_mm": m["hd95_mm"],
                     "dice_slice": slice_dice(np.moveaxis(mask, 2, 0), np.moveaxis(c.label_full, 2, 0)),
                     "seconds": seconds})
        predictions[c.case_id] = (probs >= 0.5).numpy().astype(np.uint8)
    s = summarize(rows, ["dice", "dice_slice", "hd95_mm", "seconds"])
    return ({"val_loss": float(np.mean(losses)), "val_dice_3d": s["dice"]["mean"],
             "val_dice_slice": s["dice_slice"]["mean"], "val_hd95_mm": s["hd95_mm"]["mean"],
             "inference_s_per_volume": s["seconds"]["mean"]}, rows, predictions)


def overlay_slices(cases: list[CachedCase], n: int = 4) -> list[tuple[int, int]]:
    """Fixed (case, z) validation slices for the W&B overlays: spread through the atrium."""
    picks = []
    for i, c in enumerate(cases[:2]):
        zs = np.flatnonzero(c.label.any(axis=(1, 2)))
        if zs.size:
            picks += [(i, int(z)) for z in np.quantile(zs, [0.3, 0.6]).round().astype(int)]
    return picks[:n]


def wandb_metrics(row: dict) -> dict:
    """History row -> W&B keys: train_loss -> train/loss, val_dice_3d -> val/dice_3d (the sweep metric)."""
    return {f"train/{k[6:]}" if k.startswith("train_") else f"val/{k[4:]}" if k.startswith("val_") else k: v
            for k, v in row.items()}


def init_wandb(cfg: TrainConfig, extra: dict):
    import wandb

    mode = cfg.wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_login()):
        print("W&B: no API key found, logging offline (upload later with `wandb sync wandb/offline-run-*`)")
        mode = "offline"
    # wandb otherwise fixes ./wandb at its first init in the process; each run goes under the current folder
    run = wandb.init(project=cfg.wandb_project, name=cfg.run_name or None, mode=mode,
                     dir=os.environ.get("WANDB_DIR") or os.getcwd(),
                     config={**cfg.to_dict(), **extra}, settings=wandb.Settings(silent=True))
    run.define_metric("val/dice_3d", summary="max")  # the sweeps' metric: best epoch, not last
    return run


def _has_netrc_login() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_overlays(cases, picks, predictions):
    import wandb
    from lasegm.viz import to_uint8

    images = []
    for i, z in picks:
        c = cases[i]
        images.append(wandb.Image(
            to_uint8(c.image[z].astype(np.float32)),
            masks={"prediction": {"mask_data": predictions[c.case_id][z], "class_labels": {1: "atrium"}},
                   "ground_truth": {"mask_data": c.label[z], "class_labels": {1: "atrium"}}},
            caption=f"{c.case_id} slice {z}"))
    return images


def train(cfg: TrainConfig, quiet: bool = False, should_stop: Callable[[list[dict]], bool] | None = None) -> dict:
    """Train one model; returns the run summary. The best checkpoint (val 3D Dice) is kept.

    `should_stop(history)` is asked after every epoch (a local sweep's early termination).
    """
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    set_cpu_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    kwargs = model_kwargs(cfg.arch, cfg.encoder, 2 * cfg.context + 1, cfg.decoder_width,
                          cfg.encoder_depth, cfg.decoder_attention)
    parts = split_cases(cfg.split_file, find_cases(cfg.data or default_data_dir()))
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    load = lambda cs: [load_cached(c, cfg.image_size, cache_dir, cfg.fov_mm)
                       for c in tqdm(cs, desc="loading/caching", unit="case", disable=quiet)]
    train_cases, val_cases = load(parts["train"]), load(parts["val"])
    if not val_cases:
        raise LasegmError(f"{cfg.split_file}: the validation part is empty")

    run_name = cfg.run_name or f"{cfg.arch}-{cfg.encoder}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(cfg.out_dir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    model = build_model(cfg.arch, kwargs, None if cfg.encoder_weights == "none" else cfg.encoder_weights)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())

    data = SliceDataset(train_cases, cfg.context, cfg.augment, seed=cfg.seed)
    n_samples = cfg.samples_per_epoch or len(data)
    sampler = torch.utils.data.WeightedRandomSampler(data.sample_weights(cfg.fg_fraction), n_samples,
                                                     generator=torch.Generator().manual_seed(cfg.seed))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                                         num_workers=cfg.workers, pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise LasegmError(f"samples_per_epoch ({n_samples}) is smaller than batch_size ({cfg.batch_size})")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total_steps, 1.0))))
        if cfg.scheduler == "cosine" else (lambda s: 1.0))
    loss_fn = loss_terms(cfg.loss)
    use_amp = device.type == "cuda"  # bf16 autocast: a free speed-up on GPUs, no effect on CPU

    meta = {
        "arch": cfg.arch, "encoder": cfg.encoder, "model_kwargs": kwargs,
        "preprocessing": {"image_size": cfg.image_size, "context": cfg.context, "fov_mm": cfg.fov_mm,
                          "normalization": NORMALIZATION, "slice_axis": 2, "resize": "fov_pad_square_bilinear"},
        "postprocessing": {"threshold": 0.5, "largest_component": cfg.largest_component,
                           "flip_tta": cfg.flip_tta},
        "split_file": Path(cfg.split_file).name, "split_sha256": split_hash(cfg.split_file),
        "train_config": cfg.to_dict(), "parameters": n_params,
    }
    run = init_wandb(cfg, {"split": {p: [c.case_id for c in cs] for p, cs in parts.items()},
                           "parameters": n_params, "lasegm_version": __version__, "run_dir": str(run_dir)})
    picks = overlay_slices(val_cases)
    history: list[dict] = []
    best = {"val_dice_3d": -1.0}
    t_start = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            losses, dices = [], []
            bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=quiet, leave=False)
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = model(x)
                loss = loss_fn(logits.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                dices.append(batch_dice(logits.detach().float(), y))
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            train_seconds = time.perf_counter() - t0
            val, val_rows, predictions = validate(model, val_cases, cfg, device)
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "train_dice": float(np.mean(dices)),
                   **val, "lr": opt.param_groups[0]["lr"], "epoch_s": time.perf_counter() - t0,
                   "train_slices_per_s": len(losses) * cfg.batch_size / train_seconds}
            history.append(row)
            improved = row["val_dice_3d"] > best["val_dice_3d"]
            if improved:
                best = {**row, "per_patient": val_rows}
                save_checkpoint(run_dir / "checkpoint", model, {
                    **meta, "epoch": epoch, "metrics": {k: row[k] for k in (
                        "val_dice_3d", "val_dice_slice", "val_hd95_mm", "val_loss")},
                    "training_time_s": time.perf_counter() - t_start}, half=cfg.fp16_checkpoint)
            run.log({**wandb_metrics(row), "val/overlays": wandb_overlays(val_cases, picks, predictions)}, step=epoch)
            write_csv(run_dir / "history.csv", history)
            write_json(run_dir / "history.json", history)
            # one line per epoch even with --quiet (which only hides progress bars)
            print(f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                  f"val 3D Dice {row['val_dice_3d']:.4f}  slice Dice {row['val_dice_slice']:.4f}  "
                  f"{row['epoch_s']:.1f}s{'  *best' if improved else ''}", flush=True)
            if should_stop and should_stop(history):
                print(f"stopped early after epoch {epoch} (the sweep's early_terminate)")
                break
            if cfg.time_limit_min and time.perf_counter() - t_start > cfg.time_limit_min * 60:
                print(f"time limit of {cfg.time_limit_min} min reached after epoch {epoch}")
                break
        total = time.perf_counter() - t_start
        from lasegm.viz import save_curves

        save_curves(history, run_dir / "curves.png", title=run_name)
        summary = {"run_name": run_name, "run_dir": str(run_dir), "checkpoint": str(run_dir / "checkpoint"),
                   "best_epoch": best["epoch"], "best_val_dice_3d": best["val_dice_3d"],
                   "best_val_dice_slice": best["val_dice_slice"], "epochs_run": len(history),
                   "training_time_s": total, "inference_s_per_volume": best["inference_s_per_volume"],
                   "train_slices_per_s": float(np.mean([h["train_slices_per_s"] for h in history])),
                   "device": str(device), "per_patient_val": best["per_patient"], "history": history}
        write_json(run_dir / "summary.json", summary)
        import wandb

        run.summary.update({k: v for k, v in summary.items() if k not in ("per_patient_val", "history")})
        run.log({"curves": wandb.Image(str(run_dir / "curves.png"))})
        artifact = wandb.Artifact(f"{cfg.arch}-model", type="model", metadata={"val_dice_3d": best["val_dice_3d"]})
        artifact.add_dir(str(run_dir / "checkpoint"))
        run.log_artifact(artifact)
        return summary
    finally:
        run.finish()
