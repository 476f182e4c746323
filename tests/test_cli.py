"""What a user does, through the command line: analyze -> split -> train -> evaluate -> predict."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, SYNTHETIC_FLAGS, TEST_PREPROCESSING, leftovers, synthetic_volume, write_nifti

from lasegm.cli import main
from lasegm.config import TrainConfig, add_config_flags, config_from_args


def run_cli(*args, cwd=None, env=None):
    """The real console entry point in a subprocess: exit code, stdout, stderr."""
    import os

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    p = subprocess.run([sys.executable, "-m", "lasegm", *args], capture_output=True, text=True,
                       cwd=cwd, env=full_env, timeout=600)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("command", ["download", "analyze", "split", "train", "evaluate", "predict", "export", "sweep"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: lasegm " + command in capsys.readouterr().out


def test_train_flags_match_config_fields_one_to_one():
    import argparse

    p = argparse.ArgumentParser()
    add_config_flags(p)
    cfg = config_from_args(p.parse_args(["--lr=0.003", "--encoder=resnet34", "--augment=false",
                                         "--decoder-width=64", "--flip_tta", "--arch=fpn"]))
    assert (cfg.lr, cfg.encoder, cfg.augment, cfg.decoder_width, cfg.flip_tta, cfg.arch) == \
        (0.003, "resnet34", False, 64, True, "fpn")
    assert config_from_args(p.parse_args([])) == TrainConfig()
    with pytest.raises(SystemExit):
        p.parse_args(["--arch=segformer"])


def test_analyze_reports_cases_duplicates_and_figure(dataset, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert main(["--quiet", "analyze", "--data", str(dataset), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "la_001 ~ la_007: identical" in text and "7 cases" in text
    report = json.loads((out / "analysis.json").read_text())
    assert len(report["cases"]) == 7 and report["duplicate_groups"] == [["la_001", "la_007"]]
    row = report["cases"][0]
    _, label = synthetic_volume((64, 64, 24), seed=0)
    assert row["slices"] == 24 and row["slices_with_atrium"] == int(label.any(axis=(0, 1)).sum())
    assert row["atrium_ml"] == pytest.approx(label.sum() * 1.25 * 1.25 * 1.37 / 1000, abs=0.01)
    assert (out / "analysis.csv").read_text().startswith("case,shape,spacing_mm")
    assert (out / "la_001_grid.png").stat().st_size > 1000


def test_near_duplicates_are_found(dataset, tmp_path, capsys):
    image, label = synthetic_volume((64, 64, 24), seed=2)
    noisy = image + np.random.default_rng(9).normal(0, 5, image.shape).astype(np.int16)
    write_nifti(dataset / "imagesTr" / "la_099.nii.gz", noisy)
    write_nifti(dataset / "labelsTr" / "la_099.nii.gz", label)
    assert main(["--quiet", "analyze", "--data", str(dataset), "--out", str(tmp_path / "a")]) == 0
    assert "la_003 ~ la_099: near-duplicate" in capsys.readouterr().out


@pytest.fixture
def trained(dataset, tmp_path_factory):
    """A tiny U-Net trained through the CLI on the synthetic data (W&B offline)."""
    work = tmp_path_factory.mktemp("work")
    split = work / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split),
                 "--val_fraction", "0.2", "--test_fraction", "0.2"]) == 0
    return work, split


@pytest.mark.slow
def test_train_evaluate_predict_through_the_cli(dataset, trained, tmp_path, monkeypatch, capsys):
    work, split = trained
    monkeypatch.chdir(work)
    monkeypatch.setenv("WANDB_MODE", "offline")  # what a user without a W&B account gets
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    code = main(["--quiet", "train", "--arch=unet", "--encoder=resnet18", "--decoder_width=32",
                 "--image_size=64", "--epochs=4", "--samples_per_epoch=96", "--batch_size=8", "--lr=0.003",
                 *SYNTHETIC_FLAGS, "--largest_component=false",
                 f"--data={dataset}", f"--split_file={split}", "--run_name=tiny", "--out_dir=runs"])
    assert code == 0
    run = work / "runs" / "tiny"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert {"train_loss", "val_loss", "val_dice_3d", "val_dice_slice", "lr", "epoch_s", "val_time_s"} <= set(
        history[0])
    assert all(0 < h["val_time_s"] < h["epoch_s"] for h in history)  # validation is part of the epoch's time
    assert (run / "curves.png").stat().st_size > 1000 and (run / "history.csv").exists()
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["arch"] == "unet" and config["preprocessing"]["image_size"] == 64
    assert config["split_sha256"] and config["metrics"]["val_dice_3d"] == max(h["val_dice_3d"] for h in history)
    assert list((work / "wandb").glob("offline-run-*/run-*.wandb")), "offline W&B run was not written"

    capsys.readouterr()
    assert main(["--quiet", "evaluate", "--checkpoint", str(run / "checkpoint"), "--data", str(dataset),
                 "--split_file", str(split), "--out", str(work / "eval")]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "3D Dice" in out
    result = json.loads((work / "eval" / "evaluation.json").read_text())
    assert result["part"] == "test" and len(result["per_patient"]) >= 1
    test_ids = json.loads(split.read_text())["test"]
    assert [r["case"] for r in result["per_patient"]] == test_ids
    assert result["largest_component"] is False  # as recorded in the checkpoint
    assert main(["--quiet", "evaluate", "--checkpoint", str(run / "checkpoint"), "--data", str(dataset),
                 "--split_file", str(split), "--split", "val", "--largest_component", "--out", str(work / "ev")]) == 0
    result = json.loads((work / "ev" / "evaluation.json").read_text())
    assert result["largest_component"] is True and result["part"] == "val"
    capsys.readouterr()  # a score on its own training patients is refused, not reported
    assert main(["--quiet", "evaluate", "--checkpoint", str(run / "checkpoint"), "--data", str(dataset),
                 "--split_file", str(split), "--split", "train", "--out", str(work / "ev-train")]) == 2
    assert "was trained on" in capsys.readouterr().err and not (work / "ev-train").exists()

    # predict scans of other in-plane sizes (odd, and the full download's 320x320) with no label
    for shape in [(97, 81, 20), (320, 320, 8)]:
        image, label = synthetic_volume(shape, seed=11)
        scan = write_nifti(tmp_path / "scan.nii.gz", image)
        mask_path = tmp_path / "out" / "mask.nii.gz"
        assert main(["--quiet", "predict", "--checkpoint", str(run / "checkpoint"), "--input", str(scan),
                     "--output", str(mask_path)]) == 0
        mask = nib.load(str(mask_path))
        ref = nib.load(str(scan))
        assert mask.shape == ref.shape and mask.get_data_dtype() == np.uint8
        np.testing.assert_allclose(mask.affine, ref.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
    lab = write_nifti(tmp_path / "scan_label.nii.gz", label)
    assert main(["--quiet", "predict", "--checkpoint", str(run / "checkpoint"), "--input", str(scan),
                 "--label", str(lab), "--output", str(mask_path), "--overlay", str(tmp_path / "o.png"),
                 "--animation", str(tmp_path / "a.gif")]) == 0
    assert "3D Dice" in capsys.readouterr().out
    assert (tmp_path / "o.png").stat().st_size > 1000 and (tmp_path / "a.gif").stat().st_size > 1000
    assert not leftovers(tmp_path) and not leftovers(work)


@pytest.mark.slow
def test_training_learns_the_synthetic_atrium(dataset, trained, monkeypatch):
    """A pipeline bug (misaligned masks, wrong resize) would keep Dice near zero."""
    from lasegm.config import TrainConfig
    from lasegm.train import train

    work, split = trained
    cfg = TrainConfig(arch="pspnet", image_size=64, fov_mm=80, context=0, epochs=6, samples_per_epoch=128, batch_size=8, lr=0.003,
                      data=str(dataset), split_file=str(split), out_dir=str(work / "runs"), run_name="learn")
    summary = train(cfg, quiet=True)
    assert summary["best_val_dice_3d"] > 0.6


@pytest.mark.parametrize("args, message", [
    (["analyze", "--data", "{missing}"], "data folder not found"),
    (["train", "--data={data}", "--split_file={missing}"], "split file not found"),
    (["evaluate", "--checkpoint", "{missing}", "--data", "{data}"], "checkpoint folder not found"),
    (["predict", "--checkpoint", "{missing}", "--input", "{scan}", "--output", "{out}"], "checkpoint folder not found"),
    (["train", "--data={data}", "--arch=unet", "--encoder=nope18"], "unknown encoder"),
])
def test_bad_input_gives_one_line_error_and_exit_code(args, message, dataset, tmp_path, capsys):
    fill = {"missing": str(tmp_path / "missing"), "data": str(dataset), "out": str(tmp_path / "o.nii.gz"),
            "scan": str(dataset / "imagesTr" / "la_001.nii.gz")}
    code = main(["--quiet"] + [a.format(**fill) for a in args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_predict_rejects_bad_scans_without_writing(tmp_path, dataset, trained, monkeypatch, capsys):
    from lasegm.models import build_model, model_kwargs, save_checkpoint

    kw = model_kwargs("fpn", "resnet18", 1, decoder_width=32)
    ck = save_checkpoint(tmp_path / "ck", build_model("fpn", kw),
                         {"arch": "fpn", "encoder": "resnet18", "model_kwargs": kw,
                          "preprocessing": TEST_PREPROCESSING})
    bad = tmp_path / "scan.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    txt = tmp_path / "scan.txt"
    txt.write_text("hello")
    image, _ = synthetic_volume((32, 32, 6))
    flat = write_nifti(tmp_path / "flat.nii.gz", image[..., 0])
    out = tmp_path / "mask.nii.gz"
    for scan, message in [(bad, "corrupt or unreadable"), (txt, "not a NIfTI file"), (flat, "got 2D")]:
        assert main(["--quiet", "predict", "--checkpoint", str(ck), "--input", str(scan), "--output", str(out)]) == 2
        assert message in capsys.readouterr().err
    assert not out.exists() and not leftovers(tmp_path)


def test_console_script_runs_as_a_real_process(dataset, tmp_path):
    code, out, err = run_cli("--version")
    assert code == 0 and "lasegm" in out
    code, out, err = run_cli("--quiet", "analyze", "--data", str(tmp_path / "none"))
    assert code == 2 and "data folder not found" in err and "Traceback" not in err
