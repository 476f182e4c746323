"""Which anatomical direction each voxel axis runs in: `--axes` overrides, and the one place that knows the
Decathlon Task02_Heart release's headers are wrong.

Every Task02 file's affine is diagonal and reads RAS, but its anatomy says the voxel axes run anterior,
superior, right (research_log.md, "Task02's voxel axes"). A header is trusted everywhere else: a scan from
a scanner or a converter (dcm2niix, SimpleITK, 3D Slicer) describes its anatomy. For a file whose header is
wrong, the true directions are declared (`--axes ASR`) and the affine is relabelled: the voxels stay as they
are, each axis keeps its spacing and the origin is kept; only the directions change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel.orientations as nio
import numpy as np

from lasegm import LasegmError

# The Task02 release: what its headers say, and what its anatomy says (voxel axes 0, 1, 2).
TASK02_HEADER_AXES = "RAS"
TASK02_VOXEL_AXES = "ASR"
TASK02_SPACING_MM = (1.25, 1.25, 1.37)  # every release file's voxel size: part of its header's signature
TASK02_DATASET_NAME = "LeftAtrium"  # dataset.json "name" of the Decathlon's Task02_Heart
HEADER, AUTO = "header", "auto"  # --data_axes: trust the headers / recognise a Task02 release folder

_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
_announced: set[str] = set()  # the data folders whose relabelling this process has already said


def axis_codes(affine: np.ndarray) -> str:
    """Voxel orientation of an affine as three letters, e.g. 'RAS' (nearest axes for oblique scans)."""
    return "".join(nio.aff2axcodes(affine))


def parse_axes(codes: str) -> str:
    """Three direction letters, one of R/L, A/P, S/I each (e.g. 'ASR'), upper-cased; else a one-line error."""
    text = str(codes).strip().upper()
    pairs = sorted("".join(sorted((c, _OPPOSITE[c]))) for c in text if c in _OPPOSITE)
    if len(text) != 3 or pairs != ["AP", "IS", "LR"]:
        raise LasegmError(f"--axes {codes!r}: give three letters, one of R/L, A/P and S/I each, naming the "
                          "direction each voxel axis runs toward (e.g. ASR: axis 0 anterior, 1 superior, 2 right)")
    return text


def relabel_affine(affine: np.ndarray, axes: str) -> np.ndarray:
    """The affine with voxel axis i pointing toward axes[i] (RAS+ world), each axis' spacing and the origin kept:
    the same voxels, their directions declared."""
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ornt = nio.axcodes2ornt(tuple(parse_axes(axes)))  # per voxel axis: (world axis, +1/-1) in RAS
    out = np.zeros((4, 4))
    out[3, 3] = 1.0
    for axis, (world, sign) in enumerate(ornt):
        out[int(world), axis] = sign * spacing[axis]
    out[:3, 3] = affine[:3, 3]
    return out


def task02_header_to_anatomy(codes: str) -> str:
    """Orientation codes written in the Task02 release's header frame -> the anatomy they stand for (RAS -> ASR):
    what a model trained on the release's headers really saw."""
    letter = {}
    for header, true in zip(TASK02_HEADER_AXES, TASK02_VOXEL_AXES):
        letter[header], letter[_OPPOSITE[header]] = true, _OPPOSITE[true]
    return "".join(letter[c] for c in parse_axes(codes))


def is_task02_release(data_dir: str | Path) -> bool:
    """A Decathlon Task02_Heart folder, recognised by its dataset.json."""
    try:
        record = json.loads((Path(data_dir) / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("name") == TASK02_DATASET_NAME


def has_task02_header(affine: np.ndarray) -> bool:
    """The release's header signature: a diagonal affine reading RAS at the release's voxel size. A file like
    this is probably a Task02 file, whose header does not describe its anatomy."""
    affine = np.asarray(affine, dtype=np.float64)
    diagonal = np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3])), atol=1e-4)
    return (diagonal and axis_codes(affine) == TASK02_HEADER_AXES
            and np.allclose(np.diag(affine[:3, :3]), TASK02_SPACING_MM, atol=0.01))


def task02_header_warning(affine: np.ndarray) -> str | None:
    """A warning for a loose file whose header has the Task02 release's signature (None otherwise)."""
    if not has_task02_header(affine):
        return None
    return (f"the header has the signature of the Decathlon Task02_Heart release ({TASK02_HEADER_AXES}, "
            f"{' x '.join(map(str, TASK02_SPACING_MM))} mm), whose voxel axes really run {TASK02_VOXEL_AXES}: "
            f"if this file is from that release, pass --axes {TASK02_VOXEL_AXES}, or the mask is wrong")


def folder_axes(data_dir: str | Path, data_axes: str = AUTO) -> str | None:
    """The axes to declare for the files of a data folder (None: trust their headers).

    auto: a Task02 release folder gets its true axes (said once per process on stderr); header: trust the
    headers; three letters: declare them for every file."""
    choice = str(data_axes or AUTO).strip()
    if choice.lower() == HEADER:
        return None
    if choice.lower() != AUTO:
        return parse_axes(choice)
    if not is_task02_release(data_dir):
        return None
    key = str(Path(data_dir).resolve())
    if key not in _announced:
        _announced.add(key)
        print(f"lasegm: {data_dir} is the Decathlon Task02_Heart release: its headers read "
              f"{TASK02_HEADER_AXES}, but its voxel axes run {TASK02_VOXEL_AXES} (anterior, superior, right); each "
              f"file's affine is relabelled to {TASK02_VOXEL_AXES}, voxels untouched (--data_axes header "
              "trusts the headers)", file=sys.stderr)
    return TASK02_VOXEL_AXES



def declared_affine(affine: np.ndarray, axes: str | None) -> np.ndarray:
    """The affine the models read: the header's, or with `axes` declared."""
    if axes is None:
        return np.asarray(affine)
    return relabel_affine(affine, axes)
