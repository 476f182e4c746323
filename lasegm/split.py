"""Fixed, seeded, patient-level train/val/test split saved to JSON and reused by every command."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from lasegm import LasegmError
from lasegm.data import Case
from lasegm.utils import read_format_json, sha256_file, write_json

SPLIT_FORMAT = "lasegm.split/1"  # one train/val/test split
FOLDS_FORMAT = "lasegm.folds/1"  # K-fold cross-validation: every patient is validated exactly once
DEFAULT_SPLIT_FILE = "splits/split.json"
DEFAULT_FOLDS_FILE = "splits/cv5.json"
PARTS = ("train", "val", "test")


def _shuffled_groups(case_ids: list[str], duplicate_groups: list[list[str]], seed: int) -> list[list[str]]:
    grouped = {c for g in duplicate_groups for c in g}
    groups = [sorted(g) for g in duplicate_groups] + [[c] for c in sorted(case_ids) if c not in grouped]
    random.Random(seed).shuffle(groups)
    return groups


def make_folds(case_ids: list[str], duplicate_groups: list[list[str]], k: int = 5, seed: int = 0) -> dict:
    """Patient-level K folds (duplicate scans in one fold), balanced by patient count."""
    if not 2 <= k <= len(case_ids):
        raise LasegmError(f"cannot make {k} folds of {len(case_ids)} cases (need 2 <= K <= cases)")
    folds: list[list[str]] = [[] for _ in range(k)]
    for group in sorted(_shuffled_groups(case_ids, duplicate_groups, seed), key=len, reverse=True):
        min(folds, key=len).extend(group)  # stable: ties go to the first fold
    return {"format": FOLDS_FORMAT, "seed": seed, "k": k, "created": time.strftime("%Y-%m-%d"),
            "duplicate_groups": duplicate_groups, "folds": [sorted(f) for f in folds]}


def make_split(case_ids: list[str], duplicate_groups: list[list[str]], seed: int = 0,
               val_fraction: float = 0.15, test_fraction: float = 0.25) -> dict:
    """Shuffle patient groups (duplicates stay together) and fill test, then val, then train."""
    if len(case_ids) < 3:
        raise LasegmError(f"need at least 3 cases for a train/val/test split, found {len(case_ids)}")
    groups = _shuffled_groups(case_ids, duplicate_groups, seed)
    n = len(case_ids)
    want = {"test": max(1, round(n * test_fraction)), "val": max(1, round(n * val_fraction))}
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for group in groups:
        target = next((p for p in ("test", "val") if len(parts[p]) + len(group) <= want[p]), "train")
        parts[target] += group
    if not parts["train"]:
        raise LasegmError("split left no training cases; lower --val_fraction/--test_fraction")
    return {
        "format": SPLIT_FORMAT,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "created": time.strftime("%Y-%m-%d"),
        "duplicate_groups": duplicate_groups,
        **{p: sorted(parts[p]) for p in PARTS},
    }


def save_split(path: str | Path, split: dict, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        old = read_split(path)
        keys = ("folds",) if split["format"] == FOLDS_FORMAT else PARTS
        if old["format"] != split["format"] or any(old.get(p) != split[p] for p in keys):
            raise LasegmError(f"{path}: a different split already exists; every model depends on it "
                              "(use --force to replace it, or --split_file to write elsewhere)")
        return path
    write_json(path, split)
    return path


def read_split(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LasegmError(f"{path}: split file not found; create it with `lasegm split --data DIR`")
    if read_format_json(path, None, "split file").get("format") == FOLDS_FORMAT:
        return _read_folds(path)
    split = read_format_json(path, SPLIT_FORMAT, "split file")
    seen: set[str] = set()
    for p in PARTS:
        if not isinstance(split.get(p), list):
            raise LasegmError(f"{path}: missing list {p!r}")
        overlap = seen & set(split[p])
        if overlap:
            raise LasegmError(f"{path}: cases {sorted(overlap)} appear in more than one part (leakage)")
        seen |= set(split[p])
    return split


def _read_folds(path: Path) -> dict:
    folds = read_format_json(path, FOLDS_FORMAT, "folds file")
    if not isinstance(folds.get("folds"), list) or len(folds["folds"]) < 2:
        raise LasegmError(f"{path}: a folds file needs a list of at least 2 folds")
    seen: set[str] = set()
    for i, fold in enumerate(folds["folds"]):
        overlap = seen & set(fold)
        if overlap:
            raise LasegmError(f"{path}: cases {sorted(overlap)} are in more than one fold (leakage)")
        seen |= set(fold)
    for group in folds.get("duplicate_groups", []):
        if len({i for i, f in enumerate(folds["folds"]) for c in group if c in f}) > 1:
            raise LasegmError(f"{path}: duplicate scans {group} are in different folds (leakage)")
    return folds


def fold_parts(split: dict, fold: int | None, path, all_folds: bool = False) -> dict[str, list[str]]:
    """Case IDs of train/val/test: a split file's parts, fold K of a folds file (test empty), or every patient of
    a folds file for training (all_folds: nothing left to validate or test on)."""
    if all_folds:
        if split["format"] != FOLDS_FORMAT or fold is not None:
            raise LasegmError(f"{path}: --all_folds trains on every patient of a folds file (such as "
                              f"{DEFAULT_FOLDS_FILE}), without --fold")
        return {"train": sorted(c for f in split["folds"] for c in f), "val": [], "test": []}
    if split["format"] == FOLDS_FORMAT:
        k = len(split["folds"])
        if fold is None or not 0 <= fold < k:
            raise LasegmError(f"{path}: is a {k}-fold cross-validation file; choose --fold 0..{k - 1}")
        return {"train": sorted(c for i, f in enumerate(split["folds"]) if i != fold for c in f),
                "val": list(split["folds"][fold]), "test": []}
    if fold is not None:
        raise LasegmError(f"{path}: is a single train/val/test split, not a folds file; drop --fold "
                          f"or use a folds file such as {DEFAULT_FOLDS_FILE}")
    return {p: split[p] for p in PARTS}


def nested_folds(folds: dict, held_out: list[int]) -> dict:
    """A folds file whose fold 0 is the given folds of `folds` merged: `--fold 0` trains on all the others. A
    nested comparison trains one model per pair of held-out folds (leave two folds out) and scores, on each outer
    fold, the ensemble of the models that never saw it (docs/experiments/fold_ensemble.py)."""
    k = len(folds["folds"])
    if not held_out or len(set(held_out)) != len(held_out) or not all(0 <= f < k for f in held_out):
        raise LasegmError(f"held-out folds {held_out}: need distinct folds of 0..{k - 1}")
    if len(held_out) >= k - 1:
        raise LasegmError(f"holding out {len(held_out)} of {k} folds leaves fewer than two folds to train on")
    rest = [fold for i, fold in enumerate(folds["folds"]) if i not in held_out]
    merged = sorted(c for i in held_out for c in folds["folds"][i])
    return {**folds, "k": len(rest) + 1, "folds": [merged, *rest], "nested_from": {"held_out": held_out}}


def outer_split(folds: dict, fold: int) -> dict:
    """A train/val/test split whose test part is one fold of `folds`: what scores a model that never saw it."""
    k = len(folds["folds"])
    if not 0 <= fold < k:
        raise LasegmError(f"fold {fold}: the folds file has folds 0..{k - 1}")
    parts = fold_parts(folds, fold, "the folds file")  # fold K's validation part is the test part here
    return {"format": SPLIT_FORMAT, "seed": folds.get("seed"), "created": time.strftime("%Y-%m-%d"),
            "duplicate_groups": folds.get("duplicate_groups", []), "train": parts["train"], "val": [],
            "test": sorted(parts["val"])}


def split_cases(path: str | Path, cases: list[Case], fold: int | None = None,
                all_folds: bool = False) -> dict[str, list[Case]]:
    """Cases of each part; every case the split names must exist in the data."""
    split = fold_parts(read_split(path), fold, path, all_folds)
    by_id = {c.case_id: c for c in cases}
    named = [c for p in PARTS for c in split[p]]
    missing = [c for c in named if c not in by_id]
    if missing:
        raise LasegmError(f"{path}: cases {missing} are not in the data folder; is this the split for this data?")
    unused = sorted(set(by_id) - set(named))
    if unused:
        print(f"warning: {len(unused)} cases are not in {path} and are not used: {', '.join(unused)}",
              file=sys.stderr)
    return {p: [by_id[c] for c in split[p]] for p in PARTS}


def split_hash(path: str | Path) -> str:
    return sha256_file(path)
