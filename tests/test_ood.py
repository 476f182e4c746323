"""A scan unlike the training data is flagged (from the input, lasegm.ood, and from the model's confidence,
lasegm.postprocess), and a development scan never is."""

from dataclasses import replace

import numpy as np
from conftest import REPO, synthetic_volume

from lasegm.data import find_cases, load_case
from lasegm.ood import input_flags, intensity_profile, made_up_unlike, make_reference
from lasegm.predict import load_segmenter, segment_scan
from lasegm.preprocess import Preprocessing

PRE = Preprocessing(image_size=64, fov_mm=80.0, context=0, orientation="ASR")


def _prepared(image):
    return PRE.prepare(image, np.diag([1.25, 1.25, 1.37, 1.0]))[0]


def test_input_flags_tell_another_contrast_and_coarse_voxels_from_scans_like_the_training_ones():
    training = [synthetic_volume((64, 64, 40), seed=s)[0] for s in range(6)]
    reference = make_reference([intensity_profile(_prepared(v)) for v in training], [(1.25, 1.25, 1.37)] * 6)
    assert reference["max_distance"] > reference["training_spread"] > 0 and reference["max_voxel_mm"] == 1.37
    like, _ = synthetic_volume((64, 64, 40), seed=17)
    assert input_flags(_prepared(like), (1.25, 1.25, 1.37), reference) == []
    inverted = like.max() - like
    codes = [code for code, _ in input_flags(_prepared(inverted), (1.25, 1.25, 1.37), reference)]
    assert codes == ["contrast"]
    coarse = input_flags(_prepared(like), (1.25, 1.25, 5.0), reference)
    assert [code for code, _ in coarse] == ["coarse"] and "5.00 mm" in coarse[0][1]
    assert input_flags(_prepared(inverted), (1.25, 1.25, 1.37), None) == []  # a model without a reference


def test_served_unet_flags_every_made_up_unlike_scan_and_no_development_scan(real_data):
    """The input check passes every development patient as stored (the model's flags on them: tests/test_golden.py,
    docs/experiments/qc_ood.py); the served U-Net (ONNX) flags each made-up unlike scan of one (another contrast, a
    CT-like profile, no heart in view, noise). The development patients are the served model's training patients."""
    seg = load_segmenter(REPO / "checkpoints" / "unet", device="cpu")
    # the network that checks the input: a multi-view checkpoint's first view
    checker = next(n for n, _ in seg.networks if n.config.get("input_reference"))
    reference = checker.config["input_reference"]
    for case in find_cases(real_data):
        vol = load_case(case)
        assert input_flags(checker.pre.prepare(vol.image, vol.affine)[0], vol.spacing, reference) == [], case.case_id
        if case.case_id == "la_019":
            for name, image in made_up_unlike(vol.image):
                _, result = segment_scan(seg, replace(vol, image=image, label=None))
                assert result["flags"], name
                if name != "no heart in view":  # the input's intensities tell these apart before the model runs
                    assert "contrast" in result["flags"], (name, result["flags"])
