"""la_003 stored at another spacing along some voxel axes: does `lasegm predict` give the mask of the original
storage? For each group of axis codes given (e.g. A S AS R), the scan and its label are resampled to 0.625 and 2.0 mm
along those axes (scipy, linear; nearest for the label) and predicted; printed: the mask's agreement (Dice) with the
original storage's mask mapped to the same grid, and its Dice against the resampled label (docs/results.md,
"Spacing"; tests/test_preprocess.py pins two of the rows and owns the resampling helpers, hence PYTHONPATH).

    PYTHONPATH=tests python docs/experiments/spacing_axes.py R S A AS   # the served U-Net, checkpoints/unet
"""

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
from test_preprocess import CASE, correctly_headed, predict_cli, resample_axes, zoom_to

from lasegm.anatomy import TASK02_VOXEL_AXES
from lasegm.data import default_data_dir
from lasegm.metrics import dice

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("axes", nargs="+", help="groups of voxel axis codes of the Task02 file (A, S, R)")
args = parser.parse_args()
data = default_data_dir()
work = Path(tempfile.mkdtemp())
img, lab = (correctly_headed(nib.load(str(data / part / f"{CASE}.nii.gz"))) for part in ("imagesTr", "labelsTr"))
ref, ref_score = predict_cli(work, "original", img, lab)
print(f"{CASE} as stored: Dice {ref_score:.4f}", flush=True)
for codes in args.axes:
    axes = tuple(TASK02_VOXEL_AXES.index(c) for c in codes)
    for spacing in (0.625, 2.0):
        img2, lab2 = resample_axes(img, spacing, 1, axes), resample_axes(lab, spacing, 0, axes)
        mask, score = predict_cli(work, f"{codes}{spacing}", img2, lab2)
        print(f"{codes} at {spacing} mm: agreement {dice(zoom_to(mask, ref.shape), ref):.4f}, "
              f"Dice {score:.4f} ({score - ref_score:+.4f})", flush=True)
