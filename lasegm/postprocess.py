"""Post-processing as one record (threshold, largest component, flip TTA) and the plausibility check.

A checkpoint holds the record once (config.json "postprocessing"); training selects its best epoch
with the record it will be served with; evaluate/predict may override single fields explicitly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from lasegm import LasegmError
from lasegm.utils import bounding_box

# Left-atrium volumes in adults span roughly 20-200 mL (end-systolic to enlarged atria); outside this
# wider band a mask is far more likely a failure (wrong scan, wrong orientation, no heart) than anatomy.
PLAUSIBLE_ML = (10.0, 400.0)
# A mask the model is unsure of: a scan read in the wrong orientation (a wrong header) or unlike the training data
# gives soft, scattered probabilities. Measured (research_log.md, "An implausible mask is never silent"): per mask
# voxel, the voxels with 0.1 < p < 0.9 were at most 0.24 on the 16 development patients read correctly and at least
# 0.52 on the wrong readings; the largest piece held >= 98.7 % of the thresholded volume, and <= 94 % on those.
# A checkpoint may record its own limit (config.json "quality": {"unsure_limit": x}, `lasegm export --unsure_limit`):
# a mean of views is softer where they disagree, so its correct readings run higher than one model's.
UNSURE_P = (0.1, 0.9)
MAX_UNSURE_PER_MASK_VOXEL = 0.45
MIN_LARGEST_SHARE = 0.95


def unsure_limit(config: dict, source: str = "config.json") -> float | None:
    """The unsure-voxel limit a checkpoint records (None: it records none, MAX_UNSURE_PER_MASK_VOXEL applies)."""
    limit = (config.get("quality") or {}).get("unsure_limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
        raise LasegmError(f"{source}: quality.unsure_limit must be a number > 0, got {limit!r}")
    return float(limit)


@dataclass(frozen=True)
class Postprocessing:
    threshold: float = 0.5
    largest_component: bool = True  # the atrium is one structure
    flip_tta: bool = False  # average with the prediction of the mirrored input

    def __post_init__(self):
        if not 0.0 < float(self.threshold) < 1.0:
            raise LasegmError(f"post-processing threshold must be in (0, 1), got {self.threshold!r}")
        for name in ("largest_component", "flip_tta"):
            if not isinstance(getattr(self, name), bool):
                raise LasegmError(f"post-processing {name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict | None, source: str = "config.json") -> Postprocessing:
        record = dict(record or {})
        unknown = sorted(set(record) - {f.name for f in fields(cls)})
        if unknown:
            raise LasegmError(f"{source}: unknown post-processing field(s) {', '.join(unknown)}")
        try:
            return cls(**record)
        except LasegmError as e:
            raise LasegmError(f"{source}: {e}") from None

    def override(self, **changes) -> Postprocessing:
        """Explicit overrides (None = keep the recorded value)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def binarize(self, probs: np.ndarray) -> np.ndarray:
        probs = np.asarray(probs)
        mask = (probs >= self.threshold).astype(np.uint8)
        return largest_component(mask) if self.largest_component else mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component."""
    from scipy import ndimage  # 0.3 s to import: not at `lasegm` start-up (predict warms it in the background)

    box = bounding_box(mask)  # label only the box around the mask: 4x faster
    if box is None:
        return mask
    labels, n = ndimage.label(mask[box], structure=np.ones((3, 3, 3)))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    kept = np.zeros_like(mask)
    kept[box] = labels == sizes.argmax()
    return kept


def quality_flags(mask: np.ndarray, voxel_ml: float, probs: np.ndarray | None = None, threshold: float = 0.5,
                  max_unsure: float = MAX_UNSURE_PER_MASK_VOXEL) -> list[tuple[str, str]]:
    """(code, message) for each way a result looks implausible for a left atrium: `empty`, `volume` (outside
    PLAUSIBLE_ML), and with the probability map the mask came from, `unsure` (the model's own confidence: more than
    max_unsure unsure voxels per mask voxel, or the segmentation in pieces)."""
    voxels = int(np.count_nonzero(mask))
    volume = voxels * voxel_ml
    lo, hi = PLAUSIBLE_ML
    if volume == 0:
        return [("empty", "no atrium found: the mask is empty (is this a cardiac MRI with the left atrium in view?)")]
    flags = []
    if volume < lo or volume > hi:
        flags.append(("volume", f"implausible atrium volume {volume:.1f} mL (expected {lo:.0f}-{hi:.0f} mL): check "
                                "the scan and the result before using it"))
    if probs is not None:
        unsure = np.count_nonzero((probs > UNSURE_P[0]) & (probs < UNSURE_P[1])) / voxels
        share = voxels / max(np.count_nonzero(probs >= threshold), 1)
        if unsure > max_unsure or share < MIN_LARGEST_SHARE:
            flags.append(("unsure", f"the model is unsure of this mask ({unsure:.2f} unsure voxels per mask voxel, "
                                    f"{share:.0%} of its segmentation in one piece; correctly read scans: <= "
                                    f"{max_unsure:.2f}, >= {MIN_LARGEST_SHARE:.0%}): is the scan stored "
                                    "with a header that says its anatomy (else declare its axes: --axes), and is it "
                                    "a cardiac MRI like the training data?"))
    return flags


def plausibility_warnings(mask: np.ndarray, voxel_ml: float, probs: np.ndarray | None = None,
                          threshold: float = 0.5) -> list[str]:
    """The messages of quality_flags."""
    return [message for _, message in quality_flags(mask, voxel_ml, probs, threshold)]
