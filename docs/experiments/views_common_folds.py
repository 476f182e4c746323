"""Views (or any recipes) cross-validated on only some folds: each CV alone and their mean, on the held-out patients
of the folds that all of them finished. `lasegm cv --ensemble` scores complete CVs; this scores a partial one
(research_log.md, 2026-12-01, the coronal quick start). Each fold's checkpoints average their probabilities on the
scan's own grid (lasegm.predict), largest component kept; 3D Dice per patient.

    python docs/experiments/views_common_folds.py runs/cv/qs-sagittal runs/cv/qs-axial runs/cv/qs-coronal
"""

import json
import sys
from pathlib import Path

from lasegm.compare import paired
from lasegm.data import default_data_dir, find_cases
from lasegm.evaluate import score_cases
from lasegm.predict import load_segmenter

cvs = [Path(a) for a in sys.argv[1:]]
folds = json.loads(Path("splits/cv5.json").read_text())["folds"]
done = [f for f in range(len(folds)) if all((cv / f"fold-{f}" / "summary.json").exists() for cv in cvs)]
cases = {c.case_id: c for c in find_cases(default_data_dir())}
scores: dict[str, dict[str, float]] = {}  # name -> case -> 3D Dice
for f in done:
    held_out = [cases[c] for c in folds[f]]
    for name, members in [(cv.name, [cv]) for cv in cvs] + [("mean of all", cvs)]:
        seg = load_segmenter([cv / f"fold-{f}" / "checkpoint" for cv in members], device="cpu", largest_component=True)
        for row in score_cases(seg, held_out):
            scores.setdefault(name, {})[row["case"]] = row["dice"]
            print(f"fold {f} {row['case']} {name}: {row['dice']:.4f}", flush=True)
base = scores[cvs[0].name]
print(f"folds {done}, {len(base)} patients; paired differences against {cvs[0].name}:")
for name, s in scores.items():
    r = paired(s, base)
    print(f"  {name:14s} {r['mean']:.4f}  {r['difference_mean']:+.4f} +- {r['difference_std']:.4f}  "
          f"better on {r['better']}")
