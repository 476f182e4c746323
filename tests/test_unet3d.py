"""The 3D U-Net variant: one more name in the model table, the same checkpoint, predict and ONNX contract."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import SYNTHETIC_FLAGS, leftovers

from lasegm import LasegmError
from lasegm.cli import main
from lasegm.data import find_cases, load_case
from lasegm.metrics import dice
from lasegm.models import build_model, model_kwargs
from lasegm.predict import Segmenter, predict_slices, slab_starts


def test_slabs_tile_every_slice_with_half_overlap():
    assert slab_starts(10, 16) == [0]
    assert slab_starts(16, 16) == [0]
    assert slab_starts(40, 16) == [0, 8, 16, 24]
    for n in (17, 33, 130):
        starts = slab_starts(n, 16)
        covered = np.zeros(n, int)
        for s in starts:
            covered[s : s + 16] += 1
        assert covered.min() >= 1 and starts[-1] + 16 == n


def test_a_slab_model_sees_consecutive_slices_and_thin_scans_are_padded():
    """The runner gets whole slabs (never a batch cut in two), and overlapping logits are averaged."""
    seen = []

    def runner(batch):  # logits = the slice's own value, so averaging must give it back
        seen.append(batch.shape)
        return batch[:, 0].copy()

    slices = np.linspace(-3, 3, 20, dtype=np.float32)[:, None, None] * np.ones((20, 4, 4), np.float32)
    probs = predict_slices(runner, slices, context=0, slab=8)
    assert seen == [(8, 1, 4, 4)] * 4  # starts 0, 4, 8, 12
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-slices)), rtol=1e-5)
    seen.clear()
    thin = predict_slices(runner, slices[:5], context=0, slab=8)
    assert seen == [(8, 1, 4, 4)] and thin.shape == (5, 4, 4)


def test_unet3d_options_are_checked_before_any_data_is_read():
    kw = model_kwargs("unet3d", "resnet18", 1, decoder_width=64, encoder_depth=4, slab_depth=8)
    assert kw == {"in_channels": 1, "classes": 1, "filters": [8, 16, 32, 64], "slab_depth": 8}
    with pytest.raises(LasegmError, match="multiple of 8"):
        model_kwargs("unet3d", "resnet18", 1, encoder_depth=4, slab_depth=12)
    with pytest.raises(LasegmError, match="no pretrained weights"):
        build_model("unet3d", kw, encoder_weights="imagenet")
    model = build_model("unet3d", kw).eval()
    with torch.no_grad():  # the 2D contract (a slab as a batch) and 3D training batches
        assert model(torch.randn(8, 1, 32, 32)).shape == (8, 1, 32, 32)
        assert model(torch.randn(2, 1, 8, 32, 32)).shape == (2, 1, 8, 32, 32)
    with pytest.raises(LasegmError, match="deep_supervision must be 0 to 2"):  # 4 levels: 2 below the top
        model_kwargs("unet3d", "resnet18", 1, encoder_depth=4, slab_depth=8, deep_supervision=3)


def test_deep_supervision_scores_lower_decoder_outputs_in_training_only():
    from lasegm.train import loss_terms

    kw = model_kwargs("unet3d", "resnet18", 1, decoder_width=64, encoder_depth=4, slab_depth=8, deep_supervision=2)
    assert kw["deep_supervision"] == 2 and "deep_supervision" not in model_kwargs("unet3d", "", 1)
    model = build_model("unet3d", kw)
    x, y = torch.randn(2, 1, 8, 32, 32), (torch.rand(2, 1, 8, 32, 32) > 0.8).float()
    stacked = model.train()(x)
    assert stacked.shape == (2, 3, 1, 8, 32, 32)  # the top output and two upsampled lower ones
    with torch.no_grad():  # served: the top output alone, in both contracts
        assert model.eval()(x).shape == (2, 1, 8, 32, 32) and model(torch.randn(8, 1, 32, 32)).shape == (8, 1, 32, 32)
    loss = loss_terms("dice_bce")
    top, lower = stacked[:, 0].detach(), stacked[:, 1].detach()
    # weights 1/2^i normalised: 4/7, 2/7, 1/7
    three = torch.stack([top, lower, lower], dim=1)
    assert float(loss(three, y)) == pytest.approx(4 / 7 * float(loss(top, y)) + 3 / 7 * float(loss(lower, y)), rel=1e-5)


def train_tiny_3d(dataset, tmp_path, name: str, *recipe: str):
    """A small 3D U-Net trained through the CLI on the synthetic dataset (6 epochs of 24 steps); its run folder."""
    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split),
                 "--val_fraction", "0.2", "--test_fraction", "0.2"]) == 0
    assert main(["--quiet", "train", "--arch=unet3d", "--decoder_width=64", "--encoder_depth=4", "--slab_depth=8",
                 "--image_size=64", "--epochs=6", "--samples_per_epoch=48", "--batch_size=2", *recipe,
                 *SYNTHETIC_FLAGS, f"--data={dataset}", f"--split_file={split}", f"--run_name={name}",
                 "--out_dir=runs", "--wandb_mode=disabled"]) == 0
    return tmp_path / "runs" / name


@pytest.mark.slow
def test_unet3d_trains_exports_and_predicts_through_the_cli(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = train_tiny_3d(dataset, tmp_path, "tiny3d", "--lr=0.003")
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["arch"] == "unet3d" and config["model_kwargs"]["slab_depth"] == 8
    assert config["model_kwargs"]["deep_supervision"] == 2  # the default: trained deep-supervised, served plain
    history = json.loads((run / "history.json").read_text())
    assert max(h["val_dice_3d"] for h in history) > 0.5  # it learns the synthetic atrium
    assert history[0]["train_slices_per_s"] > 0

    assert main(["export-onnx", "--checkpoint", str(run / "checkpoint")]) == 0
    vol = load_case(find_cases(dataset)[0])
    scan = find_cases(dataset)[0].image
    masks = {}
    for backend in ("onnx", "torch"):
        out = tmp_path / f"{backend}.nii.gz"
        assert main(["--quiet", "predict", "--checkpoint", str(run / "checkpoint"), "--input", str(scan),
                     "--output", str(out), "--backend", backend]) == 0
        masks[backend] = np.asarray(nib.load(str(out)).dataobj)
    assert masks["onnx"].shape == vol.image.shape and dice(masks["onnx"], masks["torch"]) >= 0.999
    probs = {b: Segmenter(run / "checkpoint", backend=b).probabilities(vol) for b in ("onnx", "torch")}
    np.testing.assert_allclose(probs["onnx"], probs["torch"], atol=1e-4)
    assert not leftovers(tmp_path)


@pytest.mark.slow
def test_unet3d_trains_with_nnunets_optimiser_and_3d_augmentation(dataset, tmp_path, monkeypatch):
    """The 3D recipe nnU-Net trains with (SGD, poly, Dice + CE, its 3D augmentation) runs through the CLI, records
    itself, and learns the synthetic atrium."""
    monkeypatch.chdir(tmp_path)
    run = train_tiny_3d(dataset, tmp_path, "nnunet3d", "--optimizer=sgd", "--lr=0.01", "--weight_decay=3e-5",
                        "--scheduler=poly", "--loss=dice_bce", "--augment_3d")
    recipe = json.loads((run / "checkpoint" / "config.json").read_text())["train_config"]
    assert (recipe["optimizer"], recipe["scheduler"], recipe["augment_3d"]) == ("sgd", "poly", True)
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["lr"] == 0.0 and all(np.isfinite(h["train_loss"]) for h in history)
    assert max(h["val_dice_3d"] for h in history) > 0.5
