"""A DICOM series in: geometry from the files (LPS patient coordinates), the same mask as the same scan in NIfTI,
and a one-line refusal for a series that is not one 3D grid."""

import random

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, affine_for, synthetic_volume, write_nifti
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from lasegm import LasegmError
from lasegm.anatomy import relabel_affine
from lasegm.cli import main
from lasegm.data import load_volume
from lasegm.dicom import find_series

INTERCEPT = -100.0  # stored = value - INTERCEPT: the reader must apply RescaleIntercept


def write_series(volume: np.ndarray, affine: np.ndarray, folder, series_uid=None, skip=(), localiser=False) -> str:
    """A scanner-like series of `volume` (X, Y, Z on a RAS `affine`): one file per slice, random names, two levels of
    folders, LPS positions and orientations. skip: slice indices left out (a gap); localiser: one extra slice of
    another orientation in the same series."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    col_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / col_step, lps[:3, 1] / row_step
    series_uid, study_uid, frame_uid = series_uid or generate_uid(), generate_uid(), generate_uid()
    names = [f"{random.Random(k).getrandbits(40):x}" for k in range(volume.shape[2] + 1)]
    for k in range(volume.shape[2]):
        if k in skip:
            continue
        orientation = [*row_dir, *col_dir]
        if localiser and k == volume.shape[2] // 2:
            orientation = [*col_dir, *row_dir]
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.Modality, ds.PatientID, ds.PatientName = MRImageStorage, "MR", "anon", "Anonymous^Test"
        ds.PatientBirthDate, ds.PatientSex, ds.StudyDate, ds.StudyTime = "", "O", "20261130", "120000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID, ds.SeriesNumber = "", "", "1", 7
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator, ds.Manufacturer = frame_uid, "", "test"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study_uid, series_uid, k + 1
        ds.ImagePositionPatient = [float(v) for v in (lps @ [0, 0, k, 1])[:3]]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.PixelSpacing = [float(row_step), float(col_step)]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = INTERCEPT, 1.0
        ds.PixelData = np.ascontiguousarray((volume[:, :, k].T - INTERCEPT).astype(np.int16)).tobytes()
        path = folder / names[k][:2] / f"{names[k]}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
    (folder / "README.txt").write_text("not a DICOM file")  # ignored
    return series_uid


def test_a_series_reads_back_as_the_volume_it_was_made_from(tmp_path):
    image, _ = synthetic_volume((24, 20, 12))
    affine = relabel_affine(affine_for(), "ASR")  # stored sagittally, as the development data really are
    write_series(image.astype(np.float32), affine, tmp_path / "series")
    vol = load_volume(tmp_path / "series")
    np.testing.assert_array_equal(vol.image, image.astype(np.float32))
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    assert vol.spacing == pytest.approx((1.25, 1.25, 1.37), abs=1e-4)


@pytest.mark.parametrize("kind, message", [
    ("gap", "uneven slice spacing"),
    ("localiser", "slices of different orientations"),
    ("two series", "2 DICOM series"),
    ("empty", "no DICOM files found"),
])
def test_a_series_that_is_not_one_grid_is_refused_in_one_line(kind, message, tmp_path, capsys):
    image, _ = synthetic_volume((16, 16, 10))
    folder = tmp_path / "series"
    folder.mkdir()
    if kind != "empty":
        write_series(image.astype(np.float32), affine_for(), folder, skip={4} if kind == "gap" else (),
                     localiser=kind == "localiser")
    if kind == "two series":
        write_series(image.astype(np.float32), affine_for(), folder / "other")
    assert main(["--quiet", "predict", "--checkpoint", str(REPO / "checkpoints" / "pspnet"), "--input", str(folder),
                 "--output", str(tmp_path / "m.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "m.nii.gz").exists()
    if kind == "gap":
        assert len(find_series(folder)) == 1


@pytest.mark.slow
def test_a_development_scan_as_a_dicom_series_gets_the_mask_of_its_nifti(real_data, tmp_path):
    """la_003 with its true geometry (ASR), written as a series of 130 files (LPS coordinates, shuffled names),
    segments identically to the NIfTI with the same geometry; the mask is written on the series' grid."""
    stored = nib.load(str(real_data / "imagesTr" / "la_003.nii.gz"))
    affine = relabel_affine(stored.affine, "ASR")
    data = np.asanyarray(stored.dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "la_003.nii.gz"))
    write_series(data, affine, tmp_path / "series")
    masks = {}
    for name, scan in (("nifti", tmp_path / "la_003.nii.gz"), ("dicom", tmp_path / "series")):
        assert main(["--quiet", "predict", "--checkpoint", str(REPO / "checkpoints" / "unet"), "--input", str(scan),
                     "--output", str(tmp_path / f"{name}.nii.gz")]) == 0
        masks[name] = nib.load(str(tmp_path / f"{name}.nii.gz"))
    assert np.array_equal(np.asanyarray(masks["nifti"].dataobj), np.asanyarray(masks["dicom"].dataobj))
    np.testing.assert_allclose(masks["dicom"].affine, affine, atol=1e-3)
    assert np.asanyarray(masks["dicom"].dataobj).sum() > 0


def test_a_dicom_seg_over_the_series_reads_back_as_the_mask_on_the_same_frames(tmp_path):
    """--output FILE.dcm writes a DICOM Segmentation referring to the series' images; read back (highdicom) by source
    image, it is the NIfTI mask of the same run, frame by frame."""
    import highdicom as hd
    import pydicom
    import torch

    from lasegm.models import build_model, model_kwargs, save_checkpoint

    kw = model_kwargs("fpn", "resnet18", 1, decoder_width=16)
    model = build_model("fpn", kw)
    torch.nn.init.constant_(model.segmentation_head[0].bias, 5.0)  # "atrium" everywhere in its 20-mm window
    pre = {"image_size": 32, "fov_mm": 20.0, "context": 0, "orientation": "RAS", "version": 2}
    ck = save_checkpoint(tmp_path / "ck", model, {"arch": "fpn", "encoder": "resnet18", "model_kwargs": kw,
                                                  "preprocessing": pre})
    image, _ = synthetic_volume((24, 20, 12))
    write_series(image.astype(np.float32), relabel_affine(affine_for(), "ASR"), tmp_path / "series")
    for out in ("mask.nii.gz", "mask.dcm"):
        assert main(["--quiet", "predict", "--checkpoint", str(ck), "--input", str(tmp_path / "series"),
                     "--output", str(tmp_path / out), "--largest_component=false"]) == 0
    mask = np.asanyarray(nib.load(str(tmp_path / "mask.nii.gz")).dataobj)
    assert 0 < mask.sum() < mask.size  # the window on, the rest off
    seg = hd.seg.segread(tmp_path / "mask.dcm")
    files = load_volume(tmp_path / "series").dicom_files
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1])[..., 0]
    assert np.array_equal(np.moveaxis(frames, 0, 2).transpose(1, 0, 2), mask)
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "82471001"  # left atrium
    # a batch of a NIfTI scan and the series: the series gets its SEG, the NIfTI file a one-line reason
    write_nifti(tmp_path / "batch" / "scan.nii.gz", image)
    write_series(image.astype(np.float32), affine_for(), tmp_path / "batch" / "series_a")
    assert main(["--quiet", "predict", "--checkpoint", str(ck), "--input", str(tmp_path / "batch"),
                 "--output", str(tmp_path / "out"), "--output_format", "dicom-seg"]) == 1
    assert (tmp_path / "out" / "series_a.dcm").is_file() and not (tmp_path / "out" / "scan.dcm").exists()
