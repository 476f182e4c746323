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
    # `lasegm download`'s default folder: a copy the user downloaded is never picked up without LASEGM_DATA
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.getbasetemp() / "xdg-data"))


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


# Tests that use these fixtures are slow: the real data (the quick tier runs without a data folder), or the demo
# served in a process of its own (tests/test_demo.py: its HTTP API and a browser)
SLOW_FIXTURES = {"real_data", "server"}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real development data, from $LASEGM_DATA only (the README's test command and .ci/run set it). Tests that
    use it are marked slow; when it is missing they fail instead of skipping, so a run never passes on less."""
    env = os.environ.get("LASEGM_DATA")
    if not env:
        pytest.fail("the real data is needed: set LASEGM_DATA to a Task02_Heart folder (`lasegm download` fetches "
                    "it), or run the quick tier: python -m pytest -m 'not slow'")
    path = Path(env).resolve()
    if not (path / "imagesTr").is_dir():
        pytest.fail(f"real data not found at LASEGM_DATA={env}: no imagesTr/ there")
    return path


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an interrupted or failed write would have left behind."""
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
