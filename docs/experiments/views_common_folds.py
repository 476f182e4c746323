"""Views (or any recipes) cross-validated on only some folds: each CV alone and their mean, on the held-out patients
of the folds that all of them finished. Each CV alone is its folds' own validation (summary.json); a mean is
`lasegm cv --ensemble ... --folds ...` (a partial table under runs/cv, from the folds' probability maps where all
kept them, so committed records without weights take part). Largest component kept, no flip TTA; 3D Dice per
patient. `--pairs` adds the mean of every two (research_log.md, 2026-12-01 and 2026-12-05).

    python docs/experiments/views_common_folds.py runs/cv/qs-sagittal runs/cv/qs-axial runs/cv/qs-coronal
    python docs/experiments/views_common_folds.py --pairs runs/cv/unet-coronal docs/cv/2026-12-02-cpu/records/qs-axial
"""

import itertools
import json
import sys
from pathlib import Path

from lasegm.cli import main
from lasegm.compare import paired, read_tables
from lasegm.cv import oof_stem

FOLDS_FILE = "splits/cv5.json"
pairs = "--pairs" in sys.argv
cvs = [Path(a) for a in sys.argv[1:] if a != "--pairs"]
folds = json.loads(Path(FOLDS_FILE).read_text())["folds"]
done = [f for f in range(len(folds)) if all((cv / f"fold-{f}" / "summary.json").exists() for cv in cvs)]
if not done:
    sys.exit(f"no fold is finished by all of {', '.join(map(str, cvs))}")
scores = {cv.name: read_tables([cv / f"fold-{f}" / "summary.json" for f in done])[0] for cv in cvs}
groups = [(" + ".join(cv.name for cv in g), g) for g in (itertools.combinations(cvs, 2) if pairs else [])]
if len(cvs) > 2 or not pairs:
    groups.append(("mean of all", cvs))
for label, group in groups:
    name = "views-" + "+".join(cv.name for cv in group)
    if main(["--quiet", "cv", "--name", name, "--split_file", FOLDS_FILE, "--largest_component=true",
             "--flip_tta=false", "--ensemble", *map(str, group), "--folds", *map(str, done)]):
        sys.exit(1)
    scores[label] = read_tables([Path("runs/cv") / name / f"{oof_stem(done, len(folds))}.json"])[0]
base = scores[cvs[0].name]
print(f"folds {done}, {len(base)} patients; paired differences against {cvs[0].name}:")
for name, s in scores.items():
    r = paired(s, base)
    print(f"  {name:40s} {r['mean']:.4f}  {r['difference_mean']:+.4f} +- {r['difference_std']:.4f}  "
          f"better on {r['better']}, worst {r['worst']:.4f}")
