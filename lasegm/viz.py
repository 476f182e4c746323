"""Figures: slice overlays, grids, animations through a volume and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import imageio.v3 as iio
import matplotlib.pyplot as plt
import numpy as np
from skimage.segmentation import find_boundaries

from lasegm.utils import atomic_path

PRED_RGB = np.array([255, 60, 40], dtype=np.float32)  # filled prediction
TRUTH_RGB = np.array([40, 255, 90], dtype=np.uint8)  # ground-truth contour
MODES = ("overlay", "contour", "error map")
# contour and error-map colours: Okabe-Ito, readable with every common colour-vision deficiency
CONTOUR_PRED_RGB, CONTOUR_TRUTH_RGB = (213, 94, 0), (0, 158, 115)
TP_RGB, FP_RGB, FN_RGB = (0, 158, 115), (230, 159, 0), (86, 180, 233)
ERROR_LEGEND = "error map: bluish green = true positive, orange = false positive, sky blue = false negative"


def to_uint8(slice_2d: np.ndarray, window: tuple[float, float] | None = None) -> np.ndarray:
    lo, hi = window if window else np.percentile(slice_2d, (1, 99))
    return (np.clip((slice_2d - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def overlay_rgb(image_2d: np.ndarray, pred_2d: np.ndarray | None = None, truth_2d: np.ndarray | None = None,
                alpha: float = 0.45, window: tuple[float, float] | None = None, mode: str = "overlay") -> np.ndarray:
    """RGB uint8 picture of one slice. overlay: prediction filled in red, ground truth outlined in green;
    contour: both outlined; error map: true / false positive and false negative filled (needs the truth,
    else it draws the overlay).

    Arrays are (X, Y) as stored in NIfTI; they are transposed so the picture shows rows = Y.
    """
    gray = to_uint8(image_2d, window).T
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    pred = None if pred_2d is None else pred_2d.T.astype(bool)
    truth = None if truth_2d is None else truth_2d.T.astype(bool)
    if mode == "error map" and pred is not None and truth is not None:
        for region, colour in ((pred & truth, TP_RGB), (pred & ~truth, FP_RGB), (~pred & truth, FN_RGB)):
            rgb[region] = (1 - alpha) * rgb[region] + alpha * np.array(colour, np.float32)
    elif mode == "contour" and pred is not None:
        rgb[find_boundaries(pred, mode="inner")] = CONTOUR_PRED_RGB
        if truth is not None:
            rgb[find_boundaries(truth, mode="inner")] = CONTOUR_TRUTH_RGB
    else:
        if pred is not None:
            rgb[pred] = (1 - alpha) * rgb[pred] + alpha * PRED_RGB
        if truth is not None:
            rgb[find_boundaries(truth, mode="inner")] = TRUTH_RGB
    return np.flipud(rgb.astype(np.uint8))  # radiological display: first Y row at the bottom


def informative_slices(mask: np.ndarray, truth: np.ndarray | None, n: int) -> list[int]:
    """n slice indices spread over the range where either mask has atrium (or the whole volume)."""
    fg = mask.astype(bool) | (truth.astype(bool) if truth is not None else False)
    zs = np.flatnonzero(fg.any(axis=(0, 1)))
    lo, hi = (zs[0], zs[-1]) if zs.size else (0, mask.shape[2] - 1)
    return sorted(set(np.linspace(lo, hi, n).round().astype(int).tolist()))


def save_grid(image: np.ndarray, mask: np.ndarray | None, path: str | Path, truth: np.ndarray | None = None,
              title: str = "", n: int = 12) -> Path:
    zs = informative_slices(mask if mask is not None else truth, truth if mask is not None else None, n)
    cols = 4
    rows = int(np.ceil(len(zs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, z in zip(axes.ravel(), zs):
        ax.imshow(overlay_rgb(image[..., z], None if mask is None else mask[..., z],
                              None if truth is None else truth[..., z]))
        ax.set_title(f"slice {z}", fontsize=9)
    legend = "red: prediction" if mask is not None else ""
    if truth is not None:
        legend += ("; " if legend else "") + "green: ground truth"
    fig.suptitle(f"{title}  ({legend})" if title else legend, fontsize=11)
    return save_figure(fig, path, dpi=80)


def save_animation(image: np.ndarray, mask: np.ndarray, path: str | Path, truth: np.ndarray | None = None,
                   fps: int = 10) -> Path:
    """GIF through every slice of the volume with the overlay."""
    frames = [overlay_rgb(image[..., z], mask[..., z], None if truth is None else truth[..., z])
              for z in range(image.shape[2])]
    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.stack(frames), duration=1000 / fps, loop=0)
    return path


def save_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    validated = [h for h in history if "val_loss" in h]  # every --val_every epochs; none when trained on all folds
    val_epochs = [h["epoch"] for h in validated]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    if validated:
        ax_loss.plot(val_epochs, [h["val_loss"] for h in validated], label="val")
    ax_loss.set(xlabel="epoch", ylabel="loss (Dice + BCE)", title="loss")
    ax_dice.plot(epochs, [h["train_dice"] for h in history], label="train (slice Dice, batches)")
    if validated:
        ax_dice.plot(val_epochs, [h["val_dice_slice"] for h in validated], label="val slice Dice")
        ax_dice.plot(val_epochs, [h["val_dice_3d"] for h in validated], label="val 3D Dice (per patient)", lw=2)
    ax_dice.set(xlabel="epoch", ylabel="Dice", ylim=(0, 1), title="Dice")
    for ax in (ax_loss, ax_dice):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=90)


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return path


def surface_mesh(mask: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangle surface of a binary mask (marching cubes at 0.5): vertices in mm on the mask's voxel axes,
    faces, and vertex normals (viewers shade with them)."""
    from scipy import ndimage
    from skimage import measure

    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.float32)
    box = boxes[0]
    pad = 3  # a closed surface even where the mask touches the box, with room for the smoothing
    sub = np.pad(mask[box].astype(np.float32), pad)
    # a light blur (1 mm) before the 0.5 level: a smooth surface instead of voxel steps, the same volume
    sub = ndimage.gaussian_filter(sub, sigma=[1.0 / float(s) for s in spacing])
    verts, faces, normals, _ = measure.marching_cubes(sub, 0.5, spacing=tuple(float(s) for s in spacing))
    offset = np.array([s.start - pad for s in box], dtype=np.float32) * np.asarray(spacing, dtype=np.float32)
    # skimage's normals already point out of the mask (down the gradient), but its faces wind inwards: viewers
    # light and cull by the winding, so the faces are turned and the normals kept
    return (verts + offset).astype(np.float32), faces[:, ::-1].astype(np.int64), normals.astype(np.float32)


ATRIUM_RGBA = (220, 60, 50, 255)  # the overlays' prediction red
TRUTH_RGBA = (40, 200, 90, 255)  # the overlays' ground-truth green


def _trimesh(verts: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None, rgba=ATRIUM_RGBA):
    import trimesh

    mesh = trimesh.Trimesh(vertices=verts, faces=faces, vertex_normals=normals, process=False)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.tile(np.array(rgba, np.uint8), (len(verts), 1)))
    return mesh


def mesh_volume_ml(verts: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed triangle mesh, in mL for vertices in mm."""
    return float(abs(_trimesh(verts, faces).volume) / 1000.0)


def save_mesh(verts: np.ndarray, faces: np.ndarray, normals: np.ndarray, path: str | Path,
              rgba=ATRIUM_RGBA) -> Path:
    """A coloured surface as .glb (gr.Model3D, web viewers), .obj or .stl (3D Slicer, Blender, MeshLab)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _trimesh(verts, faces, normals, rgba).export(str(tmp), file_type=path.suffix.lstrip("."))
    return path
