"""`pip install .` (not editable) into a fresh virtual environment, away from the checkout, gives a working
`lasegm predict` on the default ONNX backend, with no PyTorch installed. Slow: it installs the runtime
dependencies from the package index (about a minute and 0.5 GB)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from test_golden import EXAMPLES, TOLERANCE, load_golden


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_gives_a_working_lasegm_predict(tmp_path):
    # the package's sources only: building in the checkout would leave build/ and egg-info there
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "lasegm", src / "lasegm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python, lasegm = venv / "bin" / "python", venv / "bin" / "lasegm"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0, check.stdout

    where = subprocess.run([str(python), "-c", "import importlib.util as u, lasegm; print(lasegm.__file__); "
                            "print(u.find_spec('torch') is None)"], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=120)
    package_file, no_torch = where.stdout.split()
    assert package_file.startswith(str(venv)) and no_torch == "True", where.stdout + where.stderr

    out = tmp_path / "mask.nii.gz"
    run = subprocess.run([str(lasegm), "--quiet", "predict", "--checkpoint", str(REPO / "checkpoints" / "unet"),
                          "--input", str(EXAMPLES / "la_019_image.nii.gz"), "--output", str(out),
                          "--label", str(EXAMPLES / "la_019_label.nii.gz")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on onnx" in run.stdout and "3D Dice" in run.stdout

    import nibabel as nib

    mask = np.asarray(nib.load(str(out)).dataobj).astype(bool)
    golden = load_golden()[1]["unet-la_019"]
    assert int((mask != golden).sum()) <= TOLERANCE * golden.sum(), "the installed package segments differently"
