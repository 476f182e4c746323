"""`--resume`: a training stopped after an epoch (time limit, killed process, the end of a machine's loan) continues
from its saved state to the weights the uninterrupted training ends with; a state of another training is refused;
`lasegm cv --resume` keeps finished folds and continues stopped ones, and no table is made from a stopped fold."""

import json
import shutil

import pytest
import torch
from conftest import SYNTHETIC_FLAGS
from safetensors.torch import load_file, save_file

from lasegm.cli import main

TRAIN_2D = ["--arch=unet", "--encoder=resnet18", "--decoder_width=32", "--image_size=32", "--epochs=3",
            "--samples_per_epoch=32", "--batch_size=8", "--lr=0.003", "--augment=true", "--val_every=2",
            "--largest_component=false", "--fp16_checkpoint=false", *SYNTHETIC_FLAGS]
# nnU-Net's 3D recipe: SGD with momentum and the poly schedule, the on-device 3D augmentation's own stream
TRAIN_3D = ["--arch=unet3d", "--decoder_width=32", "--encoder_depth=3", "--slab_depth=8", "--image_size=32",
            "--deep_supervision=1", "--epochs=3", "--samples_per_epoch=8", "--batch_size=2", "--optimizer=sgd", "--scheduler=poly",
            "--lr=0.01", "--loss=dice_bce", "--augment=true", "--augment_3d=true", "--val_every=3",
            "--largest_component=false", "--fp16_checkpoint=false", *SYNTHETIC_FLAGS]


def _train(dataset, split, name, recipe, *extra):
    return main(["--quiet", "train", *recipe, f"--data={dataset}", f"--split_file={split}", f"--run_name={name}",
                 "--out_dir=runs", "--wandb_mode=disabled", "--num_threads=1", *extra])


@pytest.mark.parametrize("recipe", [TRAIN_2D, TRAIN_3D], ids=["2d", "3d-nnunet"])
def test_a_stopped_training_resumes_to_the_uninterrupted_weights(recipe, dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split)]) == 0
    assert _train(dataset, split, "whole", recipe) == 0
    # a time limit stops it after its first epoch: the state of that epoch is kept
    assert _train(dataset, split, "parts", recipe, "--time_limit_min=1e-9") == 0
    run = tmp_path / "runs" / "parts"
    assert "time limit" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 1
    state = json.loads((run / "resume" / "state.json").read_text())
    assert state["epoch"] == 1 and len(state["history"]) == 1
    # another recipe may not continue it
    assert _train(dataset, split, "parts", [*recipe, "--lr=0.5"], "--resume=true") == 2
    assert "saved by another training (train_config differ)" in capsys.readouterr().err
    # nor a state holding weights this model lacks (saved while lasegm stored blocks an encoder never runs)
    stale = tmp_path / "runs" / "stale"
    shutil.copytree(run, stale)
    tensors = load_file(str(stale / "resume" / "state.safetensors"))
    tensors["model.encoder._blocks.15.weight"] = torch.zeros(1)
    save_file(tensors, str(stale / "resume" / "state.safetensors"))
    assert _train(dataset, split, "stale", recipe, "--resume=true") == 2
    assert "its weights do not fit this model (saved by an older lasegm?)" in capsys.readouterr().err
    assert _train(dataset, split, "parts", recipe, "--resume=true") == 0
    assert "resuming after epoch 1 of 3" in capsys.readouterr().out
    whole, parts = (load_file(str(tmp_path / "runs" / n / "checkpoint" / "model.safetensors")) for n in ("whole", "parts"))
    assert whole.keys() == parts.keys() and all((whole[k] == parts[k]).all() for k in whole)  # bit for bit
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h["train_loss"] for h in history] == [h["train_loss"]
                                                  for h in json.loads((tmp_path / "runs" / "whole" / "history.json").read_text())]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_run"] == 3 and not (run / "resume").exists()  # finished: nothing left to resume
    mtime = (run / "checkpoint" / "model.safetensors").stat().st_mtime_ns
    assert _train(dataset, split, "parts", recipe, "--resume=true") == 0  # finished: nothing is retrained
    assert "finished before (3 epochs); nothing to resume" in capsys.readouterr().out
    assert (run / "checkpoint" / "model.safetensors").stat().st_mtime_ns == mtime
    assert main(["--quiet", "train", *recipe, f"--data={dataset}", f"--split_file={split}", "--resume=true"]) == 2
    assert "--resume continues a named run: give its --run_name" in capsys.readouterr().err
    # without --resume a run starts over and drops any state left in its folder
    assert _train(dataset, split, "parts", recipe, "--time_limit_min=1e-9") == 0
    assert _train(dataset, split, "parts", recipe, "--epochs=1") == 0 and not (run / "resume").exists()


def test_a_resumed_training_logs_to_the_same_wandb_run(dataset, tmp_path, monkeypatch):
    """Its curves continue in one W&B run: the state records the run's id, the resumed training logs under it
    (offline here: two run folders of one id, which `wandb sync` uploads as one run)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split)]) == 0
    train = ["--quiet", "train", *TRAIN_2D, f"--data={dataset}", f"--split_file={split}", "--run_name=w",
             "--out_dir=runs", "--wandb_mode=offline", "--num_threads=1"]
    assert main([*train, "--time_limit_min=1e-9"]) == 0
    run_id = json.loads((tmp_path / "runs" / "w" / "resume" / "state.json").read_text())["wandb_run_id"]
    assert run_id
    assert main([*train, "--resume=true"]) == 0
    logged = sorted(d.name.rsplit("-", 1)[1] for d in (tmp_path / "wandb").glob("offline-run-*"))
    assert logged == [run_id, run_id]


def test_a_killed_training_resumes_from_its_last_saved_epoch(dataset, tmp_path, monkeypatch, capsys):
    """Killed during an epoch (no time limit to stop it cleanly): the state saved after an earlier epoch continues."""
    import lasegm.train

    monkeypatch.chdir(tmp_path)
    split = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(split)]) == 0
    assert _train(dataset, split, "whole", TRAIN_2D) == 0
    monkeypatch.setattr(lasegm.train, "SAVE_EVERY_S", 0.0)  # a state after every epoch
    one_epoch = lasegm.train.train_epoch

    def killed_in_epoch_3(s, epoch, quiet=False):
        if epoch == 3:
            raise KeyboardInterrupt
        return one_epoch(s, epoch, quiet)

    monkeypatch.setattr(lasegm.train, "train_epoch", killed_in_epoch_3)
    assert _train(dataset, split, "killed", TRAIN_2D) != 0  # the CLI says "interrupted"
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(lasegm.train, "train_epoch", one_epoch)
    assert json.loads((tmp_path / "runs" / "killed" / "resume" / "state.json").read_text())["epoch"] == 2
    assert _train(dataset, split, "killed", TRAIN_2D, "--resume=true") == 0
    assert "resuming after epoch 2 of 3" in capsys.readouterr().out
    whole, killed = (load_file(str(tmp_path / "runs" / n / "checkpoint" / "model.safetensors")) for n in ("whole", "killed"))
    assert all((whole[k] == killed[k]).all() for k in whole)


def test_cv_resume_keeps_finished_folds_continues_stopped_ones_and_scores_none_half_trained(dataset, tmp_path,
                                                                                         monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "split", "--data", str(dataset), "--folds", "2", "--split_file", "cv2.json"]) == 0
    cv = ["--quiet", "cv", "--name", "r", f"--data={dataset}", "--split_file=cv2.json", "--wandb_mode=disabled",
          *[f for f in TRAIN_2D if not f.startswith("--epochs")], "--epochs=2"]
    assert main([*cv, "--folds", "0"]) == 2  # fold 1 missing: no table yet (exit 2, as before)
    capsys.readouterr()
    assert main([*cv, "--folds", "1", "--time_limit_min=1e-9"]) == 2  # stopped after epoch 1 of 2: no table
    assert "fold-1: stopped before its last epoch" in capsys.readouterr().err
    assert main([*cv, "--collect_only"]) == 2
    assert "fold-1: stopped before its last epoch; continue it with `lasegm cv --folds 1 --resume`" in (
        capsys.readouterr().err)
    fold0 = (tmp_path / "runs" / "cv" / "r" / "fold-0" / "checkpoint" / "model.safetensors").stat().st_mtime_ns
    assert main([*cv, "--resume=true"]) == 0
    out = capsys.readouterr().out
    assert "fold-0 finished before, kept" in out and "out-of-fold 3D Dice over 7 patients" in out
    assert (tmp_path / "runs" / "cv" / "r" / "fold-0" / "checkpoint" / "model.safetensors").stat().st_mtime_ns == fold0
    oof = json.loads((tmp_path / "runs" / "cv" / "r" / "oof.json").read_text())
    assert [f["epochs"] for f in oof["folds"]] == [2, 2]
    assert main([*cv, "--resume=true", "--lr=0.01"]) == 2  # a finished fold of another recipe is not kept
    assert "train different recipes (lr: 0.01 vs 0.003)" in capsys.readouterr().err
