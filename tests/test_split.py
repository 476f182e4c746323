import json

import pytest

from lasegm import LasegmError
from lasegm.cli import main
from lasegm.data import find_cases
from lasegm.split import make_split, read_split, save_split, split_cases

IDS = [f"la_{i:03d}" for i in range(20)]


def test_split_is_patient_level_seeded_and_complete():
    s = make_split(IDS, [], seed=3)
    parts = [set(s[p]) for p in ("train", "val", "test")]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert set().union(*parts) == set(IDS)
    assert (len(s["test"]), len(s["val"])) == (5, 3)
    assert make_split(IDS, [], seed=3) == s
    assert make_split(IDS, [], seed=4)["test"] != s["test"]


@pytest.mark.parametrize("seed", range(10))
def test_duplicates_always_share_a_part(seed):
    groups = [["la_001", "la_017"], ["la_004", "la_005", "la_009"]]
    s = make_split(IDS, groups, seed=seed)
    for g in groups:
        assert sum(any(c in s[p] for c in g) for p in ("train", "val", "test")) == 1


def test_existing_split_is_never_silently_replaced(tmp_path):
    path = tmp_path / "split.json"
    save_split(path, make_split(IDS, [], seed=0))
    save_split(path, make_split(IDS, [], seed=0))  # same split: fine
    with pytest.raises(LasegmError, match="different split already exists"):
        save_split(path, make_split(IDS, [], seed=1))
    save_split(path, make_split(IDS, [], seed=1), force=True)
    assert read_split(path)["seed"] == 1


def test_read_split_detects_leakage_and_bad_files(tmp_path):
    path = tmp_path / "split.json"
    s = make_split(IDS, [], seed=0)
    s["val"].append(s["train"][0])
    path.write_text(json.dumps(s))
    with pytest.raises(LasegmError, match="more than one part"):
        read_split(path)
    path.write_text("{not json")
    with pytest.raises(LasegmError, match="not valid JSON"):
        read_split(path)
    with pytest.raises(LasegmError, match="split file not found"):
        read_split(tmp_path / "missing.json")


def test_split_cli_groups_real_duplicates(dataset, tmp_path):
    path = tmp_path / "split.json"
    assert main(["--quiet", "split", "--data", str(dataset), "--split_file", str(path)]) == 0
    s = read_split(path)
    assert s["duplicate_groups"] == [["la_001", "la_007"]]
    assert sum("la_001" in s[p] and "la_007" in s[p] for p in ("train", "val", "test")) == 1
    parts = split_cases(path, find_cases(dataset))
    assert sum(len(v) for v in parts.values()) == 7


def test_split_naming_unknown_cases_is_an_error(dataset, tmp_path):
    path = tmp_path / "split.json"
    save_split(path, make_split(IDS, [], seed=0))
    with pytest.raises(LasegmError, match="not in the data folder"):
        split_cases(path, find_cases(dataset))


def test_nested_folds_leave_two_folds_out_and_outer_splits_test_one(tmp_path):
    """The fold-ensemble comparison's splits: fold 0 of a nested file is the held-out folds merged (--fold 0 trains
    on the rest), duplicate scans stay together, and an outer split tests exactly one fold."""
    from lasegm.split import make_folds, nested_folds, outer_split, fold_parts

    folds = make_folds(IDS, [["la_001", "la_017"]], k=5, seed=0)
    nested = nested_folds(folds, [1, 3])
    path = tmp_path / "pair.json"
    save_split(path, nested)
    parts = fold_parts(read_split(path), 0, path)  # read back: no leakage, duplicates in one fold
    assert set(parts["val"]) == set(folds["folds"][1]) | set(folds["folds"][3])
    assert set(parts["train"]) == {c for i in (0, 2, 4) for c in folds["folds"][i]}
    outer = outer_split(folds, 3)
    save_split(tmp_path / "outer.json", outer)
    assert outer["test"] == sorted(folds["folds"][3]) and not outer["val"]
    assert set(outer["train"]) | set(outer["test"]) == set(IDS)
    for bad in ([], [1, 1], [5], [0, 1, 2, 3]):
        with pytest.raises(LasegmError):
            nested_folds(folds, bad)
    with pytest.raises(LasegmError, match="folds 0..4"):
        outer_split(folds, 5)
