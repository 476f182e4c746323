"""Dataset analysis: per-case geometry, atrium statistics and duplicate-scan detection."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from lasegm.anatomy import axis_codes
from lasegm.data import Case, find_cases, load_case
from lasegm.preprocess import normalize_intensities

THUMB = 24  # thumbnail side for near-duplicate comparison
NEAR_DUPLICATE_CORR = 0.98


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Normalised volume shrunk to THUMB^3 so scans of any shape can be compared."""
    zoom = [THUMB / s for s in image.shape]
    t = ndimage.zoom(normalize_intensities(image), zoom, order=1)[:THUMB, :THUMB, :THUMB]
    return (t - t.mean()) / (t.std() + 1e-6)


def case_stats(case: Case) -> tuple[dict, str, np.ndarray]:
    vol = load_case(case)
    fg_slices = int(vol.label.any(axis=(0, 1)).sum())
    stats = {
        "case": case.case_id,
        "shape": "x".join(str(s) for s in vol.image.shape),
        "spacing_mm": "x".join(f"{s:.2f}" for s in vol.spacing),
        "axes": axis_codes(vol.affine),  # the directions the voxel axes run, as read (lasegm.anatomy)
        "slices": int(vol.image.shape[2]),
        "slices_with_atrium": fg_slices,
        "empty_slices": int(vol.image.shape[2] - fg_slices),
        "atrium_ml": round(float(vol.label.sum() * vol.voxel_ml), 2),
        "intensity_min": float(vol.image.min()),
        "intensity_max": float(vol.image.max()),
    }
    digest = hashlib.sha256(np.ascontiguousarray(vol.image).tobytes()).hexdigest()
    return stats, digest, thumbnail(vol.image)


def find_duplicates(digests: dict[str, str], thumbs: dict[str, np.ndarray]) -> list[dict]:
    """Pairs of cases with identical voxels, or thumbnails correlated above NEAR_DUPLICATE_CORR."""
    pairs = []
    for a, b in itertools.combinations(sorted(digests), 2):
        corr = float((thumbs[a] * thumbs[b]).mean())
        if digests[a] == digests[b] or corr >= NEAR_DUPLICATE_CORR:
            kind = "identical" if digests[a] == digests[b] else "near-duplicate"
            pairs.append({"a": a, "b": b, "kind": kind, "thumbnail_correlation": round(corr, 4)})
    return pairs


def duplicate_groups(pairs: list[dict]) -> list[list[str]]:
    """Connected groups of duplicate pairs (a~b, b~c -> {a, b, c})."""
    groups: list[set[str]] = []
    for p in pairs:
        hit = [g for g in groups if p["a"] in g or p["b"] in g]
        merged = set().union(*hit, {p["a"], p["b"]})
        groups = [g for g in groups if g not in hit] + [merged]
    return sorted(sorted(g) for g in groups)


def scan_dataset(data_dir, quiet: bool = False, data_axes: str = "auto") -> dict:
    cases = find_cases(data_dir, data_axes)
    rows, digests, thumbs = [], {}, {}
    for case in tqdm(cases, desc="reading cases", unit="case", disable=quiet):
        stats, digests[case.case_id], thumbs[case.case_id] = case_stats(case)
        rows.append(stats)
    pairs = find_duplicates(digests, thumbs)
    totals = {
        "cases": len(rows),
        "slices": sum(r["slices"] for r in rows),
        "slices_with_atrium": sum(r["slices_with_atrium"] for r in rows),
        "empty_slices": sum(r["empty_slices"] for r in rows),
        "atrium_ml_min": min(r["atrium_ml"] for r in rows),
        "atrium_ml_max": max(r["atrium_ml"] for r in rows),
        "atrium_ml_mean": round(float(np.mean([r["atrium_ml"] for r in rows])), 2),
        "shapes": sorted({r["shape"] for r in rows}),
        "spacings_mm": sorted({r["spacing_mm"] for r in rows}),
    }
    return {"data": str(data_dir), "cases": rows, "totals": totals, "duplicates": pairs,
            "duplicate_groups": duplicate_groups(pairs)}


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def run_analyze(data_dir, out_dir, case_id: str | None = None, quiet: bool = False, data_axes: str = "auto") -> dict:
    from lasegm import LasegmError, viz
    from lasegm.utils import write_csv, write_json

    report = scan_dataset(data_dir, quiet=quiet, data_axes=data_axes)
    out_dir = Path(out_dir)
    write_json(out_dir / "analysis.json", report)
    write_csv(out_dir / "analysis.csv", report["cases"])
    cases = {c.case_id: c for c in find_cases(data_dir, data_axes)}
    case_id = case_id or next(iter(cases))
    if case_id not in cases:
        raise LasegmError(f"--case {case_id}: no such case in {data_dir}")
    vol = load_case(cases[case_id])
    viz.save_grid(vol.image, None, out_dir / f"{case_id}_grid.png", truth=vol.label,
                  title=f"{case_id}: ground truth")
    report["figure"] = str(out_dir / f"{case_id}_grid.png")
    return report
