"""Paired per-patient comparison of two out-of-fold tables: `lasegm compare TABLE --reference REFERENCE`.

Means hide who is better where: an anchor such as nnU-Net's out-of-fold Dice per development patient
(../shared/anchors' CSV form: a `case` column and one column per system) is compared patient by patient with a
lasegm table (a cross-validation's oof.json / oof.csv, or a checkpoint's cv-oof.json). The finished folds of an
unfinished cross-validation (their summary.json files) compare the same way, on the patients they hold out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lasegm import LasegmError


def read_scores(path: str | Path, column: str | None = None) -> tuple[dict[str, float], str]:
    """{case: score} and the column's name. A lasegm out-of-fold JSON (or a fold's summary.json: its held-out
    patients) gives its per-patient `dice`; a CSV gives `column`, else `dice`, else its first column after `case`
    whose values are numbers."""
    path = Path(path)
    if not path.is_file():
        raise LasegmError(f"{path}: file not found")
    if path.suffix == ".json":
        try:
            table = json.loads(path.read_text())
            rows = table["per_patient"] if "per_patient" in table else table["per_patient_val"]
        except (ValueError, KeyError, TypeError):
            raise LasegmError(f"{path}: not a lasegm out-of-fold table or fold summary (no per_patient list)") from None
        column = column or "dice"
    else:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "case" not in rows[0]:
            raise LasegmError(f"{path}: a CSV with a 'case' column is needed")
        if column is None:
            numeric = [k for k in rows[0] if k != "case" and _number(rows[0][k]) is not None]
            column = "dice" if "dice" in numeric else (numeric or [None])[0]
    if column is None or any(column not in r for r in rows):
        raise LasegmError(f"{path}: no column {column!r}")
    scores = {}
    for r in rows:
        value = _number(r[column])
        if value is None:
            raise LasegmError(f"{path}: {r['case']}: {column} is not a number ({r[column]!r})")
        scores[str(r["case"])] = value
    return scores, column


def read_tables(paths: list[str | Path], column: str | None = None) -> tuple[dict[str, float], str]:
    """{case: score} of several tables of disjoint patients (e.g. the finished folds of a cross-validation)."""
    scores, names = {}, []
    for path in paths:
        table, name = read_scores(path, column)
        twice = sorted(set(table) & set(scores))
        if twice:
            raise LasegmError(f"{path}: {', '.join(twice)} already in another table; the tables must hold "
                              "different patients (one score per patient)")
        scores.update(table)
        names.append(name)
    return scores, names[0]


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def paired(scores: dict[str, float], reference: dict[str, float]) -> dict:
    """Per patient `scores - reference` over the patients both hold: mean, sample std (n - 1), how many are
    better / worse / equal, and the patients only one side has."""
    common = sorted(set(scores) & set(reference))
    if not common:
        raise LasegmError("the two tables share no patient")
    diff = np.array([scores[c] - reference[c] for c in common])
    return {"n": len(common), "mean": float(np.mean([scores[c] for c in common])),
            "reference_mean": float(np.mean([reference[c] for c in common])),
            "difference_mean": float(diff.mean()), "difference_std": float(diff.std(ddof=1)) if len(diff) > 1 else 0.0,
            "better": int((diff > 0).sum()), "worse": int((diff < 0).sum()), "equal": int((diff == 0).sum()),
            "worst": min(scores[c] for c in common),
            "only_in_table": sorted(set(scores) - set(reference)),
            "only_in_reference": sorted(set(reference) - set(scores)),
            "per_patient": [{"case": c, "score": scores[c], "reference": reference[c],
                             "difference": scores[c] - reference[c]} for c in common]}


def format_report(result: dict, name: str, reference_name: str) -> str:
    lines = [f"{'case':8s} {name[:22]:>22s} {reference_name[:28]:>28s} {'difference':>10s}"]
    lines += [f"{r['case']:8s} {r['score']:22.4f} {r['reference']:28.4f} {r['difference']:+10.4f}"
              for r in result["per_patient"]]
    lines.append(f"{result['n']} patients: {result['mean']:.4f} vs {result['reference_mean']:.4f}; paired difference "
                 f"{result['difference_mean']:+.4f} ± {result['difference_std']:.4f}; better on {result['better']}, "
                 f"worse on {result['worse']}, equal on {result['equal']}")
    for side in ("only_in_table", "only_in_reference"):
        if result[side]:
            lines.append(f"{side.replace('_', ' ')} (not compared): {', '.join(result[side])}")
    return "\n".join(lines)
