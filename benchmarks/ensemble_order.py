"""The served ensemble's member order (a script, not a timed test): for each order, the slices each network runs on
one patient, whether its mask equals the exhaustive ensemble's, and seconds per volume (ONNX Runtime, median of
`--repeats`, orders timed in turn). Members that slice alike skip exactly; a multi-view member's views, slicing
otherwise, skip by predict.VIEW_MIN_PROBABILITY.

    python benchmarks/ensemble_order.py --data $LASEGM_DATA [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from benchmark import count_slices, interleaved  # the sibling script, importable when this one runs as a script
from lasegm.checkpoint import ENSEMBLE_MEMBERS
from lasegm.data import find_cases, load_case
from lasegm.predict import Ensemble, load_segmenter
from lasegm.split import read_split

ROOT = Path(__file__).resolve().parents[1]


def slices_run(ensemble: Ensemble, vol) -> tuple[dict, object]:
    """Segment once, counting the slices each network is given; the mask."""
    counters = count_slices(ensemble)
    mask = ensemble.segment(vol)
    calls: dict = {}
    for (net, _), counter in zip(ensemble.networks, counters):
        calls[str(net.source)] = calls.get(str(net.source), 0) + counter.count
    return calls, mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--split_file", default=str(ROOT / "splits" / "split.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    case_id = read_split(args.split_file)["test"][0]  # the patient benchmarks/benchmark.py times
    vol = load_case({c.case_id: c for c in find_cases(args.data)}[case_id])
    models = {a: load_segmenter(Path(args.checkpoints) / a, device="cpu", backend="onnx") for a in ENSEMBLE_MEMBERS}
    full = Ensemble(list(models.values()), exhaustive=True).segment(vol)
    orders = {"+".join(o): Ensemble([models[a] for a in o]) for o in itertools.permutations(ENSEMBLE_MEMBERS)}
    for name, ensemble in orders.items():
        calls, mask = slices_run(ensemble, vol)
        print(f"{name}: slices run {calls}; voxels differing from the exhaustive mask {int((mask != full).sum())}")
    print(f"{case_id}, seconds per volume:", interleaved(orders, vol, args.repeats))


if __name__ == "__main__":
    main()
