"""Shared fixtures: small synthetic MSD folders made in the test, and the real development data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests never talk to W&B servers; individual tests opt into offline mode.
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LASEGM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# The preprocessing of tiny test models: the synthetic scans are 64 x 64 voxels of 1.25 mm = 80 mm across
TEST_PREPROCESSING = {"image_size": 64, "fov_mm": 80.0, "context": 0, "orientation": "RAS", "version": 2}
SYNTHETIC_FLAGS = ["--fov_mm=80", "--context=0"]


def affine_for(spacing=(1.25, 1.25, 1.37), shift=(10.0, -20.0, 5.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = shift
    return a


def synthetic_volume(shape=(64, 64, 24), seed=0, center=None, radii=None):
    """A noisy scan with a bright ellipsoid (the 'atrium') and its exact label."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = center or (shape[0] * rng.uniform(0.4, 0.6), shape[1] * rng.uniform(0.4, 0.6), shape[2] / 2)
    r = radii or (shape[0] * 0.15, shape[1] * 0.12, shape[2] * 0.3)
    label = (((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1).astype(np.uint8)
    image = rng.normal(300, 60, shape) + 700.0 * label + 200.0 * (x > shape[0] * 0.8)
    return image.astype(np.int16), label


def write_nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine if affine is not None else affine_for()), str(path))
    return path


def make_dataset(root: Path, n_cases=6, shape=(64, 64, 24), duplicate=False) -> Path:
    """An MSD-layout folder (imagesTr/, labelsTr/, dataset.json) of synthetic cases."""
    entries = []
    for i in range(n_cases):
        cid = f"la_{i + 1:03d}"
        image, label = synthetic_volume(shape, seed=i)
        write_nifti(root / "imagesTr" / f"{cid}.nii.gz", image)
        write_nifti(root / "labelsTr" / f"{cid}.nii.gz", label)
        entries.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    if duplicate:  # the same scan under a second ID, as in the real data
        cid = f"la_{n_cases + 1:03d}"
        image, label = synthetic_volume(shape, seed=0)
        write_nifti(root / "imagesTr" / f"{cid}.nii.gz", image)
        write_nifti(root / "labelsTr" / f"{cid}.nii.gz", label)
    (root / "dataset.json").write_text(json.dumps({"name": "synthetic", "training": entries}))
    return root


@pytest.fixture
def dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "Task02_Synthetic", duplicate=True)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real development data; in CI a missing folder fails the suite instead of skipping."""
    from lasegm.data import SHARED_DATA, default_data_dir

    path = (default_data_dir() or SHARED_DATA).resolve()  # $LASEGM_DATA, else ../shared/data/Task02_Heart
    if not (path / "imagesTr").is_dir():
        pytest.fail(f"real data not found at {path}: set LASEGM_DATA to a Task02_Heart folder")
    return path


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an interrupted or failed write would have left behind."""
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
