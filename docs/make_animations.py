"""Small GIFs for the research log: each model's prediction through test patient la_003,
cropped to the models' 200 mm field of view, every second slice (the full-size GIFs from
`lasegm predict --animation` are ~7 MB each).

    python docs/make_animations.py --data $LASEGM_DATA
"""

import argparse
from pathlib import Path

from lasegm.data import find_cases, load_case
from lasegm.predict import Segmenter
from lasegm.preprocess import normalize_intensities
from lasegm.viz import save_animation

ROOT = Path(__file__).resolve().parents[1]

p = argparse.ArgumentParser()
p.add_argument("--data", required=True)
p.add_argument("--case", default="la_003")
p.add_argument("--out", default=str(ROOT / "docs" / "figures"))
args = p.parse_args()
vol = load_case(next(c for c in find_cases(args.data) if c.case_id == args.case))
for arch in ("pspnet", "fpn", "unet"):
    seg = Segmenter(ROOT / "checkpoints" / arch, device="cpu")
    mask = seg.segment(vol)
    # shown as the model sees the scan: its orientation, its field of view, every second slice
    image, geo = seg.pre.model_grid(vol.image, vol.affine)
    h, w = geo.window
    x0, y0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    crop = (slice(x0, x0 + h), slice(y0, y0 + w), slice(None, None, 2))
    out = save_animation(normalize_intensities(image)[crop], geo.to_model(mask)[crop],
                         Path(args.out) / f"{arch}_{args.case}.gif", truth=geo.to_model(vol.label)[crop], fps=8)
    print(out, f"{out.stat().st_size / 1e6:.1f} MB")
