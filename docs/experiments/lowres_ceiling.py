"""How much of the atrium a low-resolution 3D stage can carry: each patient's own label resampled to an isotropic
coarse grid and back to the scan's grid, scored against the label (3D Dice). A low-resolution stage (issue #27: ~2.5 mm,
whole field of view) is at best this good on its own; what is left between this ceiling and 1 is what the
full-resolution models must add. No model is trained: the numbers are an upper bound, not an accuracy.

Two ceilings per spacing: "soft" keeps the label's coarse-voxel fractions (a perfect coarse probability map, linearly
interpolated back, threshold 0.5); "hard" thresholds on the coarse grid first (a perfect coarse mask, as a cascade's
binary input or a coarse model's exported mask would be).

    python docs/experiments/lowres_ceiling.py --data $LASEGM_DATA [--spacing 2.5 3.5 5.0]
"""

import argparse
import statistics

import numpy as np
from skimage.transform import resize

from lasegm.data import find_cases, load_case
from lasegm.metrics import dice


def round_trip(label: np.ndarray, spacing: tuple, coarse_mm: float, hard: bool) -> np.ndarray:
    """The label on an isotropic `coarse_mm` grid (area fractions) and back to its own grid, thresholded at 0.5."""
    coarse_shape = [max(1, round(n * s / coarse_mm)) for n, s in zip(label.shape, spacing)]
    coarse = resize(label.astype(np.float32), coarse_shape, order=1, anti_aliasing=True, preserve_range=True)
    if hard:
        coarse = (coarse >= 0.5).astype(np.float32)
    return resize(coarse, label.shape, order=1, anti_aliasing=False, preserve_range=True) >= 0.5


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--spacing", type=float, nargs="+", default=[2.5, 3.5, 5.0])
    args = p.parse_args()
    rows = {}
    for case in find_cases(args.data):
        vol = load_case(case)
        label = vol.label > 0
        spacing = tuple(float(z) for z in vol.spacing)
        rows[case.case_id] = {(mm, hard): dice(round_trip(label, spacing, mm, hard), label)
                              for mm in args.spacing for hard in (False, True)}
        print(case.case_id, " ".join(f"{mm}mm-{'hard' if h else 'soft'} {d:.4f}"
                                     for (mm, h), d in rows[case.case_id].items()), flush=True)
    print(f"{len(rows)} patients: mean (min) 3D Dice of the label after the round trip")
    for mm in args.spacing:
        for hard in (False, True):
            values = [r[(mm, hard)] for r in rows.values()]
            print(f"  {mm:.1f} mm {'hard' if hard else 'soft'}: {statistics.mean(values):.4f} ({min(values):.4f})")


if __name__ == "__main__":
    main()
