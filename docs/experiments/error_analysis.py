"""Where the out-of-fold error is. Each held-out patient is segmented by its fold's model (as `lasegm cv` scores
it), and its error voxels are split by kind (atrium missed / extra), by distance to the reference surface (within
2 mm: a boundary disagreement; farther: a gross error) and by the slice's place along the atrium's extent on the
slice axis (its outer fifths, its middle, or slices with no reference atrium at all).

    python docs/experiments/error_analysis.py runs/cv/NAME [--split_file splits/cv5.json] [--out table.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]

from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.evaluate import refuse_trained_on
from lasegm.metrics import _surface, dice
from lasegm.predict import load_segmenter
from lasegm.split import read_split
from lasegm.utils import write_csv

BOUNDARY_MM = 2.0


def error_row(case_id: str, pred: np.ndarray, gt: np.ndarray, spacing) -> dict:
    pred, gt = pred.astype(bool), gt.astype(bool)
    fp, fn = pred & ~gt, gt & ~pred
    to_surface = ndimage.distance_transform_edt(~_surface(gt), sampling=spacing)  # mm to the reference surface
    zs = np.flatnonzero(gt.any(axis=(0, 1)))
    rel = (np.arange(gt.shape[2]) - zs[0]) / max(zs[-1] - zs[0], 1)  # 0..1 across the atrium's slices
    place = np.where((rel < 0) | (rel > 1), "beyond", np.where((rel < 0.2) | (rel > 0.8), "ends", "middle"))
    errors = int(fp.sum() + fn.sum())
    row = {"case": case_id, "dice": dice(pred, gt), "errors": errors, "voxel_ml": float(np.prod(spacing)) / 1000}
    for kind, mask in (("missed", fn), ("extra", fp)):
        near = mask & (to_surface <= BOUNDARY_MM)
        row[f"{kind}_boundary"] = int(near.sum()) / max(errors, 1)
        row[f"{kind}_gross"] = int((mask & ~near).sum()) / max(errors, 1)
        per_slice = mask.sum(axis=(0, 1))
        for where in ("ends", "middle", "beyond"):
            row[f"{kind}_{where}"] = int(per_slice[place == where].sum()) / max(errors, 1)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cv_dir")
    p.add_argument("--split_file", default=str(ROOT / "splits" / "cv5.json"))
    p.add_argument("--out", default=None)
    args = p.parse_args()
    split = read_split(args.split_file)
    cases = {c.case_id: c for c in find_cases(default_data_dir())}
    rows = []
    for f, fold_cases in enumerate(split["folds"]):
        seg = load_segmenter([Path(args.cv_dir) / f"fold-{f}" / "checkpoint"], device="cpu")
        refuse_trained_on(seg, fold_cases, split.get("duplicate_groups", []))  # out of fold only
        for case_id in fold_cases:
            vol = load_case(cases[case_id])
            rows.append({**error_row(case_id, seg.segment(vol), vol.label, vol.spacing), "fold": f})
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    rows.sort(key=lambda r: r["case"])
    total = sum(r["errors"] for r in rows)
    pooled = {k: sum(r[k] * r["errors"] for r in rows) / total for k in rows[0]
              if k.startswith(("missed_", "extra_"))}
    print(f"\n{args.cv_dir}: mean 3D Dice {np.mean([r['dice'] for r in rows]):.3f}; share of all error voxels:")
    for k, v in pooled.items():
        print(f"  {k:16s} {v:.3f}")
    if args.out:
        write_csv(args.out, rows)


if __name__ == "__main__":
    main()
