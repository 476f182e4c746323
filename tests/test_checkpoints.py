"""The committed checkpoints: each loads, segments a real patient, and reproduces its reported numbers."""

import json

import numpy as np
import pytest
from conftest import REPO

from lasegm.cli import main
from lasegm.data import find_cases, load_case
from lasegm.metrics import dice
from lasegm.predict import Segmenter
from lasegm.split import read_split

ARCHS = ["pspnet", "fpn", "unet"]
CHECKPOINTS = REPO / "checkpoints"
SPLIT = REPO / "splits" / "split.json"


def reported(arch: str) -> dict:
    """The test-set evaluation committed next to the checkpoint (research_log.md quotes it)."""
    return json.loads((CHECKPOINTS / arch / "evaluation-test" / "evaluation.json").read_text())


def test_checkpoints_fit_the_size_budget():
    total = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert total <= 60e6, f"checkpoints/ holds {total / 1e6:.1f} MB; the budget is 60 MB"


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_segments_a_real_validation_patient(arch, real_data):
    seg = Segmenter(CHECKPOINTS / arch, device="cpu", expected_arch=arch)
    assert seg.config["split_sha256"], "checkpoint does not record its split"
    case_id = read_split(SPLIT)["val"][0]
    vol = load_case(next(c for c in find_cases(real_data) if c.case_id == case_id))
    mask = seg.segment(vol)
    floor = reported(arch)["summary"]["dice"]["mean"] - 0.15
    score = dice(mask, vol.label)
    assert score > floor, f"{arch} on {case_id}: 3D Dice {score:.3f} below the floor {floor:.3f}"


@pytest.mark.parametrize("arch", ARCHS)
def test_evaluate_reproduces_the_reported_test_dice(arch, real_data, tmp_path):
    ref = reported(arch)
    assert main(["--quiet", "evaluate", "--checkpoint", str(CHECKPOINTS / arch), "--data", str(real_data),
                 "--split_file", str(SPLIT), "--split", "test", "--out", str(tmp_path)]) == 0
    now = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["case"] for r in now["per_patient"]] == [r["case"] for r in ref["per_patient"]]
    assert now["summary"]["dice"]["mean"] == pytest.approx(ref["summary"]["dice"]["mean"], abs=0.005)
    np.testing.assert_allclose([r["dice"] for r in now["per_patient"]], [r["dice"] for r in ref["per_patient"]],
                               atol=0.01)
