"""View aggregation's latency (a script, not a timed test): each served checkpoint's recipe served as a multi-view
checkpoint of 1, 2 and 3 planes (sagittal; + axial; + coronal; and axial + coronal), seconds per patient volume on
2 CPU cores.

    python benchmarks/views.py --data $LASEGM_DATA [--threads 2] [--backend onnx] [--out docs/benchmarks-views.json]
        [--trained_views runs/cv/unet-coronal/fold-1/checkpoint runs/cv/unet-axial/fold-1/checkpoint --out F.json]
        [--trained_only]

The views carry the served weights under another slicing plane: a network's cost does not depend on its weights, so
run on every slice (exhaustive) the time is the one trained views would take there; their masks mean nothing. A view
after the first skips the slices the first rules out (predict.VIEW_MIN_PROBABILITY), which only trained views show:
--trained_views times such checkpoints of one architecture (e.g. the folds that held the patient out) alone and as
one multi-view checkpoint, in each order, gated and exhaustive, in one run with the served checkpoints as they are
served (their ratios are what compares across runs); --trained_only leaves out the re-planed served weights. Each is
published with `lasegm export`, the way a served multi-view checkpoint is.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from benchmark import cpu_name, interleaved  # the sibling script, importable when this one runs as a script
from lasegm.checkpoint import CONFIG_FILE, ONNX_FILE, SERVED, WEIGHTS_FILE, model_folders, slicing_planes
from lasegm.data import find_cases, load_case
from lasegm.export import export_views
from lasegm.predict import load_segmenter
from lasegm.preprocess import PLANE_ORIENTATIONS, RECIPES, VERSION
from lasegm.split import read_split
from lasegm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
PLANES = ("sagittal", "axial", "coronal")  # the served plane first, then the others in the order they pay


def replane(ckpt: Path, plane: str, dest: Path) -> Path:
    """A copy of a checkpoint that slices along `plane` (same weights), under today's preprocessing version: a view
    trained now models only the slices within the central field of view (version 3), and a Task02 scan's axial and
    coronal stacks are 256 slices long, of which 160 lie within 200 mm."""
    dest.mkdir(parents=True)
    for name in (WEIGHTS_FILE, ONNX_FILE):
        if (ckpt / name).is_file():
            shutil.copy2(ckpt / name, dest / name)
    config = json.loads((ckpt / CONFIG_FILE).read_text())
    version = dict(version=VERSION, normalization=RECIPES[VERSION][0], resize=RECIPES[VERSION][1])
    config["preprocessing"].update(orientation=PLANE_ORIENTATIONS[plane], **version)
    config["train_config"]["plane"] = plane
    (dest / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return dest


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--split_file", default=str(ROOT / "splits" / "split.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="the JSON to write (default docs/benchmarks-views.json; required with --trained_views)")
    p.add_argument("--trained_views", nargs="*", default=[], metavar="FOLDER",
                   help="trained checkpoints of one architecture slicing along different planes")
    p.add_argument("--trained_only", action="store_true",
                   help="time the trained views (and the served checkpoints beside them) only")
    args = p.parse_args()
    if args.trained_only and not args.trained_views:  # else it would time nothing and overwrite --out with that
        p.error("--trained_only needs --trained_views")
    if args.out is None and args.trained_views:  # the default holds the re-planed served models' run: keep it
        p.error("--trained_views needs --out")
    args.out = args.out or str(ROOT / "docs" / "benchmarks-views.json")
    torch.set_num_threads(args.threads)
    case_id = read_split(args.split_file)["test"][0]  # the patient benchmarks/benchmark.py times
    vol = load_case({c.case_id: c for c in find_cases(args.data)}[case_id])
    results = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "backend": args.backend,
               "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "cpu": cpu_name(),
               "patient": case_id, "shape": list(vol.image.shape), "repeats": args.repeats, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in () if args.trained_only else SERVED:
            ckpt = model_folders(Path(args.checkpoints) / arch)[0]  # a multi-view checkpoint: its first network
            views = [replane(ckpt, plane, Path(tmp) / arch / plane) for plane in PLANES]
            combos = [PLANES[:k] for k in range(1, len(PLANES) + 1)] + [PLANES[1:]]  # + axial + coronal
            segmenters = {}
            for combo in combos:
                members = [views[PLANES.index(plane)] for plane in combo]
                folder = members[0] if len(members) == 1 else export_views(
                    members, Path(tmp) / arch / "+".join(combo), onnx=args.backend == "onnx")
                # untrained views: no slice skipped
                segmenters["+".join(combo)] = load_segmenter(folder, device="cpu", backend=args.backend,
                                                             exhaustive=True)
            results["models"][arch] = {"seconds_per_volume": interleaved(segmenters, vol, args.repeats)}
            print(arch, results["models"][arch], flush=True)
        if args.trained_views:
            results["trained_views"] = time_trained_views(args.trained_views, Path(tmp) / "trained", vol, args)
            print("trained views", results["trained_views"], flush=True)
    write_json(args.out, results)
    print(json.dumps(results, indent=2))


def time_trained_views(folders: list[str], tmp: Path, vol, args) -> dict:
    """Each trained view alone, and their multi-view checkpoint in each order, gated and exhaustive; beside them
    each served checkpoint as served."""
    views = [Path(f) for f in folders]
    planes = [slicing_planes(v)[0] for v in views]
    segmenters = {}
    for order in (views, views[::-1]):
        name = "+".join(planes[views.index(v)] for v in order)
        segmenters[name] = load_segmenter(export_views(order, tmp / name, onnx=args.backend == "onnx"),
                                          device="cpu", backend=args.backend)
        segmenters[name + " exhaustive"] = load_segmenter(tmp / name, device="cpu", backend=args.backend,
                                                          exhaustive=True)
    for plane in planes:  # a view alone, from the multi-view checkpoint's own copy (with its ONNX model)
        segmenters[plane] = load_segmenter(tmp / name / plane, device="cpu", backend=args.backend)
    for arch in SERVED:
        segmenters["served " + arch] = load_segmenter(Path(args.checkpoints) / arch, device="cpu",
                                                      backend=args.backend)
    return {"checkpoints": folders, "seconds_per_volume": interleaved(segmenters, vol, args.repeats)}


if __name__ == "__main__":
    main()
