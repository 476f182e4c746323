"""A model's probability map of a scan, on the scan's own voxel grid, stored small.

Training writes one for each validation patient beside the kept checkpoint (`val_probabilities/<case>.npz`). For a
cross-validation fold those are out-of-fold predictions, so ensembles of cross-validations (views, architectures,
recipes) are scored from them without the fold weights, which may have stayed on the machine that trained them
(nnU-Net keeps its validation softmax for the same reason). uint8 in steps of 1/255, cropped to the nonzero box,
with the affine of the grid it was made on: ~30 KB for a 256 x 256 x 130 scan. The quantisation moves a mean of
maps by at most 1/510, so only voxels that close to the 0.5 threshold can change.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from lasegm import LasegmError
from lasegm.utils import atomic_dir, bounding_box

FORMAT = "lasegm.probabilities/1"
FOLDER = "val_probabilities"  # beside a run's checkpoint
LEVELS = 255


class ProbabilityMap(NamedTuple):
    probability: np.ndarray  # float32 on the grid it was made on
    affine: np.ndarray  # that grid's voxel -> mm (RAS), the scan's declared axes applied
    flip_tta: bool  # whether it includes the flipped pass (a map is only reused with the same post-processing)


def save_probability_maps(folder: str | Path, maps: dict[str, tuple[np.ndarray, np.ndarray]], flip_tta: bool) -> None:
    """{case_id: (float probabilities on the scan's grid, that grid's affine)} -> folder/<case_id>.npz, replacing
    the folder whole."""
    with atomic_dir(folder) as tmp:
        for case_id, (probs, affine) in maps.items():
            q = np.rint(np.clip(probs, 0.0, 1.0) * LEVELS).astype(np.uint8)
            box = bounding_box(q) or tuple(slice(0, 0) for _ in q.shape)
            np.savez_compressed(tmp / f"{case_id}.npz", format=np.array(FORMAT), shape=np.array(q.shape),
                                origin=np.array([s.start for s in box]), probability=q[box],
                                affine=np.asarray(affine, np.float64), flip_tta=np.array(flip_tta))


def _open_map(path: str | Path):
    """The npz of a saved map (lazy: each array is read when asked for), its format checked."""
    path = Path(path)
    if not path.is_file():
        raise LasegmError(f"{path}: probability map not found")
    z = np.load(path, allow_pickle=False)
    if "format" not in z or str(z["format"]) != FORMAT:
        z.close()
        raise LasegmError(f"{path}: not a lasegm probability map (format must be {FORMAT})")
    return z


def load_probability_map(path: str | Path) -> ProbabilityMap:
    with _open_map(path) as z:
        out = np.zeros(tuple(int(s) for s in z["shape"]), np.float32)
        crop = z["probability"]
        out[tuple(slice(int(o), int(o) + n) for o, n in zip(z["origin"], crop.shape))] = crop / np.float32(LEVELS)
        return ProbabilityMap(out, z["affine"], bool(z["flip_tta"]))


def map_flip_tta(path: str | Path) -> bool:
    """Whether a saved map includes the flipped pass, read without its probabilities (an npz reads lazily)."""
    with _open_map(path) as z:
        return bool(z["flip_tta"])


def on_grid(m: ProbabilityMap, shape: tuple[int, ...], affine: np.ndarray, source: str = "map") -> np.ndarray:
    """The map on a scan's grid: the grid it was made on, or one it is a crop of (a scan cropped to its central
    field of view for a GPU machine, docs/gpu.md); zero outside the crop. Anything else is refused."""
    to_scan = np.linalg.inv(affine) @ m.affine  # map voxel -> scan voxel
    offset = np.rint(to_scan[:3, 3]).astype(int)
    if not (np.allclose(to_scan[:3, :3], np.eye(3), atol=1e-4) and np.allclose(to_scan[:3, 3], offset, atol=1e-3)):
        raise LasegmError(f"{source}: made on another grid than the scan's (not the scan nor a crop of it)")
    end = offset + np.array(m.probability.shape)
    if (offset < 0).any() or (end > np.array(shape)).any():
        raise LasegmError(f"{source}: a map of {m.probability.shape} voxels at {tuple(offset)} does not fit the "
                          f"scan's {tuple(shape)}")
    out = np.zeros(shape, np.float32)
    out[tuple(slice(int(a), int(b)) for a, b in zip(offset, end))] = m.probability
    return out


def saved_maps(run_dir: str | Path, case_ids: list[str]) -> list[Path] | None:
    """The map files of `case_ids` in a run folder, or None unless every one is there."""
    paths = [Path(run_dir) / FOLDER / f"{c}.npz" for c in case_ids]
    return paths if all(p.is_file() for p in paths) else None
