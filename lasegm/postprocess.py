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


def plausibility_warnings(mask: np.ndarray, voxel_ml: float) -> list[str]:
    """Warnings (not errors) for a result that looks implausible for a left atrium."""
    volume = float(mask.astype(bool).sum()) * voxel_ml
    lo, hi = PLAUSIBLE_ML
    if volume == 0:
        return ["no atrium found: the mask is empty (is this a cardiac MRI with the left atrium in view?)"]
    if volume < lo or volume > hi:
        return [f"implausible atrium volume {volume:.1f} mL (expected {lo:.0f}-{hi:.0f} mL): check the scan "
                "and the result before using it"]
    return []
