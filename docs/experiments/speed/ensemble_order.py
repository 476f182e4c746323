# Probe for research_log.md (#12): does running the costliest member last make the gated ensemble faster, with
# the same mask? From the repository root with the venv's python, nothing else running:
#   python docs/experiments/speed/ensemble_order.py [repeats]
# For each development scan: the gated ensemble in the old order (SERVED) and the new one (ENSEMBLE_MEMBERS),
# interleaved, the median time of each; both masks against the exhaustive ensemble's; the share of slices the last
# member runs on.
import glob, os, statistics, sys, time

import numpy as np

from lasegm.data import load_volume
from lasegm.models import ENSEMBLE_MEMBERS, SERVED
from lasegm.predict import Ensemble, Segmenter
from lasegm.utils import set_cpu_threads

set_cpu_threads(2)
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
loaded = {a: Segmenter(f"checkpoints/{a}", device="cpu") for a in SERVED}
orders = {"old " + ",".join(SERVED): SERVED, "new " + ",".join(ENSEMBLE_MEMBERS): ENSEMBLE_MEMBERS}
calls = {}
for arch, m in loaded.items():  # count the slices each member runs on
    def counted(batch, run=m.runner, arch=arch):
        calls[arch] = calls.get(arch, 0) + len(batch)
        return run(batch)
    m.runner = counted
ensembles = {name: Ensemble([loaded[a] for a in order]) for name, order in orders.items()}
exhaustive = Ensemble([loaded[a] for a in SERVED], exhaustive=True)
data = os.environ.get("LASEGM_DATA", "../shared/data/Task02_Heart")
totals = {name: 0.0 for name in orders}
for path in sorted(glob.glob(data + "/imagesTr/*.nii.gz")):
    vol = load_volume(path)
    reference = exhaustive.segment(vol)
    times = {name: [] for name in orders}
    share = {}
    for _ in range(repeats):
        for name, ens in ensembles.items():
            calls.clear()
            t = time.perf_counter()
            mask = ens.segment(vol)
            times[name].append(time.perf_counter() - t)
            assert np.array_equal(mask, reference), (path, name)
            share[name] = calls[orders[name][-1]] / vol.image.shape[2]
    line = []
    for name in orders:
        median = statistics.median(times[name])
        totals[name] += median
        line.append(f"{name.split()[0]} {median:.2f}s (last member on {share[name]:.0%} of slices)")
    print(os.path.basename(path), vol.image.shape[2], "masks equal exhaustive;", "; ".join(line), flush=True)
print("total of medians:", {name: round(t, 1) for name, t in totals.items()})
