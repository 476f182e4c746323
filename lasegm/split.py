"""Fixed, seeded, patient-level train/val/test split saved to JSON and reused by every command."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from lasegm import LasegmError
from lasegm.data import Case
from lasegm.utils import read_format_json, sha256_file, write_json

SPLIT_FORMAT = "lasegm.split/1"
DEFAULT_SPLIT_FILE = "splits/split.json"
PARTS = ("train", "val", "test")


def make_split(case_ids: list[str], duplicate_groups: list[list[str]], seed: int = 0,
               val_fraction: float = 0.15, test_fraction: float = 0.25) -> dict:
    """Shuffle patient groups (duplicates stay together) and fill test, then val, then train."""
    if len(case_ids) < 3:
        raise LasegmError(f"need at least 3 cases for a train/val/test split, found {len(case_ids)}")
    grouped = {c for g in duplicate_groups for c in g}
    groups = [sorted(g) for g in duplicate_groups] + [[c] for c in sorted(case_ids) if c not in grouped]
    random.Random(seed).shuffle(groups)
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
        if any(old[p] != split[p] for p in PARTS):
            raise LasegmError(f"{path}: a different split already exists; every model depends on it "
                              "(use --force to replace it, or --split_file to write elsewhere)")
        return path
    write_json(path, split)
    return path


def read_split(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise LasegmError(f"{path}: split file not found; create it with `lasegm split --data DIR`")
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


def split_cases(path: str | Path, cases: list[Case]) -> dict[str, list[Case]]:
    """Cases of each part; every case the split names must exist in the data."""
    split = read_split(path)
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
