"""The preprocessing contract: the one definition of scan on disk -> model input -> probabilities
back on the scan's own voxel grid.

Training (and its slice cache), validation, evaluate, predict, the demo and the benchmark all use a
`Preprocessing` object; a checkpoint stores it whole in config.json and rebuilds it, validated, on load.

Forward (`prepare`):
1. reorient the voxel array to the training data's orientation (axis codes read from the affine),
   so a scan stored flipped, transposed or slice-axis-first gives the same slices;
2. take the central `fov_mm` x `fov_mm` field of view of every slice, measured in mm, so a scan
   stored with a wider or narrower field of view, or another in-plane spacing, covers the same anatomy
   (version 3: and only the slices within the central `fov_mm` along the slice axis, so the field of view is
   a cube and how far a stack reaches beyond it changes nothing; the other slices get probability 0);
3. normalise with statistics of that physical region only (version 2; version 1, the legacy recipe of
   the first checkpoints, used the whole stored volume, which changes with the stored field of view);
4. resample the region to `image_size` x `image_size` (the training spacing is fov_mm / image_size);
   version 4: and the slice axis to the same spacing (or to `slice_mm`), so a 2.5D model's neighbouring slices lie
   as far apart as in training whatever the scan's slice spacing (`Geometry.depth` model slices for the kept scan
   slices).
Inverse (`restore`): the same steps backwards, to probabilities on the input's own grid.

Everything here is numpy: the ONNX Runtime backend predicts without importing torch, and both backends
(and training) must see the same input. The resampling weights reproduce torch's `F.interpolate`
("area", "bilinear" with and without antialias, align_corners=False), which made the first
checkpoints' training data; tests/test_onnx.py checks the two agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import nibabel.orientations as nio
import numpy as np

from lasegm import LasegmError

VERSION = 4
# version -> (normalisation, resize) names as written in config.json
RECIPES = {
    1: ("clip_p0.5_p99.5_zscore", "fov_pad_square_bilinear"),  # legacy: whole-volume statistics
    2: ("fov_clip_p0.5_p99.5_zscore", "fov_bilinear"),  # statistics of the in-plane field of view, all slices
    3: ("fov_cube_clip_p0.5_p99.5_zscore", "fov_cube_bilinear"),  # ... of the field of view along every axis
    4: ("fov_cube_clip_p0.5_p99.5_zscore", "fov_cube_isotropic"),  # ... and the slice axis resampled too
}
# The anatomical plane a model slices in -> its grid's axis codes (slices along the third). A Decathlon Task02 scan
# is stored sagittally (lasegm.anatomy), so its native plane is sagittal, with the same arrays as "ASR".
PLANE_ORIENTATIONS = {"sagittal": "ASR", "coronal": "RSA", "axial": "RAS"}
_SLICING = {"R": "sagittal", "L": "sagittal", "A": "coronal", "P": "coronal", "S": "axial", "I": "axial"}
CLIP_PERCENTILES = (0.5, 99.5)


def plane_of(orientation: str) -> str:
    """The anatomical plane of a model grid's slices: named by the axis it slices along (its third code)."""
    return _SLICING[orientation[2].upper()]


def zscore_clipped(values: np.ndarray) -> tuple[float, float, float, float]:
    """(low, high, mean, std) of intensities clipped to the 0.5-99.5 percentiles.

    The Decathlon intensities have no absolute scale (the development copy is even offset per volume).
    """
    lo, hi = np.percentile(values, CLIP_PERCENTILES)
    clipped = np.clip(values, lo, hi)
    std = float(clipped.std())
    return float(lo), float(hi), float(clipped.mean()), std if std > 1e-6 else 1.0


def normalize_intensities(values: np.ndarray) -> np.ndarray:
    """Clip to the 0.5-99.5 percentiles of `values`, then zero mean / unit variance (float32)."""
    lo, hi, mean, std = zscore_clipped(values)
    return ((np.clip(values, lo, hi) - mean) / std).astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """Where a scan's voxels went: enough to map model outputs back onto the input's own grid."""

    shape: tuple[int, int, int]  # the input's voxel grid
    transform: tuple[tuple[float, float], ...]  # nibabel ornt transform: input axes -> model axes
    model_shape: tuple[int, int, int]  # the grid after reorientation (X', Y', slices)
    spacing: tuple[float, float, float]  # mm, in model axis order
    window: tuple[int, int]  # the field of view in voxels of the reoriented grid
    slices: tuple[int, int]  # (first, end) of the scan slices the model sees (version 3: the central fov_mm)
    depth: int  # model slices made of them (version 4: resampled to the in-plane model spacing; else one each)

    def to_model(self, array: np.ndarray) -> np.ndarray:
        """An array on the input grid (a label, the scan for display) -> model orientation."""
        return nio.apply_orientation(array, np.array(self.transform))

    def to_input(self, array: np.ndarray) -> np.ndarray:
        """The inverse of to_model (numpy, any dtype)."""
        inverse = np.empty((len(self.transform), 2))
        for axis, (target, flip) in enumerate(self.transform):
            inverse[int(target)] = (axis, flip)
        return nio.apply_orientation(array, inverse)

    @property
    def kept(self) -> int:
        """How many scan slices the model sees."""
        return self.slices[1] - self.slices[0]

    @property
    def slice_weights(self) -> np.ndarray | None:
        """(kept scan slices, depth) weights that restore interpolates model slices with (version 4), or None
        when each model slice is one scan slice. The one owner of which model slices make a scan slice."""
        return None if self.kept == self.depth else resize_weights(self.depth, self.kept, "bilinear")


@dataclass(frozen=True)
class Preprocessing:
    """The recipe; every field is written into config.json and checked on load."""

    image_size: int = 160
    fov_mm: float = 200.0  # central in-plane field of view in mm (0 = the whole slice, legacy only)
    context: int = 1  # neighbouring slices each side as extra channels (2.5D)
    orientation: str = "RAS"  # voxel axis codes of the training data; inputs are reoriented to it
    version: int = VERSION
    normalization: str = RECIPES[VERSION][0]
    resize: str = RECIPES[VERSION][1]
    slice_axis: int = 2  # of the reoriented grid
    # version 4: the model slices' spacing in mm; 0 = the in-plane model pixel (fov_mm / image_size). A model with
    # fine pixels (a PSPNet at 224 px over 200 mm: 0.89 mm) need not run as many slices as it has pixels across.
    slice_mm: float = 0.0

    def __post_init__(self):
        problems = []
        if self.version not in RECIPES:
            problems.append(f"unknown preprocessing version {self.version!r} (this lasegm knows "
                            f"{', '.join(map(str, RECIPES))}; upgrade lasegm)")
        elif (self.normalization, self.resize) != RECIPES[self.version]:
            problems.append(f"version {self.version} means normalization {RECIPES[self.version][0]!r} and resize "
                            f"{RECIPES[self.version][1]!r}, not {self.normalization!r} / {self.resize!r}")
        if not (isinstance(self.image_size, int) and self.image_size >= 8):
            problems.append(f"image_size must be an integer >= 8, got {self.image_size!r}")
        if not (isinstance(self.context, int) and 0 <= self.context <= 8):
            problems.append(f"context must be an integer 0..8, got {self.context!r}")
        if not (isinstance(self.fov_mm, (int, float)) and self.fov_mm >= 0):
            problems.append(f"fov_mm must be >= 0, got {self.fov_mm!r}")
        elif self.version >= 2 and self.fov_mm <= 0:
            problems.append("fov_mm must be > 0: the field of view is what makes the input independent "
                            "of how much of the scan was stored")
        if not (isinstance(self.slice_mm, (int, float)) and self.slice_mm >= 0):
            problems.append(f"slice_mm must be >= 0 (0: the in-plane model pixel), got {self.slice_mm!r}")
        elif self.slice_mm and self.version < 4:
            problems.append(f"slice_mm needs preprocessing version 4 (version {self.version} keeps the scan's "
                            "slices)")
        if self.slice_axis != 2:
            problems.append(f"slice_axis must be 2 (of the reoriented grid), got {self.slice_axis!r}")
        try:
            nio.axcodes2ornt(tuple(self.orientation))
            if len(self.orientation) != 3:
                raise ValueError
        except (ValueError, TypeError):
            problems.append(f"orientation must be three axis codes such as 'RAS', got {self.orientation!r}")
        if problems:
            raise LasegmError("; ".join(problems))

    @property
    def channels(self) -> int:
        return 2 * self.context + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict, source: str = "config.json") -> Preprocessing:
        """Rebuild from config.json; an unknown version or field, or an inconsistent record, is an error."""
        if not isinstance(record, dict):
            raise LasegmError(f"{source}: preprocessing must be a mapping")
        record = dict(record)
        version = record.setdefault("version", 1)  # checkpoints written before versioning are version 1
        if version == 1:  # what version-1 records meant when a field was left out
            # (every Task02_Heart file is stored RAS, so the first checkpoints were trained on RAS voxels)
            record = {"fov_mm": 0.0, "context": 0, "orientation": "RAS", **record}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise LasegmError(f"{source}: unknown preprocessing field(s) {', '.join(unknown)} "
                              "(written by a newer lasegm?)")
        if version in RECIPES:
            record.setdefault("normalization", RECIPES[version][0])
            record.setdefault("resize", RECIPES[version][1])
        if "image_size" not in record:
            raise LasegmError(f"{source}: preprocessing has no image_size")
        try:
            return cls(**record)
        except LasegmError as e:
            raise LasegmError(f"{source}: preprocessing: {e}") from None

    # ------------------------------------------------------------ forward

    def geometry(self, affine: np.ndarray, shape) -> Geometry:
        shape = tuple(int(s) for s in shape)
        transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(self.orientation)))
        source_axis = [int(i) for i in np.argsort(transform[:, 0])]  # input axis behind each model axis
        model_shape = tuple(shape[i] for i in source_axis)
        zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
        spacing = tuple(float(zooms[i]) for i in source_axis)
        if self.fov_mm > 0:
            window = (max(1, round(self.fov_mm / spacing[0])), max(1, round(self.fov_mm / spacing[1])))
        else:
            window = model_shape[:2]
        kept = _center_crop(model_shape[2], max(1, round(self.fov_mm / spacing[2]))) if self.version >= 3 else \
            slice(0, model_shape[2])
        slices = (kept.start, min(kept.stop, model_shape[2]))
        depth = slices[1] - slices[0]
        if self.version >= 4 and self.slice_mm:  # as many model slices as the kept ones span at slice_mm
            depth = max(1, round(depth * spacing[2] / self.slice_mm))
        elif self.version >= 4:  # ... at the model's pixel spacing
            depth = max(1, round(depth * spacing[2] * self.image_size / self.fov_mm))
        return Geometry(shape, tuple(tuple(float(v) for v in row) for row in transform), model_shape,
                        spacing, window, slices, depth)

    def prepare(self, image: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """Scan on its own grid -> (Z, S, S) float32 normalised model slices, and the geometry to go back."""
        geo = self.geometry(affine, image.shape)
        h, w = geo.window
        oriented = geo.to_model(np.asarray(image, dtype=np.float32))  # a view, (X', Y', Z)
        if self.version == 1:
            t = _slices_first(oriented)
        else:  # only the field of view is copied and normalised: 2.6x fewer voxels on a 320 px scan
            t = _slices_first(oriented[_center_crop(oriented.shape[0], h), _center_crop(oriented.shape[1], w),
                                       slice(*geo.slices)])
        lo, hi, mean, std = zscore_clipped(t)
        np.clip(t, np.float32(lo), np.float32(hi), out=t)  # in place: t is this function's own copy
        t -= np.float32(mean)
        t /= np.float32(std)
        floor = (lo - mean) / std  # what a voxel outside the scan looks like: the darkest clipped value
        t = _center_fit(t, h, w, floor)
        if self.version == 1:
            side = max(h, w)
            t = _center_fit(t, side, side, floor)
        size = (self.image_size, self.image_size)
        if self.version >= 2 and t.shape[-2] > size[0] and t.shape[-1] > size[1]:
            # a finer scan: each model pixel is the mean of the voxels it covers, as a coarser acquisition sees it
            t = resize(t, size, "area")
        elif tuple(t.shape[-2:]) != size:
            t = resize(t, size, "bilinear_antialias")
        return np.ascontiguousarray(_resample_slices(t, geo.depth), dtype=np.float32), geo

    def prepare_label(self, label: np.ndarray, geo: Geometry) -> np.ndarray:
        """A label on the input grid -> (Z, S, S) uint8 at model resolution (for training)."""
        t = _slices_first(geo.to_model(np.asarray(label, dtype=np.float32))[..., slice(*geo.slices)])
        h, w = geo.window
        t = _center_fit(t, h, w)
        if self.version == 1:
            t = _center_fit(t, max(h, w), max(h, w))
        if tuple(t.shape[-2:]) != (self.image_size, self.image_size):
            t = resize(t, (self.image_size, self.image_size), "area")
        return (_resample_slices(t, geo.depth) >= 0.5).astype(np.uint8)

    # ------------------------------------------------------------ inverse

    def restore(self, probs: np.ndarray, geo: Geometry) -> np.ndarray:
        """(Z, S, S) probabilities -> float32 (X, Y, Z) on the input's own voxel grid (zero outside the
        field of view)."""
        h, w = geo.window
        t = np.asarray(probs, dtype=np.float32)
        weights = geo.slice_weights
        if weights is not None:
            t = np.tensordot(weights, t, axes=(1, 0))
        size = (max(h, w),) * 2 if self.version == 1 else (h, w)
        if tuple(t.shape[-2:]) != size:
            t = resize(t, size, "bilinear")
        t = _center_fit(t, h, w)
        # the window goes straight into a zeroed grid in (X', Y', Z) order: no padded copy, no transposed copy
        out = np.zeros(geo.model_shape, dtype=np.float32)
        (src_x, dst_x), (src_y, dst_y) = _center_overlap(h, out.shape[0]), _center_overlap(w, out.shape[1])
        np.moveaxis(out, 2, 0)[slice(*geo.slices), dst_x, dst_y] = t[:, src_x, src_y]
        return np.ascontiguousarray(geo.to_input(out), dtype=np.float32)

    def model_grid(self, array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """An input-grid array shown in the model's orientation (for viewers), with its geometry."""
        geo = self.geometry(affine, array.shape)
        return geo.to_model(array), geo


def stack_context(slices, z: int, context: int):
    """Channels for slice z: itself and `context` neighbours each side (2.5D), edges clamped."""
    idx = [min(max(z + d, 0), len(slices) - 1) for d in range(-context, context + 1)]
    return slices[idx]


def _resample_slices(t: np.ndarray, depth: int) -> np.ndarray:
    """(Z, S, S) -> (depth, S, S) along the slice axis, as `prepare` resamples in-plane: each model slice the mean
    of the slices it covers when the scan is finer, interpolated when it is coarser; unchanged when depth == Z."""
    if len(t) == depth:
        return t
    weights = resize_weights(len(t), depth, "area" if len(t) > depth else "bilinear_antialias")
    return np.tensordot(weights, np.asarray(t, dtype=np.float32), axes=(1, 0))


def _slices_first(volume_xyz: np.ndarray) -> np.ndarray:
    """(X, Y, Z) -> a new C-ordered (Z, X, Y) float32 array (always a copy: callers modify it in place)."""
    return np.array(np.moveaxis(volume_xyz, 2, 0), dtype=np.float32, order="C")


def _center_crop(n: int, size: int) -> slice:
    """The indices kept of an axis of length n centre-fitted to `size`."""
    start = max((n - size) // 2, 0)
    return slice(start, start + size)


def _center_overlap(n_src: int, n_dst: int) -> tuple[slice, slice]:
    """(source, destination) indices when an axis of length n_src is centre-fitted to n_dst: cropped around the
    centre when longer, placed at offset (n_dst - n_src) // 2 when shorter. The one owner of this rule."""
    if n_src >= n_dst:
        return _center_crop(n_src, n_dst), slice(0, n_dst)
    start = (n_dst - n_src) // 2
    return slice(0, n_src), slice(start, start + n_src)


def _center_fit(t: np.ndarray, h: int, w: int, value: float = 0.0) -> np.ndarray:
    """Crop or pad the last two axes around the centre to (h, w) (_center_overlap's rule). Fitting back to the
    original size with the same rule restores every pixel that was kept."""
    (src_y, dst_y), (src_x, dst_x) = _center_overlap(t.shape[-2], h), _center_overlap(t.shape[-1], w)
    t = t[..., src_y, src_x]
    if t.shape[-2:] == (h, w):
        return t
    out = np.full(t.shape[:-2] + (h, w), value, dtype=t.dtype)
    out[..., dst_y, dst_x] = t
    return out


RESIZE_MODES = ("area", "bilinear", "bilinear_antialias")


def resize(stack: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resample the last two axes of a (..., H, W) float array to `size`, separably: rows, then columns."""
    rows = resize_weights(stack.shape[-2], size[0], mode)
    cols = resize_weights(stack.shape[-1], size[1], mode)
    return np.matmul(np.matmul(rows, np.asarray(stack, dtype=np.float32)), cols.T)


@lru_cache(maxsize=64)
def resize_weights(n_in: int, n_out: int, mode: str) -> np.ndarray:
    """(n_out, n_in) interpolation matrix with torch.nn.functional.interpolate's semantics
    (align_corners=False; the scale in float32, as torch computes it)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {mode!r}")
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    scale = np.float32(n_in) / np.float32(n_out)
    for i in range(n_out):
        if mode == "area":  # adaptive average pooling: the input cells that output cell i overlaps
            start, end = (i * n_in) // n_out, -(-(i + 1) * n_in // n_out)
            weights[i, start:end] = 1.0 / (end - start)
        elif mode == "bilinear":  # the two nearest input pixels, edges clamped
            src = max(float(scale * np.float32(i + 0.5) - np.float32(0.5)), 0.0)
            i0 = int(src)
            i1 = i0 + (i0 < n_in - 1)
            weights[i, i0] += 1.0 - (src - i0)
            weights[i, i1] += src - i0
        else:  # antialiased: a triangle filter stretched by the scale when shrinking (as PIL)
            center = float(scale * np.float32(i + 0.5))
            support, inverse = (float(scale), 1.0 / float(scale)) if scale >= 1.0 else (1.0, 1.0)
            lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
            taps = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) * inverse))
            weights[i, lo:hi] = taps / taps.sum()
    return weights.astype(np.float32)
