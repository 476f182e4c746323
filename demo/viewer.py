"""Pictures for the demo: three orthogonal planes of a scan in the model's orientation, at physical aspect,
with each model's result drawn as an overlay, a contour or an error map, one captioned panel per model.

Volumes are (X, Y, Z) on the model grid (lasegm.preprocess reoriented them); cheap enough to redraw on every
slider move (a few ms per panel).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lasegm.viz import overlay_rgb

PLANES = ("axial", "coronal", "sagittal")  # slices across the 3rd, 2nd and 1st axis of the model grid
DISPLAY_PX = 300  # each panel is at least this tall
CAPTION_PX, PANEL_GAP = 22, 6  # a caption bar above each panel, white columns between panels


def plane_axis(plane: str) -> int:
    return {"axial": 2, "coronal": 1, "sagittal": 0}[plane]


def plane_slice(volume: np.ndarray | None, plane: str, index: int) -> np.ndarray | None:
    """The 2D cut arranged as (columns axis, rows axis), the layout overlay_rgb draws."""
    if volume is None:
        return None
    axis = plane_axis(plane)
    index = int(min(max(int(index), 0), volume.shape[axis] - 1))
    return volume[(slice(None),) * axis + (index,)]  # a view: np.take would copy with a slow gather


def plane_spacing(spacing, plane: str) -> tuple[float, float]:
    """(column, row) pixel size in mm of a plane."""
    keep = [a for a in range(3) if a != plane_axis(plane)]
    return float(spacing[keep[0]]), float(spacing[keep[1]])


def physical_zoom(picture: np.ndarray, col_mm: float, row_mm: float, min_rows: int = DISPLAY_PX) -> np.ndarray:
    """Nearest-neighbour zoom to square millimetres on screen, at least min_rows tall (voxels stay crisp)."""
    rows, cols = zoom_indices(picture.shape[:2], col_mm, row_mm, min_rows)
    return picture[rows][:, cols]


def zoom_indices(shape, col_mm: float, row_mm: float, min_rows: int = DISPLAY_PX) -> tuple[np.ndarray, np.ndarray]:
    """For each screen row and column of a zoomed picture, the picture row / column it shows."""
    rows_mm, cols_mm = shape[0] * row_mm, shape[1] * col_mm
    px_per_mm = max(min_rows / rows_mm, 1.0 / min(col_mm, row_mm))
    rows = np.minimum((np.arange(round(rows_mm * px_per_mm)) / (px_per_mm * row_mm)).astype(int), shape[0] - 1)
    cols = np.minimum((np.arange(round(cols_mm * px_per_mm)) / (px_per_mm * col_mm)).astype(int), shape[1] - 1)
    return rows, cols


def voxel_at(state: dict, plane: str, index: int, x_px: int, y_px: int) -> tuple[int, int, int] | None:
    """The voxel (X, Y, Z of the model grid) under a click at (x_px, y_px) on a plane's picture, which may
    hold several panels side by side; None for a click on a caption or a gap. The inverse of render_plane."""
    axis = plane_axis(plane)
    keep = [a for a in range(3) if a != axis]
    size = [state["image"].shape[a] for a in keep]  # the cut is (first kept axis, second kept axis)
    col_mm, row_mm = plane_spacing(state["spacing"], plane)
    rows, cols = zoom_indices((size[1], size[0]), col_mm, row_mm)  # the picture is the cut transposed
    panel = len(cols) + PANEL_GAP
    column, y = int(x_px) % panel, int(y_px) - CAPTION_PX
    if column >= len(cols) or not 0 <= y < len(rows) or x_px < 0:
        return None
    voxel = [0, 0, 0]
    voxel[axis] = int(index)
    voxel[keep[0]] = int(cols[column])
    voxel[keep[1]] = size[1] - 1 - int(rows[y])  # drawn upside down: the first row at the bottom
    return tuple(voxel)


def captioned(picture: np.ndarray, caption: str) -> np.ndarray:
    bar = Image.new("RGB", (picture.shape[1], CAPTION_PX), (255, 255, 255))
    ImageDraw.Draw(bar).text((6, 5), caption, fill=(20, 20, 20))
    return np.concatenate([np.asarray(bar), picture], axis=0)


def render_plane(state: dict | None, plane: str, index: int, mode: str = "overlay", opacity: float = 0.45,
                 level: float | None = None, width: float | None = None) -> np.ndarray | None:
    """One plane: the scan alone before segmenting, else a captioned panel per model side by side."""
    if not state:
        return None
    image = state["image"]
    lo, hi = state["window"]
    level = (lo + hi) / 2 if level is None else float(level)
    width = (hi - lo) if width is None else max(float(width), 1e-6)
    window = (level - width / 2, level + width / 2)
    cut = plane_slice(image, plane, index).astype(np.float32)
    truth = plane_slice(state["label"], plane, index)
    col_mm, row_mm = plane_spacing(state["spacing"], plane)
    masks = state["masks"] or {"": None}
    panels = []
    for name, mask in masks.items():
        picture = physical_zoom(overlay_rgb(cut, plane_slice(mask, plane, index), truth, alpha=opacity,
                                            window=window, mode=mode), col_mm, row_mm)
        caption = f"{state['names'].get(name, name)} - {plane}" if name else f"scan - {plane} (not segmented yet)"
        panels.append(captioned(picture, caption))
    gap = np.full((panels[0].shape[0], PANEL_GAP, 3), 255, np.uint8)
    return np.concatenate([p for pic in panels for p in (pic, gap)][:-1], axis=1)
