"""DICOM series in: the series of a folder, each read as one Volume whose affine says its anatomy.

A series is the files sharing a SeriesInstanceUID, whatever their names or folders. Its geometry comes from the
files themselves: slice order from ImagePositionPatient along the slice normal, directions from
ImageOrientationPatient, in-plane spacing from PixelSpacing, slice spacing from the positions; intensities through
RescaleSlope / RescaleIntercept. DICOM's patient coordinates are LPS, NIfTI's RAS: the affine is converted. A series
that is not one consistent 3D grid (a missing slice, uneven spacing, mixed orientations or sizes — a localiser mixed
in —, a multi-frame object) is refused with one line naming it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from lasegm import LasegmError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
TOLERANCE_MM = 0.01  # positions and spacings agreeing within this are equal (scanners write rounded decimals)


def find_series(folder: str | Path) -> dict[str, list[Path]]:
    """{SeriesInstanceUID: files} of every DICOM file below `folder` (other files are ignored)."""
    import pydicom

    found: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = getattr(ds, "SeriesInstanceUID", None)
        if uid:
            found[str(uid)].append(path)
    return dict(found)


def read_series(files: list[Path], name: str):
    """One series -> lasegm.data.Volume (X = columns, Y = rows, Z = slices; RAS affine)."""
    import nibabel as nib
    import pydicom

    from lasegm.volume import Volume

    try:
        slices = [pydicom.dcmread(f) for f in files]
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise LasegmError(f"{name}: unreadable DICOM ({type(e).__name__}: {e})") from None
    first = slices[0]
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise LasegmError(f"{name}: a multi-frame DICOM object; convert it to single-frame files or NIfTI first")
    for tag in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        if any(getattr(s, tag, None) is None for s in slices):
            raise LasegmError(f"{name}: some files lack {tag}: not a 3D image series")
    orientation = np.array(first.ImageOrientationPatient, dtype=float)
    if any(not np.allclose(np.array(s.ImageOrientationPatient, float), orientation, atol=1e-4) for s in slices):
        raise LasegmError(f"{name}: slices of different orientations (a localiser mixed in?); one series must be one "
                          "3D grid")
    if any((s.Rows, s.Columns) != (first.Rows, first.Columns) for s in slices) or any(
            not np.allclose(np.array(s.PixelSpacing, float), np.array(first.PixelSpacing, float), atol=1e-4)
            for s in slices):
        raise LasegmError(f"{name}: slices of different sizes or pixel spacings; one series must be one 3D grid")
    if len(slices) < 2:
        raise LasegmError(f"{name}: a single slice is not a 3D scan")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.array(s.ImagePositionPatient, float) for s in slices])
    order = np.argsort(positions @ normal)
    slices, positions = [slices[i] for i in order], positions[order]
    steps = np.diff(positions @ normal)
    if steps.min() < TOLERANCE_MM:
        raise LasegmError(f"{name}: two slices at the same position (duplicates, or two series with one UID)")
    if steps.max() - steps.min() > max(TOLERANCE_MM, 0.01 * steps.mean()):
        raise LasegmError(f"{name}: uneven slice spacing ({steps.min():.2f}-{steps.max():.2f} mm): missing slices?")
    off_axis = positions - positions[0] - np.outer(positions @ normal - positions[0] @ normal, normal)
    if np.abs(off_axis).max() > max(TOLERANCE_MM, 0.01 * steps.mean()):
        raise LasegmError(f"{name}: the slices do not stack along their normal (a gantry tilt?); not supported")
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)  # between rows, between columns
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing  # x: along a row, the column index grows
    lps[:3, 1] = col_dir * row_spacing  # y: down a column, the row index grows
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(slices) - 1)
    lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ lps
    try:
        image = np.stack([s.pixel_array.T.astype(np.float32) * float(getattr(s, "RescaleSlope", 1) or 1)
                          + float(getattr(s, "RescaleIntercept", 0) or 0) for s in slices], axis=-1)
    except (AttributeError, ValueError, RuntimeError) as e:
        raise LasegmError(f"{name}: pixel data cannot be decoded ({type(e).__name__}: {e})") from None
    if not np.isfinite(image).all():
        raise LasegmError(f"{name}: image contains NaN or infinite values")
    spacing = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    header = nib.Nifti1Image(np.zeros((1, 1, 1), np.int16), affine).header
    header.set_data_shape(image.shape)
    header.set_zooms(spacing)
    return Volume(image=image, affine=affine, header=header, spacing=spacing,
                  dicom_files=tuple(Path(s.filename) for s in slices))


def load_dicom_folder(folder: str | Path):
    """The one series of a folder as a Volume; a folder of none or several series is an error naming them."""
    series = find_series(folder)
    if not series:
        raise LasegmError(f"{folder}: no DICOM files found")
    if len(series) > 1:
        raise LasegmError(f"{folder}: {len(series)} DICOM series ({', '.join(sorted(series))}); give one series' "
                          "folder")
    (uid, files), = series.items()
    return read_series(files, f"{folder} (series {uid})")


def write_seg(mask: np.ndarray, vol, path: str | Path) -> Path:
    """A DICOM Segmentation object (binary, one segment: the left atrium, SNOMED CT 82471001) of a mask on a DICOM
    series' grid, referring to the series' images (highdicom): viewers such as 3D Slicer or OHIF load it over the
    series. Written atomically."""
    try:
        import highdicom as hd
    except ImportError:
        raise LasegmError("a DICOM SEG output needs highdicom: pip install 'lasegm[dicom-seg]'") from None
    import pydicom
    from pydicom.sr.codedict import codes

    from lasegm import __version__
    from lasegm.utils import atomic_path

    if not vol.dicom_files:
        raise LasegmError("a DICOM SEG refers to the images of a DICOM series, and this scan is not one")
    sources = [pydicom.dcmread(f) for f in vol.dicom_files]
    algorithm = hd.AlgorithmIdentificationSequence(name="lasegm", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="left atrium", segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=codes.SCT.LeftAtrium, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm)
    frames = np.ascontiguousarray(np.moveaxis(np.asarray(mask, np.uint8), 2, 0).transpose(0, 2, 1))  # (Z, rows, cols)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=9001,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="lasegm", manufacturer_model_name="lasegm",
        software_versions=__version__, device_serial_number="none", series_description="lasegm left atrium",
        omit_empty_frames=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
