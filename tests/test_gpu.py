"""GPU-only training paths (CI has no GPU: these run on a GPU user's machine and on a lent GPU)."""

import pytest
import torch

from lasegm.models import build_model, model_kwargs
from lasegm.train import graph_forward_backward

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
