"""What one 3D U-Net training step costs on this machine, for patches of the sizes the GPU jobs use: on a CPU the
ratio between sizes scales a GPU time measured at one size to another (research_log.md, 2026-12-01); on a GPU it is
the number that sizes docs/gpu/unet3d.jobs. A step is lasegm.train.train_step with nnU-Net's optimisation (SGD,
poly, clip 12) and deep supervision on two levels, on a random batch of two patches (160 x 160 in-plane at 1.25 mm;
64 slices x 80 x 80 for the 2.5-mm stage of docs/gpu/unet3d-lowres.jobs), with
--augment3d nnU-Net's 3D augmentation of the batch first (lasegm.augment.NnUNetAugmentation, on the device).
CPU: three steps each, no warm-up, each step's time printed. GPU (bf16 autocast, as training): 3 warm-up steps,
then the mean of 20.

    python docs/experiments/unet3d_step_time.py [--threads 2] [--device cuda] [--augment3d]
"""

import argparse
import time

import torch

from lasegm.augment import NnUNetAugmentation
from lasegm.config import Recipe
from lasegm.models import build_model, model_kwargs
from lasegm.utils import resolve_device
from lasegm.train import loss_terms, optimisation, train_step

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", default="cpu")
p.add_argument("--augment3d", action="store_true")
args = p.parse_args()
torch.set_num_threads(args.threads)
device = resolve_device(args.device)
gpu = device.type == "cuda"
loss_fn = loss_terms("dice_bce")
# the 2026-11-28 CV's patch; docs/gpu/unet3d.jobs' two widths; the low-resolution stage's whole field of view
for depth, size, width in ((32, 160, 128), (80, 160, 128), (80, 160, 256), (64, 80, 128), (64, 80, 256)):
    torch.manual_seed(0)
    model = build_model("unet3d", model_kwargs("unet3d", "", 1, decoder_width=width, slab_depth=depth,
                                               deep_supervision=2)).to(device).train()
    opt, _, clip = optimisation(Recipe(optimizer="sgd", lr=0.01, weight_decay=3e-5, scheduler="poly"), model, 3,
                                device)
    augment = NnUNetAugmentation(0) if args.augment3d else None
    x = torch.randn(2, 1, depth, size, size, device=device)
    y = (torch.rand(2, 1, depth, size, size, device=device) > 0.9).float()

    def step():
        xb, yb = augment(x, y) if augment else (x, y)
        train_step(model, opt, loss_fn, xb, yb, clip=clip)

    if gpu:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        seconds = [round((time.perf_counter() - t0) / 20, 4)]
    else:
        seconds = []
        for _ in range(3):
            t0 = time.perf_counter()
            step()
            seconds.append(round(time.perf_counter() - t0, 2))
    print(f"{depth} slices of {size} px, width {width}: {sum(p.numel() for p in model.parameters())} parameters, s per step "
          f"{seconds}", flush=True)
