"""End to end on the real development data: train each architecture briefly, save, load,
evaluate on the held-out test patients of the committed split, predict one patient."""

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO

from lasegm.cli import main
from lasegm.data import find_cases
from lasegm.metrics import dice
from lasegm.models import SERVED
from lasegm.split import read_split

SPLIT = REPO / "splits" / "split.json"
# Short CPU budget per architecture (64 px, 5 x 320 slices, validated once): 0.54-0.63 test 3D Dice on 2 AMD EPYC
# cores, well above chance (~0.01 for a random mask); 2.3 min for the three, 3.3 min at 96 px (0.44-0.68).
SHORT_RUN = ["--image_size=64", "--epochs=5", "--samples_per_epoch=320", "--batch_size=16", "--lr=0.003",
             "--val_every=5"]
# Dice-only loss for the U-Net: with Dice + BCE it often predicts all-background for the first
# short epochs (research_log.md, 2026-11-26), which a 5-epoch smoke run cannot afford.
ARCH_FLAGS = {"pspnet": [], "fpn": ["--decoder_width=128"], "unet": ["--decoder_width=128", "--loss=dice"]}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real-cache")  # shared by the three runs: each volume is read once


def test_committed_split_is_patient_level(real_data):
    split = read_split(SPLIT)
    ids = {c.case_id for c in find_cases(real_data)}
    assert set(split["train"] + split["val"] + split["test"]) <= ids
    for group in split["duplicate_groups"]:  # la_005 and la_026 are the same scan
        assert sum(any(c in split[p] for c in group) for p in ("train", "val", "test")) == 1


@pytest.mark.parametrize("arch", SERVED)
def test_train_evaluate_predict_real(arch, real_data, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LASEGM_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "train", f"--arch={arch}", *SHORT_RUN, *ARCH_FLAGS[arch], f"--data={real_data}",
                 f"--split_file={SPLIT}", "--run_name=e2e", "--out_dir=runs"]) == 0
    ckpt = tmp_path / "runs" / "e2e" / "checkpoint"
    assert json.loads((ckpt / "config.json").read_text())["arch"] == arch

    assert main(["--quiet", "evaluate", "--checkpoint", str(ckpt), "--data", str(real_data),
                 "--split_file", str(SPLIT), "--out", "eval"]) == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert [r["case"] for r in result["per_patient"]] == read_split(SPLIT)["test"]
    mean_dice = result["summary"]["dice"]["mean"]
    print(f"{arch}: test 3D Dice after a short run {mean_dice:.3f}")
    assert mean_dice > 0.3, f"{arch} short run reached only {mean_dice:.3f} 3D Dice"

    case = next(c for c in find_cases(real_data) if c.case_id == read_split(SPLIT)["test"][0])
    assert main(["--quiet", "predict", "--checkpoint", str(ckpt), "--input", str(case.image),
                 "--output", "mask.nii.gz", "--label", str(case.label), "--overlay", "overlay.png",
                 "--axes", case.axes]) == 0  # a Task02 file read alone: its true axes declared
    mask, ref = nib.load("mask.nii.gz"), nib.load(str(case.label))
    assert mask.shape == ref.shape
    np.testing.assert_allclose(mask.affine, ref.affine)
    assert dice(np.asarray(mask.dataobj), np.asarray(ref.dataobj)) > 0.3
