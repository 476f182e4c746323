"""Out-of-fold post-processing grid on a finished `lasegm cv`: threshold x largest component x flip TTA.

Each fold's checkpoint segments only its own held-out patients (no leakage); the probabilities are computed
once per TTA setting and re-thresholded. Prints the OOF mean 3D Dice per setting and writes a JSON.

    python docs/experiments/oof_postprocessing.py runs/cv/NAME [--thresholds 0.3 0.4 0.5 0.6]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.metrics import dice
from lasegm.postprocess import Postprocessing
from lasegm.predict import Segmenter


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--folds_file", default="splits/cv5.json")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6])
    args = ap.parse_args()
    folds = json.loads(Path(args.folds_file).read_text())["folds"]
    cases = {c.case_id: c for c in find_cases(default_data_dir())}
    scores: dict = {}
    for f, held_out in enumerate(folds):
        for tta in (False, True):
            seg = Segmenter(args.cv_dir / f"fold-{f}" / "checkpoint", device="cpu", flip_tta=tta)
            assert not set(held_out) & set(seg.config["trained_on"]), "fold checkpoint trained on its own patients"
            for case_id in held_out:
                vol = load_case(cases[case_id])
                probs = seg.probabilities(vol)
                for thr, lc in itertools.product(args.thresholds, (False, True)):
                    mask = Postprocessing(threshold=thr, largest_component=lc).binarize(probs)
                    scores.setdefault(f"thr={thr} lc={lc} tta={tta}", {})[case_id] = float(dice(mask, vol.label))
        print(f"fold {f} done", flush=True)
    table = {k: {"mean": float(np.mean(list(v.values()))), "min": float(np.min(list(v.values()))), "per_patient": v}
             for k, v in scores.items()}
    for k, v in sorted(table.items(), key=lambda kv: -kv[1]["mean"]):
        print(f"{k:28s} OOF 3D Dice {v['mean']:.4f}  min {v['min']:.4f}")
    out = args.cv_dir / "oof-postprocessing-grid.json"
    out.write_text(json.dumps(table, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
