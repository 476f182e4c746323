"""Pictures for the demo: three orthogonal planes of a scan named by anatomy, at physical aspect, with each
model's result drawn as an overlay, a contour or an error map, one captioned panel per model.

Volumes are shown on the display grid: the scan's voxels reordered and flipped (never resampled) so that its
axes run toward the patient's left, anterior and superior (DISPLAY_ORIENTATION), whatever the storage and
whatever orientation the models slice in. So the axial plane is the one whose normal is S/I, the coronal A/P
and the sagittal R/L; axial and coronal follow the radiological convention (the patient's right on the
screen's left, anterior / superior at the top), the sagittal plane is seen from the patient's right (anterior
on the screen's right). Each panel carries its direction letters at its edges. Cheap enough to redraw on
every slider move (a few ms per panel).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import nibabel.orientations as nio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lasegm.viz import overlay_rgb

# The display grid's voxel axes (nibabel codes, RAS+ world): 0 toward the patient's left, 1 anterior, 2 superior.
# A picture's columns run along its plane's first remaining axis (left to right) and its rows along the second
# (bottom to top), so axial = L right / A up and coronal = L right / S up: radiological.
DISPLAY_ORIENTATION = "LAS"
PLANES = ("axial", "coronal", "sagittal")
PLANE_NORMALS = {"axial": "SI", "coronal": "AP", "sagittal": "RL"}  # the directions a plane's slices step along
DIRECTIONS = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
DISPLAY_PX = 300  # each panel is at least this tall
CAPTION_PX, PANEL_GAP = 22, 6  # a caption bar above each panel, white columns between panels
LETTER_PX, LETTER_MARGIN = 14, 3  # the direction letters' size and their distance from the picture's edge


@dataclass(frozen=True)
class Display:
    """How a scan's voxel grid maps onto the display grid: axes reordered and flipped by their axis codes only
    (nearest axes for an oblique scan), never resampled."""

    transform: np.ndarray  # nibabel ornt transform: scan axes -> display axes
    spacing: tuple[float, float, float]  # mm, in display axis order
    affine: np.ndarray  # the display grid's voxels -> the scan's world (RAS+ mm)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """An array on the scan's grid (the scan, a label, a mask) -> the display grid (a view)."""
        return nio.apply_orientation(array, self.transform)


def display_of(affine: np.ndarray, shape) -> Display:
    """The display grid of a scan with this (anatomical) affine and voxel shape."""
    affine = np.asarray(affine, dtype=np.float64)
    transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(tuple(DISPLAY_ORIENTATION)))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(float(zooms[i]) for i in np.argsort(transform[:, 0]))  # the scan axis behind each display axis
    return Display(transform, spacing, affine @ nio.inv_ornt_aff(transform, tuple(shape)))


def plane_axis(plane: str) -> int:
    """The display axis a plane cuts across: the one whose direction is the plane's normal."""
    return next(i for i, code in enumerate(DISPLAY_ORIENTATION) if code in PLANE_NORMALS[plane])


def slice_direction(plane: str) -> tuple[str, str]:
    """(from, to): the directions a plane's slice index runs, e.g. ('inferior', 'superior') for axial."""
    toward = DISPLAY_ORIENTATION[plane_axis(plane)]
    return DIRECTIONS[_OPPOSITE[toward]], DIRECTIONS[toward]


def plane_letters(plane: str) -> dict[str, str]:
    """The direction letter at each edge of a plane's picture: {'left', 'right', 'top', 'bottom'}."""
    keep = [a for a in range(3) if a != plane_axis(plane)]
    column, row = DISPLAY_ORIENTATION[keep[0]], DISPLAY_ORIENTATION[keep[1]]  # rows are drawn bottom to top
    return {"left": _OPPOSITE[column], "right": column, "top": row, "bottom": _OPPOSITE[row]}


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
    """The voxel (of the display grid) under a click at (x_px, y_px) on a plane's picture, which may
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


@lru_cache(maxsize=1)
def _letter_font():
    return ImageFont.load_default(size=LETTER_PX)


def lettered(picture: np.ndarray, plane: str) -> np.ndarray:
    """The picture with its plane's direction letters at the middle of each edge, drawn over it (white on a
    black outline, legible on any grey): the picture keeps its size, so every pixel stays where voxel_at finds
    it."""
    image = Image.fromarray(picture)
    draw, font = ImageDraw.Draw(image), _letter_font()
    height, width = picture.shape[:2]
    for edge, letter in plane_letters(plane).items():
        x0, y0, x1, y1 = draw.textbbox((0, 0), letter, font=font)
        w, h = x1 - x0, y1 - y0
        x = {"left": LETTER_MARGIN, "right": width - w - LETTER_MARGIN}.get(edge, (width - w) // 2)
        y = {"top": LETTER_MARGIN, "bottom": height - h - LETTER_MARGIN}.get(edge, (height - h) // 2)
        draw.text((x - x0, y - y0), letter, font=font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(image)


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
    title = plane.capitalize()
    panels = []
    for name, mask in masks.items():
        picture = physical_zoom(overlay_rgb(cut, plane_slice(mask, plane, index), truth, alpha=opacity,
                                            window=window, mode=mode), col_mm, row_mm)
        caption = f"{state['names'].get(name, name)} - {title}" if name else f"scan - {title} (not segmented yet)"
        panels.append(captioned(lettered(picture, plane), caption))
    gap = np.full((panels[0].shape[0], PANEL_GAP, 3), 255, np.uint8)
    return np.concatenate([p for pic in panels for p in (pic, gap)][:-1], axis=1)
