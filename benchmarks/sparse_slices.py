"""Sparse slicing against every slice (a script, not a timed test): each served model on each patient of a data
folder, run three ways: exhaustive (every network on every slice), every slice (as served before sparse slicing: a
view or ensemble member after the first still skips what those before it rule out) and sparse (predict.
SPARSE_MIN_PROBABILITY: each network runs every other slice, then the slices beside one that holds something). Per
patient and way: the slices the networks ran, the voxels where the mask differs from the every-slice one, the Dice
of the two, the quality flags, and seconds (one run each, ONNX Runtime: time it with nothing else running). The
served models trained on these patients, so this measures agreement and speed, not accuracy.

    python benchmarks/sparse_slices.py --data $LASEGM_DATA --out docs/experiments/speed/sparse-slices.json
        [--models unet fpn pspnet ensemble] [--cases la_003 la_019] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmark import count_slices, cpu_name  # the sibling script, importable when this one runs as a script
from lasegm.checkpoint import ENSEMBLE_MEMBERS
from lasegm.data import find_cases, load_case
from lasegm.predict import Ensemble, load_segmenter, segment_scan
from lasegm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]


WAYS = ("exhaustive", "every_slice", "sparse")


def load(name: str, checkpoints: Path, way: str):
    if name == "ensemble":
        seg = Ensemble([checkpoints / a for a in ENSEMBLE_MEMBERS], device="cpu", backend="onnx",
                       exhaustive=way == "exhaustive")
    else:
        seg = load_segmenter(checkpoints / name, device="cpu", backend="onnx", exhaustive=way == "exhaustive")
    for net, _ in seg.networks:  # every slice: each network exhaustive, an ensemble's skipping left as it is
        net.exhaustive = way != "sparse"
    return seg


def run(seg, vol) -> tuple[np.ndarray, dict, int]:
    """mask, report, slices run by all its networks."""
    counters = count_slices(seg)
    mask, report = segment_scan(seg, vol)
    return mask, report, sum(c.count for c in counters)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, help="the JSON to write")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--models", nargs="+", default=["unet", "fpn", "pspnet", "ensemble"])
    p.add_argument("--cases", nargs="*", help="patient ids (default: every labelled case)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cases = [c for c in find_cases(args.data) if not args.cases or c.case_id in args.cases]
    rows = []
    for name in args.models:
        segs = {way: load(name, Path(args.checkpoints), way) for way in WAYS}
        for i, case in enumerate(cases):
            vol = load_case(case)
            if i == 0:  # warm-up: the first call of a session pays for its set-up
                for seg in segs.values():
                    run(seg, vol)
            results = {way: run(seg, vol) for way, seg in segs.items()}
            reference = results["every_slice"][0]
            row = {"model": name, "case": case.case_id, "mask_voxels": int(reference.sum())}
            for way, (mask, report, slices) in results.items():
                both = int(np.count_nonzero(mask & reference))
                row[way] = {"slices": slices, "voxels_differing": int(np.count_nonzero(mask != reference)),
                            "dice_to_every_slice": 2 * both / max(int(mask.sum() + reference.sum()), 1),
                            "flags": report["flags"], "seconds": round(report["seconds"], 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for name in args.models:
        r = [row for row in rows if row["model"] == name]
        summary[name] = {way: {"slices": sum(x[way]["slices"] for x in r),
                               "patients_identical": sum(x[way]["voxels_differing"] == 0 for x in r),
                               "voxels_differing_max": max(x[way]["voxels_differing"] for x in r),
                               "dice_min": min(x[way]["dice_to_every_slice"] for x in r),
                               "flags_changed": sum(x[way]["flags"] != x["every_slice"]["flags"] for x in r),
                               "seconds_median": float(np.median([x[way]["seconds"] for x in r]))}
                         for way in WAYS}
        summary[name]["patients"] = len(r)
        print(name, json.dumps(summary[name]))
    write_json(args.out, {"command": "python benchmarks/sparse_slices.py " + " ".join(
        f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if v),
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(),
        "threads": args.threads, "summary": summary, "per_patient": rows})


if __name__ == "__main__":
    main()
