"""Is a scan like the scans a model trained on? Judged from the input alone, before the model runs; the model's own
confidence is judged after it (lasegm.postprocess.quality_flags).

A checkpoint records an `input_reference` (config.json), made by `make_reference` from its training scans as its
preprocessing prepares them: the intensity profile of the normalised field of view (its quantiles; the z-score
fixes the mean and spread, so the profile is the histogram's shape: which tissues are bright, how much is dark),
averaged over the scans, the distance beyond which a scan is called unlike them, and the coarsest voxel the model
saw. A scan of another contrast (dark blood), a CT, or noise has another profile: docs/experiments/qc_ood.py
measures the margins."""

from __future__ import annotations

import numpy as np

REFERENCE_VERSION = 1
QUANTILES = np.linspace(0.02, 0.98, 25)
# A scan is unlike the training data past this many times the largest distance of a training scan from the mean
# profile of the others (leave one out): on the 16 Task02 development scans that largest distance is 0.084, and
# the made-up unlike scans lie at 0.27-0.72 (research_log.md, "Out of distribution from the input").
DISTANCE_FACTOR = 2.0
COARSER_FACTOR = 2.0  # voxels this many times the training's coarsest are called too coarse


def intensity_profile(slices: np.ndarray) -> np.ndarray:
    """Quantiles of a scan's prepared (normalised) (Z, S, S) field of view, without the padding outside the scan
    (the darkest clipped value, which a small scan has more of)."""
    slices = np.asarray(slices, dtype=np.float32)[::2, ::3, ::3]  # 1 voxel in 18: the same quantiles, 15x faster
    floor = slices.min()
    inside = slices[slices > floor + 1e-6]
    return np.quantile(inside if inside.size else slices.ravel(), QUANTILES).astype(np.float64)


def profile_distance(profile, reference) -> float:
    """Mean absolute difference of two profiles (a 1-Wasserstein distance over their central 96 %)."""
    return float(np.mean(np.abs(np.asarray(profile) - np.asarray(reference))))


def make_reference(profiles: list[np.ndarray], voxel_mm: list) -> dict:
    """The record a checkpoint keeps of its training scans: their profiles (intensity_profile) and voxel sizes."""
    stack = np.asarray(profiles, dtype=np.float64)
    if len(stack) < 2:  # nothing to measure a spread with
        spread = 0.05
    else:
        spread = max(profile_distance(stack[k], np.delete(stack, k, axis=0).mean(axis=0)) for k in range(len(stack)))
    return {"version": REFERENCE_VERSION, "quantiles": [round(float(q), 4) for q in QUANTILES],
            "profile": [round(float(v), 4) for v in stack.mean(axis=0)], "scans": len(stack),
            "training_spread": round(spread, 4), "max_distance": round(DISTANCE_FACTOR * spread, 4),
            "max_voxel_mm": round(float(np.max(voxel_mm)), 4)}


def input_flags(slices: np.ndarray, spacing, reference: dict | None) -> list[tuple[str, str]]:
    """(code, message) for each way the input is unlike the training scans: `contrast` (its intensity profile) and
    `coarse` (its voxels); none without a reference (a checkpoint trained before references were recorded)."""
    if not reference or reference.get("version") != REFERENCE_VERSION:
        return []
    flags = []
    distance = profile_distance(intensity_profile(slices), reference["profile"])
    if distance > reference["max_distance"]:
        flags.append(("contrast", f"this scan's intensities are unlike the training scans' (profile distance "
                                  f"{distance:.2f}, training scans <= {reference['training_spread']:.2f}): another "
                                  "MRI contrast, a CT, or no cardiac MRI? The result may be meaningless"))
    coarsest = float(np.max(spacing))
    if coarsest > COARSER_FACTOR * reference["max_voxel_mm"]:
        flags.append(("coarse", f"voxels of up to {coarsest:.2f} mm, coarser than the training scans' "
                                f"{reference['max_voxel_mm']:.2f} mm: the result may be coarse or wrong"))
    return flags


def made_up_unlike(image: np.ndarray, seed: int = 0):
    """(name, image) of scans unlike the training data, made from a development scan stored ASR (voxel axis 1 runs
    superior): the examples the flags are measured on (docs/experiments/qc_ood.py, the tests). Another contrast
    (intensities inverted: dark blood), a CT-like profile (one soft-tissue level, air dark: blood pool and
    myocardium alike), no heart in view (the lowest 60 slices, 75 mm, below the heart), and noise."""
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(image, (1, 99))
    yield "inverted contrast", image.max() - image
    ct = np.where(image < np.percentile(image, 20), -900.0, 40.0) + rng.normal(0, 15, image.shape)
    yield "CT-like profile", ct.astype(np.float32)
    yield "no heart in view", np.ascontiguousarray(image[:, :60])
    yield "noise", rng.uniform(lo, hi, image.shape).astype(np.float32)
