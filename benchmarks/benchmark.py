"""Speed benchmark (a script, not a timed test): training throughput, time per patient volume,
peak memory and demo latency for the committed checkpoints.

    python benchmarks/benchmark.py --data $LASEGM_DATA [--threads 2] [--out docs/benchmarks.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "demo"))

from lasegm.data import find_cases, load_case
from lasegm.models import build_model, checkpoint_recipe, read_checkpoint_config
from lasegm.predict import Ensemble, Segmenter
from lasegm.split import read_split
from lasegm.train import loss_terms
from lasegm.utils import write_json


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_throughput(config: dict, steps: int = 6, batch: int = 16) -> float:
    """Slices per second for forward + backward + AdamW step at the checkpoint's input size."""
    pre, _ = checkpoint_recipe(config, config.get("arch"))
    model = build_model(config["arch"], config["model_kwargs"]).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    loss_fn = loss_terms("dice_bce")
    x = torch.randn(batch, pre.channels, pre.image_size, pre.image_size)
    y = (torch.rand(batch, 1, pre.image_size, pre.image_size) > 0.9).float()
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up the allocator
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def seconds_per_volume(seg, vol, repeats: int) -> float:
    """Median wall time of the whole pipeline (normalise, resample, predict, restore, post-process)."""
    seg.segment(vol)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg.segment(vol)
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--split_file", default=str(ROOT / "splits" / "split.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    case_id = read_split(args.split_file)["test"][0]
    case = next(c for c in find_cases(args.data) if c.case_id == case_id)
    vol = load_case(case)
    results = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine(), "patient": case_id,
               "slices": int(vol.image.shape[2]), "models": {}}
    for ckpt in sorted(Path(args.checkpoints).iterdir()):
        if not (ckpt / "config.json").exists():
            continue
        config = read_checkpoint_config(ckpt)
        seg = Segmenter(ckpt, device="cpu")
        results["models"][ckpt.name] = {
            "arch": config["arch"], "seconds_per_volume": seconds_per_volume(seg, vol, args.repeats),
            "train_slices_per_s": round(train_throughput(config), 1),
            "checkpoint_mb": round(sum(f.stat().st_size for f in ckpt.iterdir()) / 1e6, 2),
            "parameters_m": round(sum(p.numel() for p in seg.model.parameters()) / 1e6, 2),
        }
        print(ckpt.name, results["models"][ckpt.name], flush=True)

    members = [Path(args.checkpoints) / name for name in results["models"]]
    results["ensemble_seconds_per_volume"] = seconds_per_volume(Ensemble(members, device="cpu"), vol, args.repeats)
    print("ensemble", results["ensemble_seconds_per_volume"], flush=True)

    import app  # the demo, as a user clicks it: models loaded at start (as app.main does), then timed

    example = sorted((ROOT / "demo" / "examples").glob("*_image.nii.gz"))[0]
    label = example.with_name(example.name.replace("_image", "_label"))
    for arch in (*app.ARCHS, app.ENSEMBLE):
        app.get_model(arch)
    quiet = {"progress": lambda *a, **k: None}
    for key, choice in (("demo_click_to_result_unet_s", "unet"), ("demo_click_to_result_all_three_s", app.ALL)):
        times = []
        for _ in range(args.repeats):  # the whole answer: masks, metrics, three planes, 3D meshes, files
            t0 = time.perf_counter()
            state = app.segment(str(example), str(label), choice, **quiet)[0]
            times.append(time.perf_counter() - t0)
        results[key] = round(statistics.median(times), 2)
    results["demo_example_slices"] = int(state["image"].shape[2])
    lat = []  # one plane's slider moved: all three planes and models redrawn from the cached results
    for z in range(0, state["image"].shape[2], 3):
        for mode in ("overlay", "contour", "error map"):
            t0 = time.perf_counter()
            app.render(state, z, z, z, mode, 0.45, None, None)
            lat.append((time.perf_counter() - t0) * 1000)
    results["demo_plane_change_ms_median"] = round(statistics.median(lat), 2)
    results["demo_plane_change_ms_max"] = round(max(lat), 2)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
