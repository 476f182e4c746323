"""Overlap and distance metrics on binary 3D masks, in physical units where relevant.

Conventions (as in the Decathlon / nnU-Net evaluation):
- Dice and IoU of two empty masks are 1 (nothing to find, nothing found).
- HD95 is the 95th percentile of the symmetric surface distances (both directions pooled,
  like medpy's hd95) in mm; 0 when both masks are empty, inf when exactly one is.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from lasegm.utils import bounding_box


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    denom = pred.sum() + gt.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(pred, gt).sum() / denom)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def joint_crop(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks (as bool) cropped to the box around either's foreground. Every metric here is the same on
    the crop as on the whole scan (outside the box both are empty, so no surface voxel changes), and a scan
    is mostly background: a validation patient is scored 2-3x faster (research_log 2026-11-28, afternoon).
    Two empty masks crop to nothing."""
    box = bounding_box(np.logical_or(pred, gt))
    if box is None:
        box = (slice(0, 0),) * pred.ndim
    return pred[box].astype(bool, copy=False), gt[box].astype(bool, copy=False)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def hd95(pred: np.ndarray, gt: np.ndarray, spacing=None) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    if not pred.any() and not gt.any():
        return 0.0
    if not pred.any() or not gt.any():
        return math.inf
    spacing = tuple(spacing) if spacing is not None else (1.0,) * pred.ndim
    pred, gt = joint_crop(pred, gt)  # the distance transforms stay small
    sp, sg = _surface(pred), _surface(gt)
    dist_to_gt = ndimage.distance_transform_edt(~sg, sampling=spacing)
    dist_to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    distances = np.concatenate([dist_to_gt[sp], dist_to_pred[sg]])
    return float(np.percentile(distances, 95))


def error_counts(pred: np.ndarray, gt: np.ndarray) -> dict:
    """Voxels that are true positive, false positive and false negative (Dice = 2tp / (2tp + fp + fn))."""
    p, g = pred.astype(bool), gt.astype(bool)
    return {"tp": int((p & g).sum()), "fp": int((p & ~g).sum()), "fn": int((~p & g).sum())}


def volume_ml(mask: np.ndarray, spacing) -> float:
    return float(mask.astype(bool).sum() * np.prod(spacing) / 1000.0)


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    pred, gt = joint_crop(pred, gt)
    pv, gv = volume_ml(pred, spacing), volume_ml(gt, spacing)
    return {
        "dice": dice(pred, gt),
        "iou": iou(pred, gt),
        "hd95_mm": hd95(pred, gt, spacing),
        "volume_pred_ml": pv,
        "volume_true_ml": gv,
        "volume_error_ml": pv - gv,
    }


def slice_dice(pred_zxy: np.ndarray, gt_zxy: np.ndarray) -> float:
    """Mean 2D Dice over slices that contain atrium in the ground truth or the prediction."""
    scores = [dice(p, g) for p, g in zip(pred_zxy, gt_zxy) if p.any() or g.any()]
    return float(np.mean(scores)) if scores else 1.0


def summarize(rows: list[dict], keys=None) -> dict:
    """mean / std / min / max per metric; infinite HD95 values are counted, not averaged."""
    keys = keys or [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and not isinstance(rows[0][k], bool)]
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=float)
        finite = vals[np.isfinite(vals)]
        out[k] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            "min": float(finite.min()) if finite.size else math.nan,
            "max": float(finite.max()) if finite.size else math.nan,
            "n": int(vals.size),
            "n_infinite": int((~np.isfinite(vals)).sum()),
        }
    return out


PATIENT_METRICS = ["dice", "iou", "hd95_mm", "volume_pred_ml", "volume_true_ml", "volume_error_ml", "dice_slice",
                   "seconds"]


def patient_row(case_id: str, pred: np.ndarray, gt: np.ndarray, spacing, seconds: float, slice_axis: int = 2) -> dict:
    """The one per-patient metrics row of validation, evaluate and cross-validation: 3D metrics on
    the whole volume, plus the per-slice mean Dice (labelled as such) for reference."""
    pred, gt = joint_crop(pred, gt)  # once, for the 3D metrics and the per-slice ones
    return {"case": case_id, **case_metrics(pred, gt, spacing),
            "dice_slice": slice_dice(np.moveaxis(pred, slice_axis, 0), np.moveaxis(gt, slice_axis, 0)),
            "seconds": seconds}
