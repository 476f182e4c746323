"""What tells a mask made from a scan read in the wrong orientation from a real one? Candidate features of the
probability map, for each model: the development patients with correct headers (relabelled to their anatomy), and
la_003 / la_019 read wrongly in two ways (the release header trusted: RAS claimed for ASR voxels; and a format-1
model's view of a correct ASR header, i.e. the results the served models gave before lasegm read anatomy).

    LASEGM_DATA=... python docs/experiments/qc_wrong_axes.py                       # the served models
    LASEGM_DATA=... python docs/experiments/qc_wrong_axes.py --cv runs/cv/NAME ...  # each fold's model on its
                                                                                   # held-out patients (out of fold)
    LASEGM_DATA=... python docs/experiments/qc_wrong_axes.py --maps runs/cv/A [runs/cv/B ...]
        # out of fold from the probability maps the folds saved of their held-out patients (no weights needed): each
        # CV alone, then the members' mean (a multi-view model's), correct readings only
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from lasegm.anatomy import TASK02_HEADER_AXES
from lasegm.data import default_data_dir, find_cases, load_case, load_volume
from lasegm.models import SERVED
from lasegm.predict import Segmenter, load_segmenter
from lasegm.probability_maps import load_probability_map, on_grid, saved_maps
from lasegm.utils import write_csv
from lasegm.split import read_split

ROOT = Path(__file__).resolve().parents[2]
WRONG = ("la_003", "la_019")


def features(probs: np.ndarray, voxel_ml: float) -> dict:
    fg = probs >= 0.5
    labels, n = ndimage.label(fg, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())[1:] if n else np.array([0])
    largest = labels == (sizes.argmax() + 1) if n else fg
    inside = probs[largest]
    return {"volume_ml": round(float(largest.sum() * voxel_ml), 1),
            "components": int(n), "largest_share": round(float(sizes.max() / max(fg.sum(), 1)), 3),
            "mean_p_in_mask": round(float(inside.mean()) if inside.size else 0.0, 3),
            "share_p_over_0.9": round(float((inside >= 0.9).mean()) if inside.size else 0.0, 3),
            "uncertain_per_mask": round(float(((probs > 0.1) & (probs < 0.9)).sum() / max(largest.sum(), 1)), 3)}


def rows_for(seg: Segmenter, model: str, cases: dict, case_ids, seen: bool) -> list[dict]:
    old = dataclasses.replace(seg.pre, orientation=TASK02_HEADER_AXES)  # a format-1 model's frame
    rows = []
    for cid in case_ids:
        case = cases[cid]
        vol = load_case(case)  # relabelled: a correct header
        base = {"model": model, "case": cid, "trained_on_it": seen}
        rows.append({**base, "reading": "correct", **features(seg.probabilities(vol), vol.voxel_ml)})
        if cid in WRONG:
            release = load_volume(case.image)  # the release header trusted
            rows.append({**base, "reading": "release header trusted",
                         **features(seg.probabilities(release), vol.voxel_ml)})
            if isinstance(seg, Segmenter) and seg.pre.orientation == "ASR":  # sagittal models: what they did before
                slices, geo = old.prepare(vol.image, vol.affine)
                rows.append({**base, "reading": "format-1 model, correct header",
                             **features(old.restore(seg.model_probabilities(slices), geo), vol.voxel_ml)})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def rows_from_maps(cv_dirs: list[Path], cases: dict, folds: list[list[str]]) -> list[dict]:
    """Features of each held-out patient's out-of-fold map: each CV's, and with several CVs their mean."""
    rows = []
    for f, held_out in enumerate(folds):
        paths = [saved_maps(cv / f"fold-{f}", held_out) for cv in cv_dirs]
        missing = [str(cv / f"fold-{f}") for cv, ps in zip(cv_dirs, paths) if ps is None]
        if missing:
            sys.exit(f"no saved maps of every held-out patient in {', '.join(missing)}")
        for i, cid in enumerate(held_out):
            vol = load_case(cases[cid])
            maps = [on_grid(load_probability_map(ps[i]), vol.label.shape, vol.affine, str(ps[i])) for ps in paths]
            models = [cv.name for cv in cv_dirs] + (["+".join(cv.name for cv in cv_dirs)] if len(maps) > 1 else [])
            for model, probs in zip(models, maps + ([np.mean(maps, axis=0)] if len(maps) > 1 else [])):
                rows.append({"model": model, "case": cid, "fold": f, "trained_on_it": False, "reading": "correct",
                             **features(probs, vol.voxel_ml)})
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cv", nargs="*", default=[], help="cross-validation folders (runs/cv/NAME): out of fold")
    p.add_argument("--maps", nargs="*", default=[], help="cross-validation folders whose folds saved their held-out "
                   "patients' probability maps: out of fold, each alone and their mean")
    p.add_argument("--served", nargs="*", default=list(SERVED), help="without --cv or --maps: these served models")
    p.add_argument("--split_file", default=str(ROOT / "splits" / "cv5.json"))
    p.add_argument("--out", default=str(Path(__file__).with_suffix(".csv")))
    args = p.parse_args()
    cases = {c.case_id: c for c in find_cases(default_data_dir())}
    rows = []
    if args.maps:
        rows += rows_from_maps(list(map(Path, args.maps)), cases, read_split(args.split_file)["folds"])
    if not args.cv and not args.maps:
        for arch in args.served:
            # as predict serves it (a multi-view checkpoint: its views' mean)
            rows += rows_for(load_segmenter(ROOT / "checkpoints" / arch, device="cpu"), arch, cases, cases, True)
    for cv in map(Path, args.cv):
        for f, held_out in enumerate(read_split(args.split_file)["folds"]):
            seg = Segmenter(cv / f"fold-{f}" / "checkpoint")
            rows += rows_for(seg, f"{cv.name}/fold-{f}", cases, held_out, False)
    write_csv(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
