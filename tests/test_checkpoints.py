"""The committed checkpoints: each records what it was trained on and the cross-validation result of its recipe,
and evaluate refuses to score it on its own training patients; the legacy (preprocessing v1) checkpoint still
reproduces the numbers it was reported with. What the served models output: tests/test_golden.py."""

import json

import numpy as np
import pytest
from conftest import REPO

from lasegm.checkpoint import SERVED, checkpoint_recipe, model_folders, read_checkpoint_config, read_served_config
from lasegm.cli import main
from lasegm.config import recorded_run_options
from lasegm.split import split_hash

ARCHS = list(SERVED)
CHECKPOINTS = REPO / "checkpoints"
LEGACY = REPO / "tests" / "fixtures" / "legacy-v1-pspnet"
SPLIT = REPO / "splits" / "split.json"


def reported(folder) -> dict:
    """The test-set evaluation committed next to the checkpoint (research_log.md quotes it)."""
    return json.loads((folder / "evaluation-test" / "evaluation.json").read_text())


def final_model(folder) -> bool:
    """Trained on every patient of the folds file (`lasegm cv --final`; a multi-view checkpoint: each view): no
    test patient is left for it."""
    return all(recorded_run_options(read_checkpoint_config(m)).get("all_folds") for m in model_folders(folder))


def test_checkpoints_fit_the_size_budget():
    total = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert total <= 60e6, f"checkpoints/ holds {total / 1e6:.1f} MB; the budget is 60 MB"


@pytest.mark.parametrize("arch", ARCHS)
def test_served_checkpoint_records_what_it_was_trained_on(arch):
    """What a served model is: a recipe's final model trained on every patient of the folds file its recipe was
    cross-validated on (that cross-validation is its accuracy estimate), or a model of the fixed split; a
    multi-view checkpoint's views are each such a model, and their mean's table is the folder's. What it outputs is
    pinned by tests/test_golden.py."""
    served = read_served_config(CHECKPOINTS / arch)
    final = final_model(CHECKPOINTS / arch)
    for folder in model_folders(CHECKPOINTS / arch):
        config = read_checkpoint_config(folder)
        pre, _ = checkpoint_recipe(config, folder)
        assert pre.version >= 2, "served checkpoints use a preprocessing contract in anatomy"
        if final:
            cv = served["cv"]
            assert config["split_sha256"] == split_hash(REPO / cv["folds_file"]) == cv["folds_sha256"]
            folds = json.loads((REPO / cv["folds_file"]).read_text())["folds"]
            assert sorted(config["trained_on"]) == sorted(served["trained_on"]) == sorted(c for f in folds for c in f)
        else:
            assert config["split_sha256"] == split_hash(SPLIT), "checkpoint was trained on another split"


@pytest.mark.parametrize("folder", [CHECKPOINTS / a for a in ARCHS] + [LEGACY], ids=ARCHS + ["legacy-v1"])
def test_evaluate_reproduces_the_reported_test_dice(folder, real_data, tmp_path, capsys):
    if final_model(folder):  # it trained on the test patients: evaluate refuses, and no test score is committed
        assert main(["--quiet", "evaluate", "--checkpoint", str(folder), "--data", str(real_data),
                     "--split_file", str(SPLIT), "--split", "test", "--out", str(tmp_path / "ev")]) == 2
        assert "was trained on" in capsys.readouterr().err and not (folder / "evaluation-test").exists()
        return
    ref = reported(folder)
    assert main(["--quiet", "evaluate", "--checkpoint", str(folder), "--data", str(real_data),
                 "--split_file", str(SPLIT), "--split", "test", "--out", str(tmp_path)]) == 0
    now = json.loads((tmp_path / "evaluation.json").read_text())
    assert [r["case"] for r in now["per_patient"]] == [r["case"] for r in ref["per_patient"]]
    assert now["summary"]["dice"]["mean"] == pytest.approx(ref["summary"]["dice"]["mean"], abs=0.005)
    np.testing.assert_allclose([r["dice"] for r in now["per_patient"]], [r["dice"] for r in ref["per_patient"]],
                               atol=0.01)


@pytest.mark.parametrize("arch", ARCHS)
def test_recorded_cross_validation_matches_the_committed_oof_table(arch):
    config = read_served_config(CHECKPOINTS / arch)
    cv = config["cv"]
    table = json.loads((CHECKPOINTS / arch / cv["table"]).read_text())  # the checkpoint carries its table
    assert table["postprocessing"] == config["postprocessing"], "scored as it is served"
    assert table["folds_sha256"] == split_hash(REPO / cv["folds_file"]) == cv["folds_sha256"]
    assert cv["oof_dice_3d_mean"] == pytest.approx(table["summary"]["dice"]["mean"], abs=1e-9)
    assert cv["oof_dice_3d_mean"] == pytest.approx(np.mean([r["dice"] for r in table["per_patient"]]), abs=1e-9)
    folds = json.loads((REPO / cv["folds_file"]).read_text())["folds"]
    assert sorted(r["case"] for r in table["per_patient"]) == sorted(c for f in folds for c in f)
