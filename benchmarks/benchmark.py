"""Speed benchmark (a script, not a timed test): inference per patient volume on each backend (as
ratios to PyTorch eager measured in the same run), flip TTA, the ensemble, `lasegm predict` as a whole
process, training throughput, one epoch's validation, and the demo's latency, for the committed checkpoints.

    python benchmarks/benchmark.py --data $LASEGM_DATA [--threads 2] [--out docs/benchmarks.json]
    python benchmarks/benchmark.py --data $LASEGM_DATA --gpu_training   (on a GPU: docs/benchmarks-gpu.json)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path

import onnxruntime
import torch

from lasegm.checkpoint import checkpoint_recipe, model_folders, read_checkpoint_config
from lasegm.data import find_cases, load_all_cached, load_case
from lasegm.models import ENSEMBLE_MEMBERS, SERVED, build_model
from lasegm.predict import Ensemble, Segmenter, load_segmenter
from lasegm.runtime import TorchRunner, memory_layout
from lasegm.split import read_split, split_cases
from lasegm.train import graph_forward_backward, loss_terms, train_step, validate
from lasegm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch_eager", "torch", "onnx")  # eager = what predict ran before channels_last and ONNX


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_throughput(config: dict, channels_last: bool, steps: int = 6, batch: int = 16, device: str = "cpu",
                     cuda_graph: bool = False) -> float:
    """Slices per second for lasegm.train's step (forward + backward + AdamW) at the checkpoint's input size, as
    it runs on that device (fused AdamW on a GPU; optionally the CUDA-graphed forward/backward)."""
    torch.manual_seed(0)
    dev = torch.device(device)
    pre, _ = checkpoint_recipe(config, config.get("arch"))
    model = build_model(config["arch"], config["model_kwargs"]).train()
    layout = memory_layout(model) if channels_last else torch.contiguous_format  # as lasegm.train picks it
    model.to(dev, memory_format=layout)
    shape = (batch, pre.channels, pre.image_size, pre.image_size)
    graphed = cuda_graph and dev.type == "cuda" and graph_forward_backward(model, shape, layout)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, fused=dev.type == "cuda")
    loss_fn = loss_terms("dice_bce")
    x = torch.randn(shape, device=dev).contiguous(memory_format=layout)
    y = (torch.rand(batch, 1, pre.image_size, pre.image_size, device=dev) > 0.9).float()
    step = partial(train_step, model, opt, loss_fn, x, y, graphed)

    if dev.type == "cuda":  # kernels run asynchronously: time a run of steps between two synchronisations
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        return round(batch * steps / (time.perf_counter() - t0), 1)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        step()
        if i:  # the first step warms up the allocator
            times.append(time.perf_counter() - t0)
    return round(batch / statistics.median(times), 1)


class Replay:
    """A runner that records a network's outputs once, then gives them back in the same order: it times
    everything around the network."""

    def __init__(self, runner):
        self.runner, self.batch_size, self.outputs, self.next = runner, runner.batch_size, [], None

    def __call__(self, batch):
        if self.next is None:
            self.outputs.append(self.runner(batch))
            return self.outputs[-1]
        self.next += 1
        return self.outputs[(self.next - 1) % len(self.outputs)]


def validation_seconds(ckpt: Path, data: str, split_file: str, repeats: int) -> dict:
    """One epoch's validation as lasegm.train runs it (split_file's validation patients, scored on their own
    grids), with the network (one run, which records its outputs) and with its outputs replayed (median of
    `repeats`): the CPU work that a GPU cannot take over (about half of each epoch on the H200, research_log
    2026-11-28)."""
    config = read_checkpoint_config(ckpt)
    pre, post = checkpoint_recipe(config, ckpt)
    cases = load_all_cached(split_cases(split_file, find_cases(data))["val"], pre)
    replay = Replay(TorchRunner.from_checkpoint(ckpt, "cpu"))
    t0 = time.perf_counter()
    validate(None, cases, pre, post, "cpu", runner=replay)
    with_network = time.perf_counter() - t0
    replay.next, times = 0, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        validate(None, cases, pre, post, "cpu", runner=replay)
        times.append(time.perf_counter() - t0)
    return {"patients": [c.case_id for c in cases], "with_network_s": round(with_network, 2),
            "without_network_s": round(statistics.median(times), 3)}


def gpu_training(checkpoints: Path, out: str) -> None:
    """`--gpu_training`: training throughput of each served recipe on this machine's GPU, kernel by kernel and
    CUDA-graphed (the default), in a file of its own (the CPU benchmark's numbers stay those of a 2-core CPU)."""
    if not torch.cuda.is_available():
        raise SystemExit("--gpu_training needs a CUDA GPU")
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(), "batch": 16, "steps": 50,
               "note": "synthetic batches: the network's step alone, without loading, augmentation or validation",
               "models": {}}
    for arch in SERVED:
        # the recipe (of each view of a multi-view checkpoint); weights are not timed
        config = read_checkpoint_config(model_folders(checkpoints / arch)[0], weights=False)
        eager, graphed = (train_throughput(config, True, steps=50, device="cuda", cuda_graph=graph)
                          for graph in (False, True))
        results["models"][arch] = {"train_slices_per_s_eager": eager, "train_slices_per_s_cuda_graph": graphed,
                                   "speedup": round(graphed / eager, 2)}
        print(arch, results["models"][arch], flush=True)
    write_json(out, results)


class CountedRunner:
    """A runner that counts the slices it is given; keeps the runner's preferred batch size."""

    def __init__(self, runner):
        self.runner, self.count = runner, 0
        self.batch_size = getattr(runner, "batch_size", None)

    def __call__(self, batch):
        self.count += len(batch)
        return self.runner(batch)


def count_slices(seg: Segmenter | Ensemble) -> list[CountedRunner]:
    """Each network's runner wrapped (once) in a CountedRunner reset to 0; the counters, in network order."""
    counters = []
    for net, _ in seg.networks:
        if not isinstance(net.runner, CountedRunner):
            net.runner = CountedRunner(net.runner)
        net.runner.count = 0
        counters.append(net.runner)
    return counters


def segmenter(ckpt: Path, backend: str, **kwargs) -> Segmenter | Ensemble:
    """A checkpoint folder (a multi-view one: its views, averaged as served) on a backend of BACKENDS."""
    seg = load_segmenter(ckpt, device="cpu", backend="torch" if backend == "torch_eager" else backend, **kwargs)
    if backend == "torch_eager":
        for model, _ in seg.networks:
            model.runner = TorchRunner.from_checkpoint(model.source, "cpu", channels_last=False)
    return seg


def cli_seconds(ckpt: Path, case, backend: str, repeats: int) -> float:
    """`lasegm predict` as a user runs it on a case's scan file (its voxel axes declared: a Task02 file's header is
    wrong), a new process each time (imports, load, segment, write)."""
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            t0 = time.perf_counter()
            axes = ["--axes", case.axes] if case.axes else []
            subprocess.run([sys.executable, "-m", "lasegm", "--quiet", "predict", "--checkpoint", str(ckpt),
                            "--input", str(case.image), *axes, "--output", f"{tmp}/mask.nii.gz", "--backend", backend],
                           check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 2)


def seconds_per_volume(seg, vol, repeats: int) -> float:
    """Median wall time of the whole pipeline (normalise, resample, predict, restore, post-process)."""
    return interleaved({"only": seg}, vol, repeats)["only"]


def interleaved(segmenters: dict, vol, repeats: int) -> dict:
    """Median seconds per volume of several segmenters, timed in turn within each repeat: this machine's speed
    drifts by 10-20 % over minutes, which would otherwise land in the ratios between them."""
    for seg in segmenters.values():
        seg.segment(vol)  # warm-up
    times: dict = {name: [] for name in segmenters}
    for _ in range(repeats):
        for name, seg in segmenters.items():
            t0 = time.perf_counter()
            seg.segment(vol)
            times[name].append(time.perf_counter() - t0)
    return {name: round(statistics.median(t), 3) for name, t in times.items()}


def demo_latency(checkpoints: Path, repeats: int) -> dict:
    """The demo as a user clicks it, through its HTTP API (gradio_client calls what the browser calls): demo/app.py
    in a process of its own (its models loaded at start), a click on Segment timed to the whole answer (masks,
    metrics, three planes, 3D meshes, files, all fetched), then slider moves (the three planes redrawn from the
    session's cached results and fetched)."""
    from gradio_client import Client, handle_file

    example = sorted((ROOT / "demo" / "examples").glob("*_image.nii.gz"))[0]
    label = example.with_name(example.name.replace("_image", "_label"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "LASEGM_CHECKPOINTS": str(checkpoints),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, str(ROOT / "demo" / "app.py")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(360):
            if proc.poll() is not None:
                raise SystemExit(f"the demo exited with code {proc.returncode}: run python demo/app.py to see why")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("the demo did not start within 3 minutes")
        client = Client(url, verbose=False)
        # the backend each model runs on: the demo opens its checkpoints with load_segmenter(..., device="auto")
        results = {"demo_backend": {arch: load_segmenter(checkpoints / arch, device="auto").backend
                                    for arch in SERVED},
                   "demo_measured": "through the demo's HTTP API (gradio_client), answers fetched"}
        for key, choice in (("demo_click_to_result_unet_s", "unet"),
                            ("demo_click_to_result_ensemble_s", "ensemble"),
                            ("demo_click_to_result_all_three_s", "all three side by side")):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = client.predict(handle_file(str(example)), handle_file(str(label)), choice, "header",
                                     api_name="/segment")
                times.append(time.perf_counter() - t0)
            results[key] = round(statistics.median(times), 2)
        # the axial, coronal and sagittal sliders, then the window's level and width: component updates, in the
        # order of demo/app.py's outputs
        sliders, level, width = out[-13:-10], out[-7]["value"], out[-6]["value"]
        last = [int(s["maximum"]) for s in sliders]
        results["demo_example_slices"] = last[0] + 1  # axial
        lat = []  # one plane's slider moved: all three planes and models redrawn from the cached results
        for z in range(0, last[0] + 1, 3):
            for mode in ("overlay", "contour", "error map"):
                t0 = time.perf_counter()
                client.predict(z, min(z, last[1]), min(z, last[2]), mode, 0.45, level, width, api_name="/render")
                lat.append((time.perf_counter() - t0) * 1000)
        results["demo_plane_change_ms_median"] = round(statistics.median(lat), 2)
        results["demo_plane_change_ms_max"] = round(max(lat), 2)
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"))
    p.add_argument("--split_file", default=str(ROOT / "splits" / "split.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="default docs/benchmarks.json (docs/benchmarks-gpu.json with "
                   "--gpu_training)")
    p.add_argument("--gpu_training", action="store_true", help="only the training throughput on this machine's GPU")
    args = p.parse_args()
    if args.gpu_training:
        return gpu_training(Path(args.checkpoints), args.out or str(ROOT / "docs" / "benchmarks-gpu.json"))
    args.out = args.out or str(ROOT / "docs" / "benchmarks.json")
    torch.set_num_threads(args.threads)
    test = read_split(args.split_file)["test"]
    cases = {c.case_id: c for c in find_cases(args.data)}
    case = cases[test[0]]
    vol = load_case(case)
    results = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "torch": torch.__version__,
               "onnxruntime": onnxruntime.__version__, "cpu": cpu_name(), "patient": case.case_id,
               "slices": int(vol.image.shape[2]), "repeats": args.repeats,
               "backends": {"torch_eager": "PyTorch, default memory layout (predict before ONNX)",
                            "torch": "PyTorch, channels_last (the torch backend now)",
                            "onnx": "ONNX Runtime on the checkpoint's model.onnx (the default when present)"},
               "models": {}}
    checkpoints = Path(args.checkpoints)
    for arch in SERVED:
        ckpt = checkpoints / arch
        models = model_folders(ckpt)  # a multi-view checkpoint: its views, each a network of the same recipe
        config = read_checkpoint_config(models[0])
        row = {"arch": arch, "views": [m.name for m in models] if models[0] != ckpt else None,
               "parameters_m": round(len(models) * config["parameters"] / 1e6, 2) if "parameters" in config else None,
               "checkpoint_mb": round(sum((m / "model.safetensors").stat().st_size for m in models) / 1e6, 2),
               "onnx_mb": round(sum((m / "model.onnx").stat().st_size for m in models) / 1e6, 2)}
        timed = interleaved({**{backend: segmenter(ckpt, backend) for backend in BACKENDS},
                             "onnx_flip_tta": segmenter(ckpt, "onnx", flip_tta=True)}, vol, args.repeats)
        row.update({f"seconds_per_volume_{name}": seconds for name, seconds in timed.items()})
        for backend in BACKENDS[1:]:
            row[f"speedup_{backend}_vs_eager"] = round(timed["torch_eager"] / timed[backend], 2)
        row["flip_tta_cost_x"] = round(timed["onnx_flip_tta"] / timed["onnx"], 2)
        row["train_slices_per_s_eager"] = train_throughput(config, channels_last=False)  # per view
        row["train_slices_per_s_channels_last"] = train_throughput(config, channels_last=True)
        results["models"][arch] = row
        print(arch, row, flush=True)

    # one epoch's validation in training (the U-Net recipe's), and the part of it that is not the network
    results["validation_epoch_unet"] = validation_seconds(model_folders(checkpoints / "unet")[0], args.data,
                                                          args.split_file, args.repeats)
    print("validation", results["validation_epoch_unet"], flush=True)

    members = [checkpoints / arch for arch in ENSEMBLE_MEMBERS]
    timed = interleaved({backend: Ensemble([segmenter(m, backend) for m in members]) for backend in BACKENDS}, vol,
                        args.repeats)
    results.update({f"ensemble_seconds_per_volume_{backend}": seconds for backend, seconds in timed.items()})
    print("ensemble", {k: v for k, v in results.items() if k.startswith("ensemble")}, flush=True)

    # the whole `lasegm predict` process on every test patient (100-130 slices) on ONNX, once on PyTorch
    results["cli_predict_unet_seconds"] = {
        f"{cid} ({load_case(cases[cid]).image.shape[2]} slices)": cli_seconds(checkpoints / "unet", cases[cid],
                                                                               "onnx", args.repeats)
        for cid in test}
    results["cli_predict_unet_seconds_torch"] = cli_seconds(checkpoints / "unet", case, "torch", 3)
    print("cli", results["cli_predict_unet_seconds"], results["cli_predict_unet_seconds_torch"], flush=True)

    results.update(demo_latency(checkpoints, args.repeats))
    print("demo", {k: v for k, v in results.items() if k.startswith("demo")}, flush=True)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(args.out, results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
