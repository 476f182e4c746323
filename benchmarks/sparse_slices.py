"""Sparse slicing against every slice (a script, not a timed test): each served model on each patient of a data
folder, run exhaustively and sparse (predict.SPARSE_MIN_PROBABILITY: every other slice, then the slices beside one
that holds something). Per patient: the slices the networks ran, the voxels where the masks differ, the Dice of
the two masks, the quality flags of each, and seconds (one run each, ONNX Runtime). The served models trained on
these patients, so this measures agreement and speed, not accuracy.

    python benchmarks/sparse_slices.py --data $LASEGM_DATA --out docs/experiments/speed/sparse-slices.json
        [--models unet fpn pspnet ensemble] [--cases la_003 la_019] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmark import cpu_name  # the sibling script, importable when this one runs as a script
from lasegm.checkpoint import ENSEMBLE_MEMBERS
from lasegm.data import find_cases, load_case
from lasegm.predict import Ensemble, load_segmenter, segment_scan
from lasegm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]


class CountedRunner:
    """A runner that counts the slices it is given; keeps the runner's preferred batch size."""

    def __init__(self, runner):
        self.runner, self.count = runner, 0
        self.batch_size = getattr(runner, "batch_size", None)

    def __call__(self, batch):
        self.count += len(batch)
        return self.runner(batch)


def load(name: str, checkpoints: Path, exhaustive: bool):
    if name == "ensemble":
        return Ensemble([checkpoints / a for a in ENSEMBLE_MEMBERS], device="cpu", backend="onnx",
                        exhaustive=exhaustive)
    return load_segmenter(checkpoints / name, device="cpu", backend="onnx", exhaustive=exhaustive)


def run(seg, vol) -> tuple[np.ndarray, dict, int]:
    """mask, report, slices run by all its networks."""
    counters = []
    for net, _ in seg.networks:
        if not isinstance(net.runner, CountedRunner):
            net.runner = CountedRunner(net.runner)
        net.runner.count = 0
        counters.append(net.runner)
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
        full_seg, sparse_seg = (load(name, Path(args.checkpoints), e) for e in (True, False))
        for case in cases:
            vol = load_case(case)
            run(full_seg, vol)  # warm-up: the first call of a session pays for its set-up
            full, full_report, full_slices = run(full_seg, vol)
            sparse, sparse_report, sparse_slices = run(sparse_seg, vol)
            both = int(np.count_nonzero(full & sparse))
            row = {"model": name, "case": case.case_id, "slices_exhaustive": full_slices,
                   "slices_sparse": sparse_slices, "voxels_differing": int(np.count_nonzero(full != sparse)),
                   "mask_voxels": int(full.sum()), "dice_sparse_vs_exhaustive": 2 * both / max(int(full.sum() + sparse.sum()), 1),
                   "flags_exhaustive": full_report["flags"], "flags_sparse": sparse_report["flags"],
                   "seconds_exhaustive": round(full_report["seconds"], 3),
                   "seconds_sparse": round(sparse_report["seconds"], 3)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for name in args.models:
        r = [row for row in rows if row["model"] == name]
        summary[name] = {"slices_ratio": sum(x["slices_sparse"] for x in r) / sum(x["slices_exhaustive"] for x in r),
                         "patients_identical": sum(x["voxels_differing"] == 0 for x in r), "patients": len(r),
                         "voxels_differing_max": max(x["voxels_differing"] for x in r),
                         "dice_min": min(x["dice_sparse_vs_exhaustive"] for x in r),
                         "flags_changed": sum(x["flags_sparse"] != x["flags_exhaustive"] for x in r),
                         "seconds_exhaustive_median": float(np.median([x["seconds_exhaustive"] for x in r])),
                         "seconds_sparse_median": float(np.median([x["seconds_sparse"] for x in r]))}
        print(name, summary[name])
    write_json(args.out, {"command": "python benchmarks/sparse_slices.py " + " ".join(
        f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items() if v),
        "date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(),
        "threads": args.threads, "summary": summary, "per_patient": rows})


if __name__ == "__main__":
    main()
