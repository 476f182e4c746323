"""Training on a GPU: CUDA-graph capture, and the jobs files the GPU scripts run. The parity test needs a GPU (a GPU
user's machine, a lent one; CI has none); the capture's bookkeeping is tested on CPU with a simulated capture."""

import pytest
import torch
from conftest import REPO

from lasegm.cli import build_parser
from lasegm.config import config_from_args
from lasegm.models import build_model, model_kwargs
from lasegm.predict import predict_slices
from lasegm.runtime import TorchRunner
from lasegm.train import graph_forward_backward, recipe_model_kwargs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("arch,encoder", [("unet", "resnet18"), ("fpn", "resnet18"), ("pspnet", "resnet18")])
def test_cuda_graph_step_matches_eager(arch, encoder):
    """A training step replayed as a CUDA graph gives the eager step's loss and gradients, and the capture leaves
    the weights and BatchNorm statistics as they were. (ResNet encoders: EfficientNet's stochastic depth draws
    other random numbers in each; its graphed training is measured in research_log 2026-11-28.)"""
    torch.manual_seed(0)
    kwargs = model_kwargs(arch, encoder, 3, 0, 0, "none", 32, 2)
    eager = build_model(arch, kwargs).cuda().to(memory_format=torch.channels_last)
    graphed = build_model(arch, kwargs).cuda().to(memory_format=torch.channels_last)
    graphed.load_state_dict(eager.state_dict())
    before = {k: v.clone() for k, v in graphed.state_dict().items()}
    assert graph_forward_backward(graphed, (4, 3, 160, 160), torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in graphed.state_dict().items())
    x = torch.randn(4, 3, 160, 160, device="cuda").contiguous(memory_format=torch.channels_last)
    y = (torch.rand(4, 1, 160, 160, device="cuda") > 0.7).float()
    losses = []
    for model in (eager, graphed):
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            logits = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    for (name, p), q in zip(eager.named_parameters(), graphed.parameters()):
        if p.grad is not None:  # bf16 kernels: equal up to rounding
            assert (p.grad - q.grad).norm() <= 0.02 * p.grad.norm() + 1e-6, name


@cuda
def test_gpu_inference_in_larger_batches_gives_the_same_probabilities():
    """On a GPU, predict_slices sends 64 slices per call instead of 16 (fewer, larger launches); eval-mode
    BatchNorm makes each slice's output independent of its batch-mates, up to bf16 rounding."""
    torch.manual_seed(0)
    model = build_model("unet", model_kwargs("unet", "resnet18", 3, 32, 0, "none", 32, 2)).cuda()
    runner = TorchRunner(model, "cuda")
    assert runner.batch_size == 64
    stack = torch.randn(70, 96, 96).numpy()
    default, small = predict_slices(runner, stack, 1), predict_slices(runner, stack, 1, batch_size=16)
    assert abs(default - small).max() < 0.02


def _small_unet():
    return build_model("unet", model_kwargs("unet", "resnet18", 3, 32, 3, "none", 32, 2)).train()


def test_graph_capture_warm_up_leaves_no_trace(monkeypatch):
    """The capture runs the model a few times (PyTorch's warm-up): BatchNorm statistics must not keep them.
    Simulated on CPU by a capture that does what the warm-up does to the model's state."""
    model = _small_unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def warm_up(m, args, **kwargs):
        for _ in range(3):
            m(torch.randn_like(args[0]) * 5 + 2).sum().backward()
        return m

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", warm_up)
    assert graph_forward_backward(model, (2, 3, 64, 64), torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_failed_capture_trains_eagerly_and_says_why(monkeypatch, capsys):
    model = _small_unet()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def fail(m, args, **kwargs):
        m(args[0])  # got as far as a warm-up pass
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", fail)
    assert not graph_forward_backward(model, (2, 3, 64, 64), torch.channels_last)
    assert "CUDA graph capture failed (RuntimeError: operation not permitted" in capsys.readouterr().out
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


JOBS_FILES = sorted((REPO / "docs" / "gpu").glob("*.jobs"))


@pytest.mark.parametrize("path", JOBS_FILES, ids=lambda p: p.name)
def test_jobs_file_lines_are_valid_lasegm_cv_recipes(path):
    """A jobs file is run on a lent GPU with no second try: each `cv` line must parse as `lasegm cv` flags and
    build its model, each ensemble may only name CVs of the same file, and each file a `run` line names must be
    in the repository."""
    cvs, runs = [], []
    for line in path.read_text().splitlines():
        kind, *rest = line.split() or ["#"]
        if kind.startswith("#"):
            continue
        assert kind in ("cv", "ensemble", "run"), line
        if kind == "cv":
            name, *flags = rest
            recipe_model_kwargs(config_from_args(build_parser().parse_args(["cv", f"--name={name}", *flags])))
            cvs.append(name)
        elif kind == "ensemble":
            assert set(rest[1:]) <= set(cvs) and len(rest) >= 3, line
        else:
            named = [t.split("=")[-1] for t in rest[1:]]
            assert all((REPO / t).exists() for t in named if t.startswith(("docs/", "splits/", "checkpoints/"))), line
            runs.append(rest[0])
    assert cvs or runs, f"{path.name} runs nothing"
