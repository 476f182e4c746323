"""Does the 3D U-Net learn real atria, and how many steps until it commits? A bare training loop (no W&B, no
validation pass per epoch) on the training patients of splits/split.json, scoring the validation patients and
two training patients every 300 steps: model-grid Dice (prepared slices, no largest component) and the highest
probability. CPU-sized: 96 px, 16-slice slabs, batch 2. Ran for research_log.md (2026-11-27, 2 CPU cores):

    python docs/experiments/unet3d_probe.py [--augment] [--steps 1500]

2026-11-28: what shortens the ~600 steps before it commits? --deep_supervision K adds the K deep-supervision
heads (nnU-Net's: every lower decoder output upsampled and scored, weights 1/2^i normalised; training only);
--sgd uses nnU-Net's optimisation instead of AdamW at 3e-3: lasegm.train.optimisation with --optimizer=sgd --lr=0.01
--weight_decay=3e-5 --scheduler=poly (Nesterov momentum 0.99, gradients clipped to norm 12, poly over --steps).
2026-12-01: --augment3d adds nnU-Net's 3D augmentation (lasegm.augment.NnUNetAugmentation, seed 0) to each batch.
Defaults reproduce the 2026-11-27 run.
"""

import argparse
import json

import numpy as np
import torch

from lasegm.augment import NnUNetAugmentation
from lasegm.config import Recipe
from lasegm.data import default_data_dir, find_cases, load_cached
from lasegm.models import build_model, model_kwargs
from lasegm.predict import predict_slices
from lasegm.preprocess import Preprocessing
from lasegm.runtime import TorchRunner
from lasegm.train import SlabDataset, loss_terms, optimisation, train_step

p = argparse.ArgumentParser()
p.add_argument("--augment", action="store_true")
p.add_argument("--steps", type=int, default=1500)
p.add_argument("--deep_supervision", type=int, default=0)
p.add_argument("--sgd", action="store_true")
p.add_argument("--augment3d", action="store_true")
p.add_argument("--threads", type=int, default=2)
args = p.parse_args()
torch.manual_seed(0)
torch.set_num_threads(args.threads)
rng = np.random.default_rng(0)
pre = Preprocessing(image_size=96, fov_mm=200, context=0)
split = json.load(open("splits/split.json"))
cases = {c.case_id: c for c in find_cases(default_data_dir())}
train = [load_cached(cases[i], pre) for i in split["train"]]
val = [load_cached(cases[i], pre) for i in split["val"]]
data = SlabDataset(train, 0, 16, augment=args.augment, seed=0, mirror=args.augment)
weights = data.sample_weights(0.5).numpy()
model = build_model("unet3d", model_kwargs("unet3d", "", 1, slab_depth=16))
if args.deep_supervision:  # the same network with the heads (lasegm.unet3d), initialised from seed 0 as on 2026-11-28
    torch.manual_seed(0)
    model = build_model("unet3d", model_kwargs("unet3d", "", 1, slab_depth=16, deep_supervision=args.deep_supervision))
clip, sched = 0.0, None
if args.sgd:
    opt, sched, clip = optimisation(Recipe(optimizer="sgd", lr=0.01, weight_decay=3e-5, scheduler="poly"), model,
                                    args.steps, torch.device("cpu"))
else:
    opt = torch.optim.AdamW(model.parameters(), 3e-3)
augment3d = NnUNetAugmentation(seed=0) if args.augment3d else None
loss_fn = loss_terms("dice_bce")  # weighs deep-supervised outputs 1/2^i, normalised
dice = lambda a, b: 2 * (a & b).sum() / max(1, a.sum() + b.sum())
for step in range(1, args.steps + 1):
    picks = rng.choice(len(data), 2, p=weights / weights.sum())
    x, y = (torch.stack(t) for t in zip(*(data[k] for k in picks)))
    if augment3d:
        x, y = augment3d(x, y)
    model.train()
    train_step(model, opt, loss_fn, x, y, clip=clip)  # lasegm's own step (no autocast on a CPU)
    if sched:
        sched.step()
    if step % 300 == 0:
        model.eval()
        scores = []
        for c in val + train[:2]:
            probs = predict_slices(TorchRunner(model, "cpu", channels_last=False), c.image, 0, slab=16)
            scores.append(f"{c.case_id} {dice(probs > 0.5, c.label.astype(bool)):.3f} (max p {probs.max():.2f})")
        print(f"step {step}: val {', '.join(scores[:len(val)])}; train {', '.join(scores[len(val):])}", flush=True)
