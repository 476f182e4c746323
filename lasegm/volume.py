"""A scan in memory, whatever it was read from (lasegm.data: NIfTI files; lasegm.dicom: a DICOM series). Its own
module so that both readers build it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np


@dataclass
class Volume:
    image: np.ndarray  # float32 (X, Y, Z), raw intensities
    affine: np.ndarray  # the anatomy: the header's affine, or relabelled with declared axes
    header: nib.Nifti1Header  # as stored: a mask written with it lies over the input in any viewer
    spacing: tuple[float, float, float]
    label: np.ndarray | None = None  # uint8 (X, Y, Z), values {0, 1}
    axes: str | None = None  # the declared voxel axes (None: the header was trusted)
    dicom_files: tuple = ()  # a DICOM series' files in slice order (Z): a DICOM SEG output refers to their images

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0
