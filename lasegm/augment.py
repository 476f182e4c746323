"""Training augmentation: the 2D models' in-plane pipeline (albumentations, per sample in the loader) and the 3D
model's volumetric one (nnU-Net's transforms, per batch of slabs on the training device).

Neither flips by default: left/right and up/down are anatomically fixed in these scans, and random flips cost 0.10
out of fold at the CPU schedule (research_log.md, mirroring). nnU-Net mirrors anyway (mirror=True), which is what
makes its mirrored test-time augmentation help rather than hurt.
"""

from __future__ import annotations

import math
import random

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F


def augmentation(seed: int | None = None, mirror: bool = False) -> A.Compose:
    """The 2D models' in-plane augmentation of one (H, W, C) sample and its mask. No gamma: slices are z-scored
    (negative values), where a power transform gives NaN (the 3D one rescales first, as nnU-Net does)."""
    aug = A.Compose([
        A.Affine(scale=(0.85, 1.15), rotate=(-15, 15), translate_percent=(-0.08, 0.08), p=0.7),
        A.ElasticTransform(alpha=20, sigma=5, p=0.15),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.GaussNoise(std_range=(0.0, 0.05), p=0.2),
        *([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)] if mirror else []),
    ])
    reseed(aug, seed)
    return aug


def reseed(aug: A.Compose, seed: int | None) -> None:
    """One random stream shared by every transform of `aug`, so that their draws are independent.

    albumentations 2.0's Compose(seed=s) seeds each transform with the same s: all transforms then draw the
    same numbers (both flips always together, i.e. only 180-degree turns; elastic only with affine, noise and
    brightness). An own RNG without a seed would make reruns of one command differ."""
    aug.set_random_state(np.random.default_rng(seed), random.Random(seed))


def seed_loader_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: each worker process gets its own augmentation stream (a forked worker
    would otherwise repeat the parent's, and every worker the same), derived from the loader's seed."""
    info = torch.utils.data.get_worker_info()
    if getattr(info.dataset, "transform", None) is not None:
        reseed(info.dataset.transform, info.seed % 2**32)


def rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(3,) angles in radians about the depth, height and width axes -> the (3, 3) rotation in (d, h, w)."""
    out = torch.eye(3, dtype=torch.float64)
    for axis, angle in enumerate(angles.tolist()):
        a, b = [i for i in range(3) if i != axis]  # the plane this angle turns
        r = torch.eye(3, dtype=torch.float64)
        r[a, a] = r[b, b] = math.cos(angle)
        r[a, b], r[b, a] = -math.sin(angle), math.sin(angle)
        out = r @ out
    return out


def sampling_grid(matrices: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, 3, 3) maps in voxel units (d, h, w) about the centre, from output voxel to input voxel -> the (B, D, H,
    W, 3) grid for F.grid_sample. Voxels are taken as cubes (1.25 x 1.25 x 1.37 mm here: close enough for an
    augmentation), so a rotation stays a rotation in a slab whose depth differs from its width; affine_grid's
    normalised coordinates would shear it."""
    size = torch.tensor(shape[::-1], dtype=torch.float64)  # grid order is (x, y, z) = (w, h, d)
    flip = torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.float64)  # (d, h, w) <-> (w, h, d)
    xyz = flip @ matrices.to(torch.float64) @ flip
    theta = torch.diag(2 / size) @ xyz @ torch.diag(size / 2)  # normalised -> voxels -> map -> normalised
    theta = torch.cat([theta, torch.zeros(len(matrices), 3, 1, dtype=torch.float64)], dim=2)
    return F.affine_grid(theta.float(), (len(matrices), 1, *shape), align_corners=False)


class VolumeAugmentation:
    """nnU-Net's 3D training augmentation (batchgenerators' defaults for 3d_fullres) for a (B, C, D, H, W) batch of
    slabs and its (B, 1, D, H, W) mask, on the batch's own device (a GPU does it in milliseconds; in a loader
    process it would cost a CPU core per training). Per sample: rotation about all three axes (each +-30 deg, p 0.2),
    scaling (0.7-1.4, p 0.2), elastic deformation (p 0.2), then on the image gamma (0.7-1.5, p 0.3, on the image
    rescaled to [0, 1], mean and std kept), brightness (x 0.75-1.25, p 0.15), contrast (p 0.15) and Gaussian noise
    (variance up to 0.1, p 0.1); with mirror, flips along each axis (p 0.5). The mask is resampled linearly and
    thresholded at 0.5. Not here: blur and the low-resolution simulation. Seeded: one seed, one sequence."""

    def __init__(self, seed: int = 0, mirror: bool = False, p_rotate: float = 0.2, max_degrees: float = 30.0,
                 p_scale: float = 0.2, scale: tuple[float, float] = (0.7, 1.4), p_elastic: float = 0.2,
                 elastic_voxels: float = 4.0, p_gamma: float = 0.3, gamma: tuple[float, float] = (0.7, 1.5),
                 p_brightness: float = 0.15, p_contrast: float = 0.15, p_noise: float = 0.1):
        self.mirror, self.p_rotate, self.max_rad, self.p_scale, self.scale = (
            mirror, p_rotate, math.radians(max_degrees), p_scale, scale)
        self.p_elastic, self.elastic_voxels, self.p_gamma, self.gamma = p_elastic, elastic_voxels, p_gamma, gamma
        self.p_brightness, self.p_contrast, self.p_noise = p_brightness, p_contrast, p_noise
        self.rng = torch.Generator().manual_seed(seed)  # every draw on the CPU: the same sequence on any device

    def _u(self, *shape, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self.rng, dtype=torch.float64)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, shape = x.shape[0], tuple(x.shape[2:])
        x, y = self.spatial(x, y, b, shape)
        if self.mirror:
            for axis in (2, 3, 4):
                flip = (self._u(b) < 0.5).to(x.device)
                x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(axis), x)
                y = torch.where(flip.view(-1, 1, 1, 1, 1), y.flip(axis), y)
        return self.intensity(x, b), y

    def spatial(self, x, y, b: int, shape: tuple[int, int, int]):
        rotate, scale, elastic = (self._u(b) < p for p in (self.p_rotate, self.p_scale, self.p_elastic))
        moved = rotate | scale | elastic
        if not moved.any():
            return x, y
        matrices = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
        for i in range(b):
            if rotate[i]:
                matrices[i] = rotation_matrix(self._u(3, low=-self.max_rad, high=self.max_rad))
            if scale[i]:  # the grid maps output to input: zoom by s samples 1/s of the input's extent
                matrices[i] = matrices[i] / self._u(1, low=self.scale[0], high=self.scale[1])
        grid = sampling_grid(matrices, shape).to(x.device)
        if elastic.any():  # a smooth random displacement: noise on a 4 x 4 x 4 lattice, interpolated
            coarse = torch.randn((b, 3, 4, 4, 4), generator=self.rng) * elastic.view(-1, 1, 1, 1, 1)
            field = F.interpolate(coarse.to(x.device), size=shape, mode="trilinear", align_corners=True)
            voxels = torch.tensor(shape[::-1], dtype=torch.float32, device=x.device)
            grid = grid + self.elastic_voxels * field.permute(0, 2, 3, 4, 1)[..., [2, 1, 0]] * 2 / voxels
        idx = moved.nonzero().flatten().to(x.device)  # only the moved samples are resampled: the others stay exact
        xs = F.grid_sample(x[idx].float(), grid[idx], mode="bilinear", padding_mode="zeros", align_corners=False)
        ys = F.grid_sample(y[idx].float(), grid[idx], mode="bilinear", padding_mode="zeros", align_corners=False)
        x, y = x.clone(), y.clone()
        x[idx], y[idx] = xs.to(x.dtype), (ys >= 0.5).to(y.dtype)
        return x, y

    def intensity(self, x: torch.Tensor, b: int) -> torch.Tensor:
        x = x.clone()
        for i in range(b):
            v = x[i]
            if self._u(1) < self.p_gamma:  # on [0, 1] (z-scored values are negative), then mean and std restored
                mean, std, lo, hi = v.mean(), v.std(), v.min(), v.max()
                g = float(self._u(1, low=self.gamma[0], high=self.gamma[1]))
                v = ((v - lo) / (hi - lo).clamp_min(1e-7)) ** g * (hi - lo) + lo
                v = (v - v.mean()) / v.std().clamp_min(1e-7) * std + mean
            if self._u(1) < self.p_brightness:
                v = v * float(self._u(1, low=0.75, high=1.25))
            if self._u(1) < self.p_contrast:  # about the mean, within the sample's own range
                mean, lo, hi = v.mean(), v.min(), v.max()
                v = ((v - mean) * float(self._u(1, low=0.75, high=1.25)) + mean).clamp(lo, hi)
            if self._u(1) < self.p_noise:
                std = math.sqrt(float(self._u(1, low=0.0, high=0.1)))
                v = v + std * torch.randn(v.shape, generator=self.rng).to(v.device)
            x[i] = v
        return x
