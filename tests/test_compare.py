"""`lasegm compare`: the paired per-patient comparison with a reference table (e.g. nnU-Net's out-of-fold Dice)."""

import json

import pytest
from conftest import REPO

from lasegm import LasegmError
from lasegm.cli import main
from lasegm.compare import paired, read_scores


def _tables(tmp_path):
    oof = tmp_path / "oof.json"
    oof.write_text(json.dumps({"format": "lasegm.oof/1", "per_patient": [
        {"case": "a", "dice": 0.90}, {"case": "b", "dice": 0.80}, {"case": "c", "dice": 0.95},
        {"case": "x", "dice": 0.50}]}))
    ref = tmp_path / "anchor.csv"
    ref.write_text("case,sys1,sys1_fold,sys2\na,0.92,1,0.5\nb,0.85,2,0.5\nc,0.95,3,0.5\nd,0.99,4,0.5\n")
    return oof, ref


def test_paired_differences_match_a_hand_computed_table(tmp_path, capsys):
    oof, ref = _tables(tmp_path)
    scores, column = read_scores(oof)
    reference, ref_column = read_scores(ref)
    assert (column, ref_column) == ("dice", "sys1")
    r = paired(scores, reference)
    # a: -0.02, b: -0.05, c: 0.00 -> mean -0.07/3; sample std of (-0.02, -0.05, 0) = 0.025166
    assert r["n"] == 3 and r["difference_mean"] == pytest.approx(-0.07 / 3)
    assert r["difference_std"] == pytest.approx(0.0251661, abs=1e-6)
    assert (r["better"], r["worse"], r["equal"]) == (0, 2, 1)
    assert r["only_in_table"] == ["x"] and r["only_in_reference"] == ["d"]
    assert paired(scores, read_scores(ref, "sys2")[0])["better"] == 3
    assert main(["compare", str(oof), "--reference", str(ref), "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "paired difference -0.0233 ± 0.0252; better on 0, worse on 2, equal on 1" in out
    assert json.loads((tmp_path / "c.json").read_text())["reference_column"] == "sys1"


def test_bad_tables_get_one_line_errors(tmp_path, capsys):
    oof, ref = _tables(tmp_path)
    with pytest.raises(LasegmError, match="no column 'nope'"):
        read_scores(ref, "nope")
    (tmp_path / "bad.csv").write_text("patient,dice\na,1\n")
    assert main(["compare", str(oof), "--reference", str(tmp_path / "bad.csv")]) == 2
    assert "a 'case' column is needed" in capsys.readouterr().err
    with pytest.raises(LasegmError, match="share no patient"):
        paired({"a": 1.0}, {"b": 1.0})


def test_the_served_unet_against_nnunet_patient_by_patient():
    """The committed U-Net's out-of-fold table against nnU-Net 3d_fullres's, per patient (docs/anchors)."""
    anchor = REPO / "docs" / "anchors" / "nnunet_task02_oof_dice.csv"
    r = paired(read_scores(REPO / "checkpoints" / "unet" / "cv-oof.json")[0], read_scores(anchor)[0])
    assert r["n"] == 16 and r["difference_mean"] == pytest.approx(-0.014, abs=5e-4) and r["worse"] == 15


def test_the_finished_folds_of_a_cross_validation_compare_together(tmp_path, capsys):
    """An unfinished CV's folds (their summary.json) pair with a reference on the patients they hold out; two
    tables that score the same patient are refused."""
    _, ref = _tables(tmp_path)
    folds = []
    for k, rows in enumerate(([("a", 0.90)], [("b", 0.86), ("c", 0.97)])):
        folds.append(tmp_path / f"fold-{k}" / "summary.json")
        folds[-1].parent.mkdir()
        folds[-1].write_text(json.dumps({"per_patient_val": [{"case": c, "dice": d} for c, d in rows]}))
    assert main(["compare", *map(str, folds), "--reference", str(ref), "--out", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    # a: -0.02, b: +0.01, c: +0.02 -> mean +0.01/3; d (only in the reference) is not compared
    assert "3 patients" in out and "better on 2, worse on 1, equal on 0" in out and "only in reference" in out
    assert json.loads((tmp_path / "c.json").read_text())["difference_mean"] == pytest.approx(0.01 / 3)
    assert main(["compare", str(folds[0]), str(folds[0]), "--reference", str(ref)]) == 2
    assert "a already in another table" in capsys.readouterr().err
