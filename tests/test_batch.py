"""`lasegm predict` over a folder or a .zip of scans: one mask per scan, a summary, and a bad scan never stops the
rest."""

import csv
import zipfile

import nibabel as nib
import numpy as np
import pytest
from conftest import TEST_PREPROCESSING, affine_for, leftovers, synthetic_volume, write_nifti
from test_dicom import write_series

from lasegm.cli import main
from lasegm.models import build_model, model_kwargs, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    kw = model_kwargs("fpn", "resnet18", 1, decoder_width=16)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "fpn", build_model("fpn", kw), {
        "arch": "fpn", "encoder": "resnet18", "model_kwargs": kw, "preprocessing": TEST_PREPROCESSING})


def _scans(folder):
    for i in range(2):
        write_nifti(folder / f"case_{i}.nii.gz", synthetic_volume((40, 40, 8), seed=i)[0])
    (folder / "broken.nii.gz").write_bytes(b"not a scan")
    image, _ = synthetic_volume((40, 40, 8), seed=3)
    write_series(image.astype(np.float32), affine_for(), folder / "patient_x" / "series_7")
    return folder


def _summary(out):
    with open(out / "summary.csv", newline="") as fh:
        return {row["output"].rsplit("/", 1)[-1]: row for row in csv.DictReader(fh)}


def test_a_folder_with_a_corrupt_scan_writes_the_others_and_says_which_failed(checkpoint, tmp_path, capsys):
    scans, out = _scans(tmp_path / "in"), tmp_path / "out"
    assert main(["--quiet", "predict", "--checkpoint", str(checkpoint), "--input", str(scans), "--output", str(out)]) == 1
    captured = capsys.readouterr()
    rows = _summary(out)
    assert sorted(rows) == ["broken.nii.gz", "case_0.nii.gz", "case_1.nii.gz", "series_7.nii.gz"]
    assert rows["broken.nii.gz"]["status"] == "failed" and "corrupt or unreadable NIfTI" in rows["broken.nii.gz"]["error"]
    assert "broken: error:" in captured.err and "3 of 4 scans segmented, 1 failed" in captured.out
    for name in ("case_0", "case_1", "series_7"):
        assert rows[f"{name}.nii.gz"]["status"] == "ok" and rows[f"{name}.nii.gz"]["shape"] == "40x40x8"
        assert nib.load(str(out / f"{name}.nii.gz")).shape == (40, 40, 8)
    assert rows["series_7.nii.gz"]["series_uid"] and rows["case_0.nii.gz"]["spacing_mm"] == "1.250x1.250x1.370"
    assert not (out / "broken.nii.gz").exists() and not leftovers(out)
    # a rerun skips what exists
    assert main(["--quiet", "predict", "--checkpoint", str(checkpoint), "--input", str(scans), "--output", str(out),
                 "--skip_existing"]) == 1
    assert _summary(out)["case_0.nii.gz"]["status"] == "skipped (exists)"


def test_a_zip_of_scans_is_a_batch_too(checkpoint, tmp_path, capsys):
    scans = tmp_path / "in"
    for i in range(2):
        write_nifti(scans / ("a" if i == 0 else "b") / "scan.nii.gz",
                    synthetic_volume((40, 40, 8), seed=i)[0])
    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in scans.rglob("*.nii.gz"):
            z.write(p, p.relative_to(scans))
    assert main(["--quiet", "predict", "--checkpoint", str(checkpoint), "--input", str(archive),
                 "--output", str(tmp_path / "out")]) == 0
    assert sorted(_summary(tmp_path / "out")) == ["scan.nii.gz", "scan_2.nii.gz"]  # the same stem: made unique
    assert main(["--quiet", "predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "empty.zip"),
                 "--output", str(tmp_path / "out2")]) == 2
    assert "empty.zip" in capsys.readouterr().err
