#!/usr/bin/env bash
# Builds .devrun/ (git-ignored, so a fresh checkout lacks it): what the GPU scripts carry to a CUDA machine without
# internet access, unpacked there by docs/gpu/setup.sh. Such a machine (Python 3.12 with torch, timm, scipy,
# scikit-image, opencv, ...) lacks:
#   whl/          compiled wheels for its Python 3.12: pydantic-core, simsimd, stringzilla
#   site.tar.xz   the pure-Python packages, installed into site/: smp, albumentations, albucore, monai, nibabel,
#                 pydantic and its helpers (versions: this .venv's, i.e. requirements.txt's)
#   data.tar.xz   the development cases cropped in-plane to the central 200 mm (160 px at 1.25 mm), stored as .nii
#                 (xz packs raw int16 far better than gzip'd): the models see only that window (preprocessing v2; v3's
#                 200-mm cube in every plane), so training and scores are unchanged. Checked here for every case and
#                 plane: the same model input and labels as from the full scan, and no label voxel in the border.
# Carry .devrun/ to the machine with the repository (docs/gpu.md).
# Usage: bash docs/gpu/make-devrun.sh   (the package registry must be reachable; ~2 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
DATA=${LASEGM_DATA:-../shared/data/Task02_Heart}
D=.devrun
rm -rf "$D" /tmp/devrun-build && mkdir -p "$D/whl" /tmp/devrun-build/site
version() { $PY -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
COMPILED="pydantic-core simsimd stringzilla"
PURE="segmentation-models-pytorch albumentations albucore monai nibabel pydantic annotated-types typing-inspection"
for n in $COMPILED $PURE; do [ -n "$(version "$n")" ] || { echo "$n is not installed in .venv"; exit 1; }; done
pip_dl() {  # DEST NAME...
  local dest=$1; shift; local specs=(); for n in "$@"; do specs+=("$n==$(version "$n")"); done
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "${specs[@]}"
}
pip_dl "$D/whl" $COMPILED
pip_dl /tmp/devrun-build/whl $PURE
$PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/devrun-build/site /tmp/devrun-build/whl/*.whl
tar cJf "$D/site.tar.xz" -C /tmp/devrun-build site

mkdir -p /tmp/devrun-build/data/Task02_Heart/{imagesTr,labelsTr}
$PY - "$DATA" /tmp/devrun-build/data/Task02_Heart <<'EOF'
"""Crop each case in-plane to the central field of view the models see, with the affine shifted so that world
coordinates stay, and check that nothing a model or a score sees changes."""
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from lasegm.anatomy import declared_affine
from lasegm.data import find_cases, load_case
from lasegm.preprocess import PLANE_ORIENTATIONS, Preprocessing, _center_overlap

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
shutil.copy(src / "dataset.json", dst / "dataset.json")
# the stored (sagittal) grid's central 200 mm in-plane; every plane's model (field of view a 200 mm cube, version 3)
# and the served sagittal ones (version 2) must see the same input from it as from the full scan
sagittal = Preprocessing(image_size=160, fov_mm=200.0, context=1, orientation=PLANE_ORIENTATIONS["sagittal"])
recipes = [sagittal, Preprocessing(image_size=224, fov_mm=200.0, context=1, orientation="ASR", version=2,
                                   normalization="fov_clip_p0.5_p99.5_zscore", resize="fov_bilinear")]
recipes += [Preprocessing(image_size=n, fov_mm=200.0, context=1, orientation=o)  # the views jobs: 160 px, PSPNet 224
            for o in PLANE_ORIENTATIONS.values() for n in (160, 224)]
for case in find_cases(src):
    for kind, path in (("imagesTr", case.image), ("labelsTr", case.label)):
        img = nib.load(str(path))
        geo = sagittal.geometry(declared_affine(img.affine, case.axes), img.shape)  # the window, its centring rule
        assert geo.model_shape[:2] == img.shape[:2], f"{path}: in-plane axes are not the first two"
        box = [_center_overlap(n, k)[0] for n, k in zip(img.shape[:2], geo.window)]
        assert all(b.stop - b.start == k for b, k in zip(box, geo.window)), f"{path}: smaller than 200 mm in-plane"
        data = np.asanyarray(img.dataobj)
        cropped = data[box[0], box[1]]
        if kind == "labelsTr":
            assert cropped.sum() == data.sum(), f"{path}: label voxels outside the central 200 mm"
        affine = img.affine @ np.array([[1, 0, 0, box[0].start], [0, 1, 0, box[1].start], [0, 0, 1, 0], [0, 0, 0, 1]])
        out = nib.Nifti1Image(cropped, affine, img.header)
        out.set_qform(affine)
        out.set_sform(affine)
        nib.save(out, str(dst / kind / f"{case.case_id}.nii"))
    full = load_case(case)
    small = load_case(next(c for c in find_cases(dst) if c.case_id == case.case_id))
    for pre in recipes:
        a, ga = pre.prepare(full.image, full.affine)
        b, gb = pre.prepare(small.image, small.affine)
        assert np.array_equal(a, b), f"{case.case_id}: model input changed by the crop"
        assert np.array_equal(pre.prepare_label(full.label, ga), pre.prepare_label(small.label, gb))
    print(case.case_id, full.image.shape, "->", small.image.shape, "same model input and labels", flush=True)
EOF
tar cJf "$D/data.tar.xz" -C /tmp/devrun-build/data Task02_Heart
rm -rf /tmp/devrun-build
du -sh "$D"/*
du -sh "$D"
