"""Each view of a fold checkpoint scored alone on its held-out patients: plain, left-right mirrored input,
up-down mirrored input, and their logit means (what flip TTA averages). 3D Dice, largest component.

    python docs/experiments/tta_views.py runs/cv/NAME 0[,1,...]   (LASEGM_DATA: the data folder)
"""
import json, sys, numpy as np
from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.metrics import dice
from lasegm.predict import Segmenter, sigmoid
from lasegm.preprocess import stack_context
cv = sys.argv[1]
folds = json.load(open("splits/cv5.json"))["folds"]
cases = {c.case_id: c for c in find_cases(default_data_dir())}
for f in [int(a) for a in sys.argv[2].split(",")]:
    seg = Segmenter(f"{cv}/fold-{f}/checkpoint", device="cpu")
    for cid in folds[f]:
        vol = load_case(cases[cid]); slices, geo = seg.pre.prepare(vol.image, vol.affine)
        x = np.stack([stack_context(slices, z, seg.pre.context) for z in range(len(slices))])
        lp = np.concatenate([seg.runner(x[i:i+16]) for i in range(0, len(x), 16)])
        lh = np.concatenate([seg.runner(x[i:i+16][..., ::-1])[..., ::-1] for i in range(0, len(x), 16)])
        lv = np.concatenate([seg.runner(x[i:i+16][..., ::-1, :])[..., ::-1, :] for i in range(0, len(x), 16)])
        def d(l): return dice(seg.post.binarize(seg.pre.restore(sigmoid(l), geo)), vol.label)
        print(f, cid, "plain %.3f  lr-flip %.3f  ud-flip %.3f  avg(plain,lr) %.3f  avg(all3) %.3f" % (d(lp), d(lh), d(lv), d(0.5*(lp+lh)), d((lp+lh+lv)/3)))
