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
