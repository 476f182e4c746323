"""Stage 4: segment whole volumes with a checkpoint and write masks in the scan's own space."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from lasegm.data import Volume, load_volume, normalize, restore_slices, stack_context, to_model_slices, window_pixels
from lasegm.models import load_checkpoint
from lasegm.utils import atomic_path, resolve_device


@torch.no_grad()
def predict_slices(model: torch.nn.Module, slices: np.ndarray, context: int, device: torch.device,
                   batch_size: int = 16, tta: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Foreground probability for every slice of a (Z, S, S) normalised stack -> (Z, S, S) on CPU."""
    model.eval()
    vol = torch.from_numpy(np.asarray(slices, dtype=np.float32))
    out = torch.empty(vol.shape, dtype=torch.float32)
    n = len(vol)
    for start in range(0, n, batch_size):
        zs = range(start, min(start + batch_size, n))
        x = torch.stack([stack_context(vol, z, context) for z in zs]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x).float()
            if tta:  # average with the left-right flipped prediction
                logits = 0.5 * (logits + model(x.flip(-1)).float().flip(-1))
        out[start : start + len(zs)] = torch.sigmoid(logits[:, 0]).cpu()
        if progress:
            progress(min(start + batch_size, n), n)
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component: the atrium is one structure."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (labels == sizes.argmax()).astype(mask.dtype)


class _Thresholded:
    """probabilities() -> mask: threshold, then the recorded post-processing."""

    threshold: float
    keep_largest: bool

    def segment(self, image_xyz: np.ndarray, spacing, progress=None) -> np.ndarray:
        """uint8 mask with the scan's shape."""
        return self.binarize(self.probabilities(image_xyz, spacing, progress))

    def binarize(self, probs_xyz: torch.Tensor) -> np.ndarray:
        mask = (probs_xyz >= self.threshold).numpy().astype(np.uint8)
        return largest_component(mask) if self.keep_largest else mask


class Segmenter(_Thresholded):
    """A loaded checkpoint plus the exact preprocessing it was trained with."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", expected_arch: str | None = None,
                 largest_component: bool | None = None, flip_tta: bool | None = None):
        """largest_component / flip_tta override the checkpoint's recorded post-processing."""
        self.device = resolve_device(device)
        self.source = str(checkpoint)
        self.model, self.config = load_checkpoint(checkpoint, expected_arch=expected_arch, device=self.device)
        pre = self.config["preprocessing"]
        self.image_size, self.context = int(pre["image_size"]), int(pre.get("context", 0))
        self.fov_mm = float(pre.get("fov_mm", 0.0))
        post = self.config.get("postprocessing", {})
        self.threshold = float(post.get("threshold", 0.5))
        self.keep_largest = bool(post.get("largest_component", False) if largest_component is None
                                 else largest_component)
        self.tta = bool(post.get("flip_tta", False) if flip_tta is None else flip_tta)

    @property
    def arch(self) -> str:
        return self.config["arch"]

    def probabilities(self, image_xyz: np.ndarray, spacing, progress=None) -> torch.Tensor:
        window = window_pixels(self.fov_mm, spacing, image_xyz.shape)
        slices = to_model_slices(normalize(image_xyz), self.image_size, window=window)
        probs = predict_slices(self.model, slices, self.context, self.device, tta=self.tta, progress=progress)
        return restore_slices(probs, image_xyz.shape, window)



class Ensemble(_Thresholded):
    """Mean foreground probability of several checkpoints, each run with its own preprocessing and
    mapped back to the scan's grid first, so models of different input sizes and windows combine."""

    def __init__(self, checkpoints, device: str = "auto", largest_component: bool | None = None,
                 flip_tta: bool | None = None):
        # members return raw probabilities; post-processing runs once, on the averaged mask
        self.members = [Segmenter(c, device=device, largest_component=False, flip_tta=flip_tta)
                        for c in checkpoints]
        self.device = self.members[0].device
        self.source = [m.source for m in self.members]
        self.threshold = 0.5
        recorded = all(m.config.get("postprocessing", {}).get("largest_component", False) for m in self.members)
        self.keep_largest = recorded if largest_component is None else bool(largest_component)
        self.tta = all(m.tta for m in self.members)
        splits = {m.config.get("split_sha256", "") for m in self.members}
        self.config = {"arch": "+".join(m.arch for m in self.members),
                       "split_sha256": splits.pop() if len(splits) == 1 else "members differ"}

    @property
    def arch(self) -> str:
        return self.config["arch"]

    def probabilities(self, image_xyz: np.ndarray, spacing, progress=None) -> torch.Tensor:
        return torch.stack([m.probabilities(image_xyz, spacing, progress) for m in self.members]).mean(0)


def load_segmenter(checkpoints, device: str = "auto", largest_component: bool | None = None,
                   flip_tta: bool | None = None) -> Segmenter | Ensemble:
    """One checkpoint folder (or a list of one) -> Segmenter; several -> their Ensemble."""
    paths = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if len(paths) == 1:
        return Segmenter(paths[0], device=device, largest_component=largest_component, flip_tta=flip_tta)
    return Ensemble(paths, device=device, largest_component=largest_component, flip_tta=flip_tta)


def write_mask(mask: np.ndarray, like: Volume, path: str | Path) -> Path:
    """Save a uint8 mask with the reference scan's affine and header (opens over it in any viewer)."""
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(mask.astype(np.uint8), like.affine, header)
    img.header.set_slope_inter(1, 0)
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def run_predict(checkpoint, input_path, output, label=None, overlay=None, animation=None,
                device="auto", quiet=False, largest_component=None, flip_tta=None) -> dict:
    from tqdm import tqdm

    from lasegm import LasegmError
    from lasegm.metrics import case_metrics

    if not str(output).endswith((".nii", ".nii.gz")):
        raise LasegmError(f"{output}: output must end in .nii or .nii.gz")
    seg = load_segmenter(checkpoint, device=device, largest_component=largest_component, flip_tta=flip_tta)
    vol = load_volume(input_path, label)
    bar = tqdm(total=vol.image.shape[2], desc="segment", unit="slice", disable=quiet)

    def progress(done, total):
        bar.n = done
        bar.refresh()

    t0 = time.perf_counter()
    mask = seg.segment(vol.image, vol.spacing, progress)
    seconds = time.perf_counter() - t0
    bar.close()
    write_mask(mask, vol, output)
    result = {"output": str(output), "seconds": seconds, "volume_ml": float(mask.sum() * vol.voxel_ml)}
    if vol.label is not None:
        result.update(case_metrics(mask, vol.label, vol.spacing))
    if overlay or animation:
        from lasegm import viz

        norm = normalize(vol.image)
        if overlay:
            viz.save_grid(norm, mask, overlay, truth=vol.label, title=Path(input_path).name)
        if animation:
            viz.save_animation(norm, mask, animation, truth=vol.label)
    return result
