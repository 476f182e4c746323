"""Stage 4: segment whole volumes with a checkpoint and write masks in the scan's own space."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lasegm.data import Volume, load_volume
from lasegm.models import checkpoint_recipe, load_checkpoint
from lasegm.postprocess import Postprocessing, plausibility_warnings
from lasegm.preprocess import stack_context
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


class _Thresholded:
    """probabilities() -> mask with the post-processing record."""

    post: Postprocessing

    def segment(self, vol: Volume, progress=None) -> np.ndarray:
        """uint8 mask on the scan's own voxel grid."""
        return self.post.binarize(self.probabilities(vol, progress))

    @property
    def arch(self) -> str:
        return self.config["arch"]


class Segmenter(_Thresholded):
    """A loaded checkpoint plus the exact preprocessing it was trained with."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", expected_arch: str | None = None,
                 largest_component: bool | None = None, flip_tta: bool | None = None):
        """largest_component / flip_tta override the checkpoint's recorded post-processing."""
        self.device = resolve_device(device)
        self.source = str(checkpoint)
        self.model, self.config = load_checkpoint(checkpoint, expected_arch=expected_arch, device=self.device)
        self.pre, recorded = checkpoint_recipe(self.config, Path(checkpoint) / "config.json")
        self.post = recorded.override(largest_component=largest_component, flip_tta=flip_tta)

    def probabilities(self, vol: Volume, progress=None) -> torch.Tensor:
        """Foreground probability on the scan's own grid."""
        slices, geometry = self.pre.prepare(vol.image, vol.affine)
        probs = predict_slices(self.model, slices, self.pre.context, self.device, tta=self.post.flip_tta,
                               progress=progress)
        return self.pre.restore(probs, geometry)


class Ensemble(_Thresholded):
    """Mean foreground probability of several checkpoints, each run with its own preprocessing and
    mapped back to the scan's grid first, so models of different input sizes and windows combine."""

    def __init__(self, checkpoints, device: str = "auto", largest_component: bool | None = None,
                 flip_tta: bool | None = None):
        """checkpoints: folders, or Segmenters already loaded (a server shares them with its single models)."""
        # members return raw probabilities; post-processing runs once, on the averaged map
        self.members = [c if isinstance(c, Segmenter) else Segmenter(c, device=device, flip_tta=flip_tta)
                        for c in checkpoints]
        self.device = self.members[0].device
        self.source = [m.source for m in self.members]
        self.post = Postprocessing(
            largest_component=all(m.post.largest_component for m in self.members),
            flip_tta=all(m.post.flip_tta for m in self.members)).override(largest_component=largest_component)
        self.pre = self.members[0].pre  # for display: the first member's orientation
        splits = {m.config.get("split_sha256", "") for m in self.members}
        self.config = {"arch": "+".join(m.arch for m in self.members),
                       "split_sha256": splits.pop() if len(splits) == 1 else "members differ"}

    def probabilities(self, vol: Volume, progress=None) -> torch.Tensor:
        return torch.stack([m.probabilities(vol, progress) for m in self.members]).mean(0)


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
    mask = seg.segment(vol, progress)
    seconds = time.perf_counter() - t0
    bar.close()
    write_mask(mask, vol, output)
    result = {"output": str(output), "seconds": seconds, "volume_ml": float(mask.sum() * vol.voxel_ml),
              "warnings": plausibility_warnings(mask, vol.voxel_ml)}
    if vol.label is not None:
        result.update(case_metrics(mask, vol.label, vol.spacing))
    if overlay or animation:
        from lasegm import viz

        # figures in the model's orientation, the way the model saw the scan
        image, geometry = seg.pre.model_grid(vol.image, vol.affine)
        shown = geometry.to_model(mask), None if vol.label is None else geometry.to_model(vol.label)
        if overlay:
            viz.save_grid(image, shown[0], overlay, truth=shown[1], title=Path(input_path).name)
        if animation:
            viz.save_animation(image, shown[0], animation, truth=shown[1])
    return result
