"""What one 3D U-Net training step costs on this machine's CPU, for patches of the sizes the GPU jobs use: the ratio
between them scales a GPU time measured at one size to another (research_log.md, 2026-12-01). A step is
lasegm.train.train_step with nnU-Net's optimisation (SGD, poly, clip 12) and deep supervision on two levels, on a
random batch of two patches, 160 x 160 in-plane; three steps each, no warm-up, each step's time printed.

    python docs/experiments/unet3d_step_time.py [--threads 2]
"""

import argparse
import time

import torch

from lasegm.config import Recipe
from lasegm.models import build_model, model_kwargs
from lasegm.train import loss_terms, optimisation, train_step

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.set_num_threads(args.threads)
loss_fn = loss_terms("dice_bce")
for depth, width in ((32, 128), (80, 128), (80, 256)):  # the 2026-11-28 CV's patch; docs/gpu/unet3d.jobs' two widths
    torch.manual_seed(0)
    model = build_model("unet3d", model_kwargs("unet3d", "", 1, decoder_width=width, slab_depth=depth,
                                               deep_supervision=2)).train()
    opt, _, clip = optimisation(Recipe(optimizer="sgd", lr=0.01, weight_decay=3e-5, scheduler="poly"), model, 3,
                                torch.device("cpu"))
    x, y = torch.randn(2, 1, depth, 160, 160), (torch.rand(2, 1, depth, 160, 160) > 0.9).float()
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        train_step(model, opt, loss_fn, x, y, clip=clip)
        seconds.append(round(time.perf_counter() - t0, 2))
    print(f"{depth} slices, width {width}: {sum(p.numel() for p in model.parameters())} parameters, s per step "
          f"{seconds}", flush=True)
