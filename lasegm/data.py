"""Stage 1: read an MSD-layout folder, validate every file, normalise and cache 2D slices.

Volumes are (X, Y, Z) as nibabel gives them; Z (the third axis) is the slice axis.
Slices are padded to a square and resized to `image_size` for the model; the inverse
(`restore_slices`) brings predictions back to the scan's own grid, so masks keep its affine.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from lasegm import LasegmError
from lasegm.utils import atomic_path

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NORMALIZATION = "clip_p0.5_p99.5_zscore"  # recorded in checkpoints; bump if the recipe changes
CACHE_VERSION = 1


def default_data_dir() -> Path | None:
    env = os.environ.get("LASEGM_DATA")
    return Path(env) if env else None


def default_cache_dir() -> Path:
    return Path(os.environ.get("LASEGM_CACHE", Path.home() / ".cache" / "lasegm"))


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def case_id_of(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    # nnU-Net style image names carry a channel suffix (la_003_0000): match them to la_003
    name = name.removesuffix("_0000")
    return name


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    label: Path | None


def _list_nifti(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):  # macOS ._ resource forks, editor files
            continue
        if not is_nifti(p):
            raise LasegmError(f"{p}: not a NIfTI file (expected .nii or .nii.gz)")
        found[case_id_of(p)] = p
    return found


def find_cases(data_dir: str | Path | None) -> list[Case]:
    """All labelled cases of an MSD task folder (imagesTr/ + labelsTr/), every image paired."""
    if data_dir is None:
        raise LasegmError("no data folder: pass --data DIR or set LASEGM_DATA")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise LasegmError(f"{data_dir}: data folder not found")
    images_dir, labels_dir = data_dir / "imagesTr", data_dir / "labelsTr"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise LasegmError(f"{d}: missing; expected the Decathlon layout imagesTr/ + labelsTr/")
    images, labels = _list_nifti(images_dir), _list_nifti(labels_dir)
    if not images:
        raise LasegmError(f"{images_dir}: no NIfTI images found")
    for cid, p in images.items():
        if cid not in labels:
            raise LasegmError(f"{p}: image has no label in {labels_dir}")
    for cid, p in labels.items():
        if cid not in images:
            raise LasegmError(f"{p}: label has no image in {images_dir}")
    return [Case(cid, images[cid], labels[cid]) for cid in sorted(images)]


@dataclass
class Volume:
    image: np.ndarray  # float32 (X, Y, Z), raw intensities
    affine: np.ndarray
    header: nib.Nifti1Header
    spacing: tuple[float, float, float]
    label: np.ndarray | None = None  # uint8 (X, Y, Z), values {0, 1}

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def _read_nifti(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise LasegmError(f"{path}: file not found")
    if not is_nifti(path):
        raise LasegmError(f"{path}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, ValueError) as e:
        raise LasegmError(f"{path}: corrupt or unreadable NIfTI ({type(e).__name__}: {e})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LasegmError(f"{path}: expected a 3D volume, got {data.ndim}D with shape {tuple(data.shape)}")
    if min(data.shape) < 1:
        raise LasegmError(f"{path}: empty volume with shape {tuple(data.shape)}")
    img._lasegm_data = data  # keep the decoded array with the header it came from
    return img


def load_volume(image_path: str | Path, label_path: str | Path | None = None) -> Volume:
    """Read and validate a scan (and optionally its label) exactly as every command needs it."""
    image_path = Path(image_path)
    img = _read_nifti(image_path)
    image = np.asarray(img._lasegm_data, dtype=np.float32)
    if not np.isfinite(image).all():
        raise LasegmError(f"{image_path}: image contains NaN or infinite values")
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    if any(s <= 0 for s in spacing):
        raise LasegmError(f"{image_path}: invalid voxel spacing {spacing}")
    vol = Volume(image=image, affine=img.affine, header=img.header, spacing=spacing)
    if label_path is not None:
        label_path = Path(label_path)
        lab = _read_nifti(label_path)
        data = np.asarray(lab._lasegm_data)
        if data.shape != image.shape:
            raise LasegmError(f"{label_path}: label shape {data.shape} differs from image shape {image.shape}")
        if not np.allclose(lab.affine, img.affine, atol=1e-3):
            raise LasegmError(f"{label_path}: label affine differs from the image's ({image_path.name})")
        values = np.unique(data)
        if not np.isin(values, (0, 1)).all():
            shown = ", ".join(str(v) for v in values[:8])
            raise LasegmError(f"{label_path}: label must be binary (0/1), found values {shown}")
        vol.label = data.astype(np.uint8)
    return vol


def load_case(case: Case) -> Volume:
    return load_volume(case.image, case.label)


# ---------------------------------------------------------------- preprocessing

def normalize(image: np.ndarray) -> np.ndarray:
    """Per-volume: clip to the 0.5-99.5 percentiles, then zero mean / unit variance.

    The Decathlon intensities have no absolute scale (the dev copy is even offset per volume).
    """
    lo, hi = np.percentile(image, (0.5, 99.5))
    clipped = np.clip(image, lo, hi)
    std = float(clipped.std())
    return ((clipped - clipped.mean()) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def window_pixels(fov_mm: float, spacing, shape) -> tuple[int, int]:
    """In-plane field of view in pixels: the whole slice, or a central fov_mm x fov_mm window.

    Stated in mm so a checkpoint means the same on 256x256 crops and on the 320x320 originals.
    """
    if fov_mm <= 0:
        return int(shape[0]), int(shape[1])
    return max(1, round(fov_mm / spacing[0])), max(1, round(fov_mm / spacing[1]))


def _center_fit(t: torch.Tensor, h: int, w: int, value: float = 0.0) -> torch.Tensor:
    """Crop or pad the last two axes around the centre to (h, w). Fitting back to the
    original size with the same rule restores every pixel that was kept."""
    H, W = t.shape[-2:]
    top, left = max((H - h) // 2, 0), max((W - w) // 2, 0)
    t = t[..., top : top + h, left : left + w]
    H, W = t.shape[-2:]
    pt, pl = (h - H) // 2, (w - W) // 2
    return F.pad(t, (pl, w - W - pl, pt, h - H - pt), value=value) if (H, W) != (h, w) else t


def to_model_slices(volume_xyz: np.ndarray, image_size: int, is_label: bool = False,
                    window: tuple[int, int] | None = None) -> np.ndarray:
    """(X, Y, Z) -> (Z, S, S): take the field of view, pad it square, resize to image_size."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume_xyz, 2, 0))).float()[:, None]
    pad_value = 0.0 if is_label else float(t.min())
    h, w = window or t.shape[-2:]
    t = _center_fit(t, h, w, pad_value)
    t = _center_fit(t, max(h, w), max(h, w), pad_value)
    if t.shape[-1] != image_size:
        if is_label:
            t = (F.interpolate(t, size=(image_size, image_size), mode="area") >= 0.5).float()
        else:
            t = F.interpolate(t, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return t[:, 0].numpy()


def restore_slices(prob_zss: torch.Tensor, shape_xyz: tuple[int, int, int],
                   window: tuple[int, int] | None = None) -> torch.Tensor:
    """Inverse of to_model_slices for probabilities: (Z, S, S) -> (X, Y, Z) on the scan's grid
    (zero outside the field of view)."""
    h, w = window or shape_xyz[:2]
    side = max(h, w)
    t = prob_zss[:, None].float()
    if t.shape[-1] != side:
        t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    t = _center_fit(_center_fit(t, h, w), shape_xyz[0], shape_xyz[1])
    return t[:, 0].permute(1, 2, 0)


def stack_context(slices: np.ndarray | torch.Tensor, z: int, context: int):
    """Channels for slice z: itself and `context` neighbours each side (2.5D), edges clamped."""
    idx = [min(max(z + d, 0), len(slices) - 1) for d in range(-context, context + 1)]
    return slices[idx]


# ---------------------------------------------------------------- cache

@dataclass
class CachedCase:
    case_id: str
    image: np.ndarray  # float16 (Z, S, S) normalised, model resolution
    label: np.ndarray  # uint8 (Z, S, S) model resolution
    label_full: np.ndarray  # uint8 (X, Y, Z) original grid, for 3D metrics
    spacing: tuple[float, float, float]


def _cache_key(case: Case, image_size: int, fov_mm: float) -> str:
    parts = [CACHE_VERSION, NORMALIZATION, image_size, fov_mm]
    for p in (case.image, case.label):
        st = p.stat()
        parts += [str(p.resolve()), st.st_size, st.st_mtime_ns]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def load_cached(case: Case, image_size: int, cache_dir: Path | None = None, fov_mm: float = 0.0) -> CachedCase:
    """Preprocessed slices of one case, computed once and kept as .npz in the cache folder."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache_dir / f"{case.case_id}-{_cache_key(case, image_size, fov_mm)}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return CachedCase(case.case_id, z["image"], z["label"], z["label_full"], tuple(z["spacing"].tolist()))
        except (OSError, ValueError, KeyError, zlib.error):
            path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    vol = load_case(case)
    window = window_pixels(fov_mm, vol.spacing, vol.image.shape)
    cached = CachedCase(
        case.case_id,
        to_model_slices(normalize(vol.image), image_size, window=window).astype(np.float16),
        to_model_slices(vol.label, image_size, is_label=True, window=window).astype(np.uint8),
        vol.label,
        vol.spacing,
    )
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, image=cached.image, label=cached.label, label_full=cached.label_full,
                     spacing=np.array(cached.spacing))
    except OSError:
        pass  # a read-only cache only costs speed
    return cached
