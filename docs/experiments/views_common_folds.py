"""Views (or any recipes) cross-validated on only some folds: each CV alone and their mean, on the held-out patients
of the folds that all of them finished. `lasegm cv --ensemble` scores complete CVs; this scores a partial one
(research_log.md, 2026-12-01, the coronal quick start; 2026-12-05, the served recipe's coronal folds). Where every
CV kept the fold's probability maps (lasegm.probability_maps) they are averaged, so committed records without
weights take part; otherwise each fold's checkpoints average their probabilities on the scan's own grid
(lasegm.predict). Largest component kept, no flip TTA; 3D Dice per patient. `--pairs` adds the mean of every two.

    python docs/experiments/views_common_folds.py runs/cv/qs-sagittal runs/cv/qs-axial runs/cv/qs-coronal
    python docs/experiments/views_common_folds.py --pairs runs/cv/unet-coronal docs/cv/2026-12-02-cpu/records/qs-axial
"""

import itertools
import json
import sys
from pathlib import Path

from lasegm.compare import paired
from lasegm.cv import score_saved_maps
from lasegm.data import default_data_dir, find_cases
from lasegm.evaluate import score_cases
from lasegm.postprocess import Postprocessing
from lasegm.predict import load_segmenter
from lasegm.probability_maps import map_flip_tta, saved_maps

pairs = "--pairs" in sys.argv
cvs = [Path(a) for a in sys.argv[1:] if a != "--pairs"]
folds = json.loads(Path("splits/cv5.json").read_text())["folds"]
done = [f for f in range(len(folds)) if all((cv / f"fold-{f}" / "summary.json").exists() for cv in cvs)]
cases = {c.case_id: c for c in find_cases(default_data_dir())}
groups = [(cv.name, [cv]) for cv in cvs] + [(" + ".join(c.name for c in g), list(g))
                                             for g in (itertools.combinations(cvs, 2) if pairs else [])]
if len(cvs) > 2 or not pairs:
    groups.append(("mean of all", cvs))
post = Postprocessing(largest_component=True, flip_tta=False)
scores: dict[str, dict[str, float]] = {}  # name -> case -> 3D Dice
for f in done:
    held_out = [cases[c] for c in folds[f]]
    for name, members in groups:
        maps = [saved_maps(cv / f"fold-{f}", folds[f]) for cv in members]
        if all(m is not None and not map_flip_tta(m[0]) for m in maps):
            rows = score_saved_maps([[m[i] for m in maps] for i in range(len(held_out))], held_out, post)
        else:
            seg = load_segmenter([cv / f"fold-{f}" / "checkpoint" for cv in members], device="cpu",
                                 largest_component=True)
            rows = score_cases(seg, held_out)
        for row in rows:
            scores.setdefault(name, {})[row["case"]] = row["dice"]
            print(f"fold {f} {row['case']} {name}: {row['dice']:.4f}", flush=True)
base = scores[cvs[0].name]
print(f"folds {done}, {len(base)} patients; paired differences against {cvs[0].name}:")
for name, s in scores.items():
    r = paired(s, base)
    print(f"  {name:40s} {r['mean']:.4f}  {r['difference_mean']:+.4f} +- {r['difference_std']:.4f}  "
          f"better on {r['better']}, worst {r['worst']:.4f}")
