"""Write the demo's example patients: test-split cases cropped to the central 200 mm (small to ship).

    python demo/make_examples.py --data $LASEGM_DATA la_003 la_019

The voxels are the release's, untouched; the headers are correct: find_cases recognises the Decathlon Task02
release and relabels its affines to the true voxel axes (ASR, lasegm.anatomy), and that affine is written, so
the demo (which trusts a header by default) reads the examples' anatomy right.
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from lasegm.anatomy import axis_codes
from lasegm.data import find_cases, load_case
from lasegm.utils import atomic_path

OUT = Path(__file__).resolve().parent / "examples"


def crop(data: np.ndarray, affine: np.ndarray, h: int, w: int):
    x0, y0 = (data.shape[0] - h) // 2, (data.shape[1] - w) // 2
    shifted = affine.copy()
    shifted[:3, 3] = affine[:3, :3] @ np.array([x0, y0, 0]) + affine[:3, 3]  # same world position
    return data[x0 : x0 + h, y0 : y0 + w], shifted


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--fov_mm", type=float, default=200)
    p.add_argument("cases", nargs="+")
    args = p.parse_args()
    cases = {c.case_id: c for c in find_cases(args.data)}
    for cid in args.cases:
        vol = load_case(cases[cid])
        h, w = (round(args.fov_mm / s) for s in vol.spacing[:2])  # central fov_mm x fov_mm
        for kind, data, dtype in (("image", vol.image, np.int16), ("label", vol.label, np.uint8)):
            cropped, affine = crop(data, vol.affine, min(h, data.shape[0]), min(w, data.shape[1]))
            header = vol.header.copy()
            header.set_data_dtype(dtype)
            with atomic_path(OUT / f"{cid}_{kind}.nii.gz") as tmp:
                nib.save(nib.Nifti1Image(cropped.astype(dtype), affine, header), str(tmp))
            written = nib.load(str(OUT / f"{cid}_{kind}.nii.gz"))
            if axis_codes(written.affine) != axis_codes(vol.affine):  # the header says the anatomy
                raise SystemExit(f"{cid}_{kind}: written header reads {axis_codes(written.affine)}, "
                                 f"not {axis_codes(vol.affine)}")
        print(f"wrote {OUT}/{cid}_image.nii.gz and _label.nii.gz ({h}x{w}x{vol.image.shape[2]}, "
              f"voxel axes {axis_codes(vol.affine)})")


if __name__ == "__main__":
    main()
