"""The experiment scripts whose numbers README.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

ORACLE = REPO / "docs/experiments/oracle_bound.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ORACLE), *args], capture_output=True, text=True, cwd=REPO)


def test_oracle_bound_of_the_committed_tables_is_the_one_readme_quotes():
    tables = [f"docs/cv/2026-11-27-h100/{a}-oof.csv" for a in ("unet", "fpn", "pspnet")]
    out = run(*tables, "docs/cv/2026-11-28-h200/unet3d-ds-oof.csv")
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert "mean 0.904" in last and "min 0.858 (la_009)" in last and "3 of 16 patients below 0.88" in last


def test_oracle_bound_takes_the_best_model_per_patient_and_refuses_other_patients(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    a.write_text("case,dice\np1,0.9\np2,0.5\n")
    b.write_text("case,dice\np1,0.7\np2,0.8\n")
    c.write_text("case,dice\np1,0.7\np3,0.8\n")
    out = run(str(a), str(b))
    assert "best per patient: mean 0.850" in out.stdout and "min 0.800 (p2)" in out.stdout
    refused = run(str(a), str(c))
    assert refused.returncode != 0 and "do not score the same patients" in refused.stderr


def test_fold_ensemble_refuses_a_cv_of_other_folds_before_training(tmp_path):
    """The nested comparison reuses a CV's out-of-fold table as its single-model arm: on other folds the two arms
    would not score the same models' held-out patients, so it stops before any training."""
    folds = json.loads((REPO / "splits/cv5.json").read_text())
    folds["folds"] = folds["folds"][::-1]
    other = tmp_path / "cv5-reversed.json"
    other.write_text(json.dumps(folds))
    out = subprocess.run([sys.executable, str(REPO / "docs/experiments/fold_ensemble.py"), "--cv",
                          "docs/cv/2026-12-05-cpu/records/unet-coronal", "--folds_file", str(other), "--out",
                          str(tmp_path / "runs")], capture_output=True, text=True, cwd=REPO)
    assert out.returncode != 0 and "cross-validated on another folds file" in out.stderr
    assert not (tmp_path / "runs").exists()
