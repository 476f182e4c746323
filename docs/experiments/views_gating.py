"""What skipping a second view's slices costs, out of fold, from the folds' saved probability maps
(lasegm.predict.VIEW_MIN_PROBABILITY: a view slicing differently from the first is not run on its slices where the
first view gives every voxel < 5 %). For each held-out patient: the mean of the two views' maps exhaustively, and
with the second view's skipped slices counting 0, both with the largest component kept; 3D Dice of each, and the
share of the second view's slices run. Each order of the two views is measured (research_log.md, 2026-12-06).

    python docs/experiments/views_gating.py runs/cv/unet-coronal runs/cv/unet-axial
"""

import json
import sys
from pathlib import Path

import numpy as np

from lasegm.checkpoint import checkpoint_recipe, read_checkpoint_config
from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.metrics import dice
from lasegm.postprocess import Postprocessing
from lasegm.predict import VIEW_MIN_PROBABILITY, open_slices, slice_maxima
from lasegm.probability_maps import load_probability_map, on_grid, saved_maps

cvs = [Path(a) for a in sys.argv[1:3]]
folds = json.loads(Path("splits/cv5.json").read_text())["folds"]
cases = {c.case_id: c for c in find_cases(default_data_dir())}
post = Postprocessing(largest_component=True, flip_tta=False)
print(f"{'case':8s} {'order':28s} {'exhaustive':>10s} {'gated':>8s} {'slices run':>10s}")
totals = {}
for f, held_out in enumerate(folds):
    maps = [saved_maps(cv / f"fold-{f}", held_out) for cv in cvs]
    pres = [checkpoint_recipe(c, cv)[0] for c, cv in
            ((read_checkpoint_config(cv / f"fold-{f}" / "checkpoint", weights=False), cv) for cv in cvs)]
    for i, case_id in enumerate(held_out):
        vol = load_case(cases[case_id])
        probs = [on_grid(load_probability_map(m[i]), vol.label.shape, vol.affine, str(m[i])) for m in maps]
        full = dice(post.binarize((probs[0] + probs[1]) / 2), vol.label)
        for first, second in ((0, 1), (1, 0)):
            geometry = pres[second].geometry(vol.affine, vol.image.shape)
            # as predict.Ensemble decides for the second of two views (each model slice one scan slice, as on Task02)
            assert geometry.slice_weights is None, "a view resampling its slice axis: model slices are not scan slices"
            opened = np.zeros(geometry.depth, bool)
            opened[open_slices(slice_maxima(probs[first], geometry), 1.0, 2 * post.threshold,
                               1.0 - VIEW_MIN_PROBABILITY)] = True
            shut = np.zeros(geometry.model_shape, bool)  # the second view's skipped slices, on the scan's grid
            np.moveaxis(shut, 2, 0)[slice(*geometry.slices)][~opened] = True
            gated = probs[second] * ~geometry.to_input(shut)
            score = dice(post.binarize((probs[first] + gated) / 2), vol.label)
            order = f"{cvs[first].name} then {cvs[second].name}"
            totals.setdefault(order, []).append((full, score, opened.mean()))
            print(f"{case_id:8s} {order:28s} {full:10.4f} {score:8.4f} {opened.mean():10.2f}", flush=True)
for order, rows in totals.items():
    full, gated, share = np.array(rows).T
    print(f"{order}: {len(rows)} patients, exhaustive {full.mean():.4f}, gated {gated.mean():.4f} "
          f"(largest change {np.abs(gated - full).max():.4f}), second view run on {share.mean():.0%} of its slices "
          f"({share.min():.0%}-{share.max():.0%})")
