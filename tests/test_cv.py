"""Cross-validation: a patient-level folds file, `lasegm cv` end to end, and a sweep scored by cross-validation."""

import dataclasses
import json
import shutil

import pytest
import yaml
from conftest import REPO, SYNTHETIC_FLAGS

from lasegm import LasegmError
from lasegm.cli import main
from lasegm.config import RUN_OPTION_NAMES, Recipe, RunOptions, TrainConfig, recorded_recipe, recorded_run_options
from lasegm.data import find_cases
from lasegm.split import make_folds, read_split, save_split, split_cases

TINY = ["--image_size=32", "--epochs=2", "--samples_per_epoch=32", "--batch_size=8", "--lr=0.003", *SYNTHETIC_FLAGS]


def test_committed_folds_validate_every_patient_once_and_keep_duplicates_together(real_data):
    folds = read_split(REPO / "splits" / "cv5.json")
    ids = [c.case_id for c in find_cases(real_data)]
    validated = [c for f in folds["folds"] for c in f]
    assert sorted(validated) == sorted(ids)  # every development patient exactly once
    for group in folds["duplicate_groups"]:  # la_005 and la_026 are the same scan
        assert sum(any(c in f for c in group) for f in folds["folds"]) == 1
    for k in range(len(folds["folds"])):
        parts = split_cases(REPO / "splits" / "cv5.json", find_cases(real_data), fold=k)
        train, val = {c.case_id for c in parts["train"]}, {c.case_id for c in parts["val"]}
        assert not train & val and train | val == set(ids)


def test_folds_file_is_reused_never_silently_remade(tmp_path, dataset):
    path = tmp_path / "cv.json"
    ids = [c.case_id for c in find_cases(dataset)]
    save_split(path, make_folds(ids, [["la_001", "la_007"]], k=3, seed=0))
    before = path.read_text()
    save_split(path, make_folds(ids, [["la_001", "la_007"]], k=3, seed=0))  # the same folds: kept as is
    assert path.read_text() == before
    with pytest.raises(LasegmError, match="different split already exists"):
        save_split(path, make_folds(ids, [["la_001", "la_007"]], k=3, seed=1))
    leaky = json.loads(before)
    leaky["folds"][1].append(leaky["folds"][0][0])
    path.write_text(json.dumps(leaky))
    with pytest.raises(LasegmError, match="more than one fold"):
        read_split(path)


def test_folds_and_final_model_compare_by_recipe_whatever_their_run_options_or_record_age(tmp_path):
    """A checkpoint records its Recipe ("train_config") and its RunOptions ("run_options") apart; one written
    before that holds both in "train_config" (the served ones). Old and new records compare by recipe alone."""
    from lasegm.checkpoint import model_folders, read_checkpoint_config
    from lasegm.config import same_recipe
    from lasegm.cv import _same_folds_file

    # a served record (a multi-view checkpoint: its first view's), rewritten below the old way
    served = read_checkpoint_config(model_folders(REPO / "checkpoints" / "fpn")[0])
    flat = {**recorded_recipe(served), **recorded_run_options(served), "all_folds": True, "device": "auto"}
    old = {k: v for k, v in served.items() if k != "run_options"} | {"train_config": flat}  # as the served were
    recipe, run = recorded_recipe(old), recorded_run_options(old)
    assert run["all_folds"] and not set(recipe) & RUN_OPTION_NAMES and set(run) <= RUN_OPTION_NAMES
    assert set(TrainConfig().to_dict()) == {f.name for cls in (Recipe, RunOptions) for f in dataclasses.fields(cls)}
    assert set(TrainConfig().recipe_dict()) == {f.name for f in dataclasses.fields(Recipe)} - {
        "largest_component", "flip_tta"}  # the post-processing is recorded in its own block
    # a fold of the same recipe, recorded the new way, that ran differently (another folds-file path, device, ...)
    fold = tmp_path / "fold-0" / "checkpoint"
    fold.mkdir(parents=True)
    options = {**run, "all_folds": False, "fold": 0, "device": "cuda", "split_file": "/elsewhere/cv5.json",
               "channels_last": False, "fp16_checkpoint": False, "time_limit_min": 30.0, "cuda_graph": False}
    new = {**old, "train_config": TrainConfig(**recipe).recipe_dict(), "run_options": options}
    (fold / "config.json").write_text(json.dumps(new))
    assert recorded_run_options(new) == options and recorded_recipe(new) == new["train_config"]
    assert same_recipe(recorded_recipe(old), fold, "the final model") == new
    assert same_recipe(TrainConfig(**recipe, device="cpu", workers=3).recipe_dict(), fold, "this command") == new
    other_plane = "coronal" if recipe.get("plane") == "axial" else "axial"  # not the served model's own plane
    for field, value in (("lr", 0.01), ("seed", 1), ("mirror", True), ("plane", other_plane)):
        with pytest.raises(LasegmError, match=f"train different recipes \\({field}: "):
            same_recipe(TrainConfig(**{**recipe, field: value}).recipe_dict(), fold, "this command")
    # the folds file is compared by content, not by its path (a run option)
    _same_folds_file(new, old["split_sha256"], fold.parent, "splits/cv5.json")
    with pytest.raises(LasegmError, match="another folds file"):
        _same_folds_file(new, "0" * 64, fold.parent, "other.json")


@pytest.mark.slow
def test_two_fold_cv_through_the_cli_writes_the_out_of_fold_table(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "split", "--data", str(dataset), "--folds", "2", "--split_file", "cv2.json"]) == 0
    assert main(["--quiet", "cv", "--name", "tiny", f"--data={dataset}", "--split_file=cv2.json", *TINY]) == 0
    out = capsys.readouterr().out
    assert "out-of-fold 3D Dice over 7 patients" in out
    oof = json.loads((tmp_path / "runs" / "cv" / "tiny" / "oof.json").read_text())
    folds = read_split(tmp_path / "cv2.json")["folds"]
    assert sorted(r["case"] for r in oof["per_patient"]) == sorted(c for f in folds for c in f)
    for row in oof["per_patient"]:  # each patient scored by the fold that held it out
        assert row["case"] in folds[row["fold"]]
        assert {"dice", "iou", "hd95_mm", "volume_error_ml"} <= set(row)
    assert oof["summary"]["dice"]["n"] == 7 and (tmp_path / "runs" / "cv" / "tiny" / "oof.csv").exists()
    for k in (0, 1):
        config = json.loads((tmp_path / "runs" / "cv" / "tiny" / f"fold-{k}" / "checkpoint" / "config.json").read_text())
        assert config["fold"] == k and config["selection"] == "last" and config["validated_on"] == folds[k]
        assert not set(config["trained_on"]) & set(folds[k])
    # the table is re-made from the finished folds alone, and records the recipe they trained, not this command's
    # (default) flags; a split file is refused
    assert main(["--quiet", "cv", "--name", "tiny", "--collect_only", f"--data={dataset}", "--split_file=cv2.json"]) == 0
    collected = json.loads((tmp_path / "runs" / "cv" / "tiny" / "oof.json").read_text())
    assert collected["recipe"]["epochs"] == oof["recipe"]["epochs"] != TrainConfig().epochs
    assert collected["per_patient"] == oof["per_patient"]
    fold1 = tmp_path / "runs" / "cv" / "tiny" / "fold-1" / "checkpoint" / "config.json"
    kept = fold1.read_text()
    fold1.write_text(kept.replace('"lr": 0.003', '"lr": 0.01'))  # a fold of another recipe: not one table
    assert main(["--quiet", "cv", "--name", "tiny", "--collect_only", f"--data={dataset}", "--split_file=cv2.json"]) == 2
    assert "train different recipes (lr: 0.003 vs 0.01)" in capsys.readouterr().err
    fold1.write_text(kept)
    # post-processing chosen out of fold without retraining: each fold's checkpoint re-segments its own patients
    base = ["--quiet", "cv", "--name", "tiny", "--reevaluate", f"--data={dataset}", "--split_file=cv2.json"]
    assert main(base + ["--largest_component=true", "--flip_tta=false"]) == 0
    again = json.loads((tmp_path / "runs" / "cv" / "tiny" / "oof-lc-true-tta-false.json").read_text())
    assert [(r["case"], r["fold"]) for r in again["per_patient"]] == [(r["case"], r["fold"]) for r in oof["per_patient"]]
    for a, b in zip(again["per_patient"], oof["per_patient"]):  # as validated in training (its cache is fp16)
        assert abs(a["dice"] - b["dice"]) < 0.02
    assert main(base + ["--flip_tta=true"]) == 0
    mirrored = json.loads((tmp_path / "runs" / "cv" / "tiny" / "oof-lc-true-tta-true.json").read_text())
    assert mirrored["postprocessing"]["flip_tta"] and mirrored["summary"]["dice"]["n"] == 7
    # ensembles of recipes scored out of fold: each fold's checkpoints averaged on that fold's patients
    assert main(["--quiet", "cv", "--name", "tiny-b", f"--data={dataset}", "--split_file=cv2.json", *TINY,
                 "--seed=1", "--lr=0.01"]) == 0
    ensemble = ["--quiet", "cv", f"--data={dataset}", "--split_file=cv2.json", "--ensemble", "tiny", "tiny-b"]
    assert main([*ensemble, "--name", "tiny+b"]) == 0
    both = json.loads((tmp_path / "runs" / "cv" / "tiny+b" / "oof.json").read_text())
    assert both["recipe"]["ensemble"] == ["tiny", "tiny-b"] and both["recipe"]["members"]["tiny-b"]["lr"] == 0.01
    assert [(r["case"], r["fold"]) for r in both["per_patient"]] == [(r["case"], r["fold"]) for r in oof["per_patient"]]
    # from the probability maps each fold saved of its held-out patients (lasegm.probability_maps)
    assert [len(run["probability_maps"]) for run in both["folds"]] == [2, 2]
    # the folds all members finished, while others train: a table of their patients, marked partial, not oof.json
    capsys.readouterr()
    assert main([*ensemble, "--name", "tiny+b-part", "--folds", "1"]) == 0
    part = json.loads((tmp_path / "runs" / "cv" / "tiny+b-part" / "oof-folds-1.json").read_text())
    assert "partial: folds 1" in capsys.readouterr().out and part["partial"] and part["folds_scored"] == [1]
    assert [(r["case"], r["dice"], r["hd95_mm"]) for r in part["per_patient"]] == \
        [(r["case"], r["dice"], r["hd95_mm"]) for r in both["per_patient"] if r["fold"] == 1]
    assert not (tmp_path / "runs" / "cv" / "tiny+b-part" / "oof.json").exists()
    assert main([*ensemble, "--name", "tiny+b-part", "--folds", "2"]) == 2  # cv2.json has folds 0 and 1
    # with flip TTA, which those maps lack, the fold checkpoints segment the scans instead
    assert main([*ensemble, "--name", "tiny+b-tta", "--flip_tta=true"]) == 0
    tta = json.loads((tmp_path / "runs" / "cv" / "tiny+b-tta" / "oof.json").read_text())
    assert [len(run["checkpoint"]) for run in tta["folds"]] == [2, 2] and tta["postprocessing"]["flip_tta"]
    # views of one model (a comma group) weigh as one member: tiny,tiny-b + tiny-b is tiny 1/4, tiny-b 3/4, as is
    # the plain mean of tiny and three tiny-b; from the checkpoints here, from the maps below
    grouped = {}
    for members, out in ((["tiny,tiny-b", "tiny-b"], "grouped-tta"), (["tiny", *["tiny-b"] * 3], "repeated-tta")):
        assert main([*ensemble[:-2], *members, "--name", out, "--flip_tta=true"]) == 0
        grouped[out] = [r["dice"] for r in json.loads((tmp_path / "runs" / "cv" / out / "oof.json").read_text())
                        ["per_patient"]]
    assert grouped["grouped-tta"] == pytest.approx(grouped["repeated-tta"], abs=1e-9)
    # the maps need no weights: the folds' weights gone, the same table
    for weights in (tmp_path / "runs" / "cv").glob("tiny*/fold-*/checkpoint/model.safetensors"):
        weights.unlink()
    assert main([*ensemble, "--name", "tiny+b-again"]) == 0
    again_rows = json.loads((tmp_path / "runs" / "cv" / "tiny+b-again" / "oof.json").read_text())["per_patient"]
    assert [(r["case"], r["dice"], r["hd95_mm"]) for r in again_rows] == \
        [(r["case"], r["dice"], r["hd95_mm"]) for r in both["per_patient"]]
    # a CV's record kept elsewhere (committed, or returned by a GPU run) is a member by its path
    shutil.copytree(tmp_path / "runs" / "cv" / "tiny-b", tmp_path / "records" / "tiny-b")
    assert main([*ensemble[:-1], str(tmp_path / "records" / "tiny-b"), "--name", "tiny+b-record"]) == 0
    record_rows = json.loads((tmp_path / "runs" / "cv" / "tiny+b-record" / "oof.json").read_text())["per_patient"]
    assert [r["dice"] for r in record_rows] == [r["dice"] for r in both["per_patient"]]
    for members, out in ((["tiny,tiny-b", "tiny-b"], "grouped"), (["tiny", *["tiny-b"] * 3], "repeated")):
        assert main([*ensemble[:-2], *members, "--name", out]) == 0
        table = json.loads((tmp_path / "runs" / "cv" / out / "oof.json").read_text())
        grouped[out] = [r["dice"] for r in table["per_patient"]]
    assert table["folds"][0]["weights"] == [0.25] * 4
    assert json.loads((tmp_path / "runs" / "cv" / "grouped" / "oof.json").read_text())["folds"][0]["weights"] == \
        [0.25, 0.25, 0.5]
    assert grouped["grouped"] == pytest.approx(grouped["repeated"], abs=1e-9)
    # the ensemble of a CV with itself is that CV: the same mean probability, the same table (but for voxels
    # within the maps' 1/510 rounding of the threshold)
    assert main([*ensemble[:-1], "tiny", "--name", "tiny-twice"]) == 0
    twice = json.loads((tmp_path / "runs" / "cv" / "tiny-twice" / "oof.json").read_text())
    assert [r["dice"] for r in twice["per_patient"]] == pytest.approx([r["dice"] for r in oof["per_patient"]], abs=2e-3)
    # a fold without its maps and without its weights: one clear error naming the missing file
    shutil.rmtree(tmp_path / "runs" / "cv" / "tiny-b" / "fold-1" / "val_probabilities")
    assert main([*ensemble, "--name", "tiny+b-lost"]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    # a member that is not a finished CV of these folds: one clear error, no table
    assert main([*ensemble[:-1], "nothing", "--name", "tiny+nothing"]) == 2
    assert "fold 0 has not been trained" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "cv" / "tiny+nothing" / "oof.json").exists()
    assert main([*ensemble, "--name", "tiny+b", "--final"]) == 2
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", "split.json"]) == 0
    assert main(["--quiet", "cv", "--name", "x", f"--data={dataset}", "--split_file=split.json", *TINY]) == 2
    assert "not a folds file" in capsys.readouterr().err


@pytest.mark.slow
def test_cv_final_trains_the_recipe_on_every_patient_and_records_its_out_of_fold_result(dataset, tmp_path,
                                                                                       monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "split", "--data", str(dataset), "--folds", "2", "--split_file", "cv2.json"]) == 0
    assert main(["--quiet", "cv", "--name", "tiny", "--final", f"--data={dataset}", "--split_file=cv2.json", *TINY]) == 0
    cv_dir = tmp_path / "runs" / "cv" / "tiny"
    oof = json.loads((cv_dir / "oof.json").read_text())
    config = json.loads((cv_dir / "final" / "checkpoint" / "config.json").read_text())
    everyone = sorted(c for f in read_split(tmp_path / "cv2.json")["folds"] for c in f)
    assert config["trained_on"] == everyone and config["validated_on"] == [] and config["selection"] == "last"
    assert config["epoch"] == 2 and config["metrics"] == {}  # nothing left to validate on
    assert config["run_options"]["all_folds"] and not set(config["train_config"]) & RUN_OPTION_NAMES
    assert config["cv"]["oof_dice_3d_mean"] == oof["summary"]["dice"]["mean"]
    assert config["cv"]["oof_dice_3d_min"] == min(r["dice"] for r in oof["per_patient"])
    assert (cv_dir / "final" / "curves.png").exists()
    summary = json.loads((cv_dir / "final" / "summary.json").read_text())
    assert summary["best_epoch"] is None and summary["checkpoint_val_dice_3d"] is None
    assert "no validation" in capsys.readouterr().out
    # published as is: the served model carries its recipe's cross-validation, table included
    final = cv_dir / "final" / "checkpoint"
    assert config["cv"]["table"] == "cv-oof.json" and config["postprocessing"] == oof["postprocessing"]
    assert main(["--quiet", "export", "--checkpoint", str(final), "--out", "served"]) == 0
    assert json.loads((tmp_path / "served" / "config.json").read_text())["cv"] == config["cv"]
    assert json.loads((tmp_path / "served" / "cv-oof.json").read_text()) == oof
    # served with post-processing its table was not scored with: refused, nothing written
    export_tta = ["--quiet", "export", "--checkpoint", str(final), "--out", "served-tta", "--flip_tta=true"]
    assert main(export_tta) == 2
    assert "re-score the folds" in capsys.readouterr().err and not (tmp_path / "served-tta").exists()
    # re-scored out of fold with flip TTA, the final model takes that post-processing and that table
    assert main(["--quiet", "cv", "--name", "tiny", "--reevaluate", "--final", f"--data={dataset}",
                 "--split_file=cv2.json", "--flip_tta=true"]) == 0
    rescored = json.loads((cv_dir / "oof-lc-true-tta-true.json").read_text())
    config = json.loads((final / "config.json").read_text())
    assert config["postprocessing"]["flip_tta"] and json.loads((final / "cv-oof.json").read_text()) == rescored
    assert config["cv"]["oof_dice_3d_mean"] == rescored["summary"]["dice"]["mean"]
    assert main(export_tta) == 0
    # a final model of another recipe is refused before it trains, and the CV's final model is left alone
    before = (cv_dir / "final" / "checkpoint" / "model.safetensors").stat().st_mtime_ns
    assert main(["--quiet", "cv", "--name", "tiny", "--folds", "--final", f"--data={dataset}",
                 "--split_file=cv2.json", *TINY, "--lr=0.01"]) == 2
    assert "train different recipes (lr: 0.01 vs 0.003)" in capsys.readouterr().err
    assert (cv_dir / "final" / "checkpoint" / "model.safetensors").stat().st_mtime_ns == before
    # a fold trained before a recipe field existed ran with its default: still the same recipe ...
    collect = ["--quiet", "cv", "--name", "tiny", "--final", "--collect_only", f"--data={dataset}", "--split_file=cv2.json"]
    fold_config = cv_dir / "fold-0" / "checkpoint" / "config.json"
    older = json.loads(fold_config.read_text())
    del older["train_config"]["deep_supervision"]
    fold_config.write_text(json.dumps(older))
    assert main(collect) == 0
    # ... so is one with a time limit that did not stop it, and its weights need not be here (a GPU run returns
    # the folds' configs and summaries); a time limit that did stop it shows as another epoch: refused
    older["train_config"]["time_limit_min"] = 7.3
    fold_config.write_text(json.dumps(older))
    (cv_dir / "fold-0" / "checkpoint" / "model.safetensors").unlink()
    assert main(collect) == 0
    fold_config.write_text(json.dumps({**older, "epoch": 1}))
    assert main(collect) == 2 and "fold 0's checkpoint epoch 1" in capsys.readouterr().err
    # ... but a fold that built another network is not, whatever its flags say
    older["model_kwargs"]["decoder_channels"] = [8, 8, 8, 8, 8]
    fold_config.write_text(json.dumps(older))
    assert main(collect) == 2 and "not the recipe the cross-validation scored" in capsys.readouterr().err
    # folds validated with different post-processing make no one table
    older["postprocessing"]["largest_component"] = not older["postprocessing"]["largest_component"]
    fold_config.write_text(json.dumps(older))
    assert main(collect) == 2 and "validated with different post-processing" in capsys.readouterr().err
    # `lasegm train --all_folds` (what `cv --final --jobs N` runs in a process of its own) needs a folds file
    assert main(["--quiet", "train", "--all_folds", f"--data={dataset}", "--split_file=cv2.json", *TINY,
                 "--epochs=1", "--run_name=alone"]) == 0
    assert "trained on all folds, not validated" in capsys.readouterr().out
    assert main(["--quiet", "train", "--all_folds", f"--data={dataset}", "--split_file=cv2.json", "--fold=0",
                 *TINY]) == 2
    assert "without --fold" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_of_lasegm_cv_ranks_trials_by_out_of_fold_dice(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--quiet", "split", "--data", str(dataset), "--folds", "2", "--split_file", "cv2.json"]) == 0
    committed = yaml.safe_load((REPO / "sweeps" / "cv_recipe.yaml").read_text())
    sweep = tmp_path / "cv.yaml"
    sweep.write_text(yaml.safe_dump({**committed, "parameters": {"context": {"values": [0]},
                                                                 "flip_tta": {"values": [False, True]}}}))
    flags = [f"data={dataset}", "split_file=cv2.json", "arch=fpn", "decoder_width=32", "image_size=32",
             "fov_mm=80", "epochs=1", "samples_per_epoch=16", "batch_size=8"]
    assert main(["--quiet", "sweep", str(sweep), "--count", "2", "--out", "sw", "--set", *flags]) == 0
    ranking = json.loads((tmp_path / "sw" / "cv" / "ranking.json").read_text())
    assert ranking["metric"] == "cv/oof_dice_3d" and len(ranking["trials"]) == 2
    for trial in ranking["trials"]:
        oof = json.loads((tmp_path / "sw" / "cv" / "cv" / f"cv-{trial['trial']}" / "oof.json").read_text())
        assert trial["cv/oof_dice_3d"] == pytest.approx(oof["summary"]["dice"]["mean"])
