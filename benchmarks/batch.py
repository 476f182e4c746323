"""Batch speed benchmark (a script, not a timed test): `lasegm predict --output FOLDER` over a folder of scans in one
process, against one `lasegm predict` process per scan. A batch should cost its scans' segmentation time plus one
start-up (imports, model load), not one start-up per scan.

    python benchmarks/batch.py --data $LASEGM_DATA [--scans 20] [--checkpoint checkpoints/unet]
        [--out docs/benchmarks-batch.json]

The scans are the data folder's images (Task02 files: their voxel axes declared, --axes ASR), repeated under other
names up to --scans.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lasegm.data import find_cases
from lasegm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lasegm", "--quiet", *command], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--scans", type=int, default=20)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "unet"))
    p.add_argument("--single_runs", type=int, default=3, help="one-scan processes timed (median)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-batch.json"))
    args = p.parse_args()
    images = [c.image for c in find_cases(args.data)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        for i in range(args.scans):
            os.symlink(images[i % len(images)], folder / f"scan_{i:02d}.nii.gz")
        single = [timed(["predict", "--checkpoint", args.checkpoint, "--input", str(folder / f"scan_{i:02d}.nii.gz"),
                         "--axes", "ASR", "--output", f"{tmp}/one.nii.gz"]) for i in range(args.single_runs)]
        batch = timed(["predict", "--checkpoint", args.checkpoint, "--input", str(folder), "--axes", "ASR",
                       "--output", f"{tmp}/masks"])
        with open(f"{tmp}/masks/summary.csv") as fh:
            rows = list(csv.DictReader(fh))
    per_scan = [float(r["seconds"]) for r in rows if r["status"] == "ok"]
    one_process = statistics.median(single)
    results = {
        "date": time.strftime("%Y-%m-%d"), "cpu_cores": os.cpu_count(), "checkpoint": Path(args.checkpoint).name,
        "scans": args.scans, "segmented": len(per_scan),
        "batch_wall_s": round(batch, 1),
        "batch_segmentation_s_per_scan_median": round(statistics.median(per_scan), 2),
        "batch_start_up_and_io_s": round(batch - sum(per_scan), 1),
        "one_process_per_scan_s_median": round(one_process, 2),
        "one_process_per_scan_total_s_estimate": round(one_process * args.scans, 1),
        "batch_speedup_vs_one_process_per_scan": round(one_process * args.scans / batch, 2),
        "note": "seconds per scan: summary.csv's (segmentation, post-processing and flags, not reading or writing); "
                "start-up and I/O = batch wall time minus their sum",
    }
    write_json(args.out, results)
    for key, value in results.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
