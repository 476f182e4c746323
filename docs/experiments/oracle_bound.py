"""How far could combining the cross-validated models go? For each patient, the best out-of-fold 3D Dice any of
the given tables reached (an oracle that knows the answer picks the model per patient). Averaging the same models
stays below it in what was measured (the CPU quick-start U-Net + FPN ensemble: 0.862 out of fold, their bound
0.870), so a target above this bound needs better models, not another way to combine these.

    python docs/experiments/oracle_bound.py docs/cv/2026-11-27-h100/unet-oof.csv docs/cv/2026-11-28-h200/unet3d-ds-oof.csv
"""

from __future__ import annotations

import argparse
import csv

import numpy as np


def per_patient(path: str) -> dict[str, float]:
    with open(path, newline="") as f:
        return {row["case"]: float(row["dice"]) for row in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", nargs="+", help="out-of-fold CSVs written by `lasegm cv` (columns case, dice)")
    ap.add_argument("--floor", type=float, default=0.88, help="count the patients below this Dice")
    args = ap.parse_args()
    tables = [per_patient(p) for p in args.tables]
    cases = sorted(tables[0])
    if any(sorted(t) != cases for t in tables):
        raise SystemExit("the tables do not score the same patients")
    scores = np.array([[t[c] for c in cases] for t in tables])  # tables x patients
    for path, row in zip(args.tables, scores):
        print(f"{path}: mean {row.mean():.3f}, min {row.min():.3f}")
    best = scores.max(axis=0)
    worst = int(best.argmin())
    print(f"best per patient: mean {best.mean():.3f} +- {best.std():.3f}, min {best.min():.3f} ({cases[worst]}), "
          f"{int((best < args.floor).sum())} of {len(cases)} patients below {args.floor}")


if __name__ == "__main__":
    main()
