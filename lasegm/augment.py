"""Training augmentation: lasegm's in-plane pipeline for the 2D models (albumentations, per sample in the loader),
and nnU-Net's, per batch on the training device: its 3D one for the 3D model's slabs (--augment_3d), its 2D one for
the 2D models' slices (--augment_2d=nnunet).

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


class NnUNetAugmentation:
    """nnU-Net's training augmentation (batchgenerators' defaults) of a batch on its own device (a GPU does it in
    milliseconds; in a loader process it would cost a CPU core per training): a (B, C, D, H, W) batch of 3D slabs,
    or with `planar` a (B, C, H, W) batch of 2D slices, and its mask (B, 1, ...).

    Per sample: rotation (each +-30 deg about all three axes; planar: in-plane only, +-180 deg as nnU-Net's 2D
    configuration turns a square patch; p 0.2), scaling (0.7-1.4, p 0.2), elastic deformation (3D, p 0.2; nnU-Net
    v2 has it off), then on the image Gaussian noise (variance up to 0.1, p 0.1), Gaussian blur (sigma 0.5-1, p
    0.2), brightness (x 0.75-1.25, p 0.15), contrast (p 0.15), low resolution (down by 0.5-1 with nearest
    neighbours and back, p 0.25), gamma of the inverted image (p 0.1) and gamma (p 0.3), both 0.7-1.5 on the image
    rescaled to [0, 1] with its mean and std kept; with mirror, flips along each axis (p 0.5). A sample's channels
    (its neighbouring slices in 2.5D) share each draw. The mask is resampled linearly and thresholded at 0.5.
    Seeded: one seed, one sequence; a transform with p 0 draws nothing."""

    def __init__(self, seed: int = 0, mirror: bool = False, planar: bool = False, p_rotate: float = 0.2,
                 max_degrees: float | None = None, p_scale: float = 0.2, scale: tuple[float, float] = (0.7, 1.4),
                 p_elastic: float | None = None, elastic_voxels: float = 4.0, p_noise: float = 0.1,
                 p_blur: float = 0.2, blur_sigma: tuple[float, float] = (0.5, 1.0), p_brightness: float = 0.15,
                 p_contrast: float = 0.15, p_lowres: float = 0.25, lowres_zoom: tuple[float, float] = (0.5, 1.0),
                 p_gamma_inverted: float = 0.1, p_gamma: float = 0.3, gamma: tuple[float, float] = (0.7, 1.5)):
        max_degrees = (180.0 if planar else 30.0) if max_degrees is None else max_degrees
        self.mirror, self.planar, self.p_rotate, self.max_rad, self.p_scale, self.scale = (
            mirror, planar, p_rotate, math.radians(max_degrees), p_scale, scale)
        self.p_elastic = (0.0 if planar else 0.2) if p_elastic is None else p_elastic
        self.elastic_voxels, self.p_noise, self.p_blur, self.blur_sigma = elastic_voxels, p_noise, p_blur, blur_sigma
        self.p_brightness, self.p_contrast, self.p_lowres, self.lowres_zoom = (
            p_brightness, p_contrast, p_lowres, lowres_zoom)
        self.p_gamma_inverted, self.p_gamma, self.gamma = p_gamma_inverted, p_gamma, gamma
        self.rng = torch.Generator().manual_seed(seed)  # every draw on the CPU: the same sequence on any device

    def _u(self, *shape, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=self.rng, dtype=torch.float64)

    def _drawn(self, p: float) -> bool:
        return p > 0 and float(self._u(1)) < p

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.planar:  # a slice is a slab one voxel deep, turned about the depth axis only
            x, y = self._augment(x.unsqueeze(2), y.unsqueeze(2))
            return x.squeeze(2), y.squeeze(2)
        return self._augment(x, y)

    def _augment(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, shape = x.shape[0], tuple(x.shape[2:])
        x, y = self.spatial(x, y, b, shape)
        if self.mirror:
            for axis in (2, 3, 4):
                if shape[axis - 2] == 1:  # a slice's depth
                    continue
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
                angles = self._u(1 if self.planar else 3, low=-self.max_rad, high=self.max_rad)
                if self.planar:  # about the depth axis only: in the slice's own plane
                    angles = torch.cat([angles, torch.zeros(2, dtype=torch.float64)])
                matrices[i] = rotation_matrix(angles)
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
            v = x[i].float()  # (C, D, H, W)
            if self._drawn(self.p_noise):
                std = math.sqrt(float(self._u(1, low=0.0, high=0.1)))
                v = v + std * torch.randn(v.shape, generator=self.rng).to(v.device)
            if self._drawn(self.p_blur):
                v = gaussian_blur(v, float(self._u(1, low=self.blur_sigma[0], high=self.blur_sigma[1])))
            if self._drawn(self.p_brightness):
                v = v * float(self._u(1, low=0.75, high=1.25))
            if self._drawn(self.p_contrast):  # about the mean, within the sample's own range
                mean, lo, hi = v.mean(), v.min(), v.max()
                v = ((v - mean) * float(self._u(1, low=0.75, high=1.25)) + mean).clamp(lo, hi)
            if self._drawn(self.p_lowres):
                v = low_resolution(v, float(self._u(1, low=self.lowres_zoom[0], high=self.lowres_zoom[1])))
            if self._drawn(self.p_gamma_inverted):
                v = -gamma_keeping_stats(-v, float(self._u(1, low=self.gamma[0], high=self.gamma[1])))
            if self._drawn(self.p_gamma):
                v = gamma_keeping_stats(v, float(self._u(1, low=self.gamma[0], high=self.gamma[1])))
            x[i] = v.to(x.dtype)
        return x


def gamma_keeping_stats(v: torch.Tensor, g: float) -> torch.Tensor:
    """v ** g on v rescaled to [0, 1] (z-scored values are negative), then v's mean and std restored."""
    mean, std, lo, hi = v.mean(), v.std(), v.min(), v.max()
    v = ((v - lo) / (hi - lo).clamp_min(1e-7)) ** g * (hi - lo) + lo
    return (v - v.mean()) / v.std().clamp_min(1e-7) * std + mean


def gaussian_blur(v: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, D, H, W) blurred along every spatial axis longer than one voxel (a slice is not blurred across its
    neighbours), separably, edges replicated."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=v.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = v.unsqueeze(1)  # (C, 1, D, H, W): each channel on its own
    for axis in range(3):
        if out.shape[2 + axis] == 1:
            continue
        shape, pad = [1, 1, 1, 1, 1], [0] * 6
        shape[2 + axis] = len(kernel)
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius  # F.pad lists the last axis first
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out.squeeze(1)


def low_resolution(v: torch.Tensor, zoom: float) -> torch.Tensor:
    """(C, D, H, W) sampled down by `zoom` with nearest neighbours and back up (bicubic in a slice, trilinear in
    a slab): an image of a coarser scan on the same grid. Axes one voxel long are kept."""
    shape = v.shape[1:]
    if shape[0] == 1:  # a slice
        small = [max(1, round(s * zoom)) for s in shape[1:]]
        down = F.interpolate(v, size=small, mode="nearest")
        return F.interpolate(down, size=shape[1:], mode="bicubic", align_corners=False)
    small = [max(1, round(s * zoom)) for s in shape]
    down = F.interpolate(v.unsqueeze(0), size=small, mode="nearest")
    return F.interpolate(down, size=shape, mode="trilinear", align_corners=False)[0]
