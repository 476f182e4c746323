"""Stage 5: per-patient 3D metrics of a checkpoint on one part of the saved split."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from lasegm import LasegmError
from lasegm.analyze import format_table
from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.metrics import PATIENT_METRICS as METRICS
from lasegm.metrics import patient_row, summarize
from lasegm.predict import load_segmenter
from lasegm.split import DEFAULT_SPLIT_FILE, read_split, split_cases, split_hash
from lasegm.utils import write_csv, write_json


def evaluate(checkpoint, data=None, split_file=DEFAULT_SPLIT_FILE, part="test", device="auto",
             quiet=False, largest_component=None, flip_tta=None, backend="auto", data_axes="auto",
             exhaustive=False) -> dict:
    seg = load_segmenter(checkpoint, device=device, largest_component=largest_component, flip_tta=flip_tta,
                         backend=backend, exhaustive=exhaustive)
    cases = split_cases(split_file, find_cases(data or default_data_dir(), data_axes))[part]
    if seg.config.get("split_sha256") and seg.config["split_sha256"] != split_hash(split_file):
        source = seg.source if isinstance(seg.source, str) else " + ".join(seg.source)  # an ensemble: its members
        print(f"warning: {source} was trained with a different split file than {split_file}", file=sys.stderr)
    refuse_trained_on(seg, [c.case_id for c in cases], read_split(split_file).get("duplicate_groups", []))
    rows = score_cases(seg, tqdm(cases, desc=f"evaluating {part}", unit="patient", disable=quiet))
    return {"checkpoint": seg.source, "arch": seg.arch, "split_file": str(split_file), "part": part,
            "device": str(seg.device), "backend": seg.backend, "largest_component": seg.post.largest_component,
            "flip_tta": seg.post.flip_tta, "per_patient": rows, "summary": summarize(rows, METRICS)}


def refuse_trained_on(seg, case_ids: list[str], duplicate_groups: list[list[str]]) -> None:
    """A score on patients a model trained on (or on their duplicate scans) is not accuracy: refuse to make one."""
    for member in getattr(seg, "members", [seg]):
        seen = set(member.trained_on)
        seen |= {c for group in duplicate_groups if seen & set(group) for c in group}
        overlap = sorted(seen & set(case_ids))
        if overlap:
            raise LasegmError(f"{member.source} was trained on {', '.join(overlap)} (or a duplicate scan of it); "
                              "a score there is not accuracy. Score held-out patients, or cite the recipe's "
                              "cross-validation (`cv` in its config.json)")


def score_cases(seg, cases) -> list[dict]:
    """Each labelled case segmented from its scan and scored per patient (3D metrics, time)."""
    rows = []
    for case in cases:
        vol = load_case(case)
        t0 = time.perf_counter()
        mask = seg.segment(vol)
        rows.append(patient_row(case.case_id, mask, vol.label, vol.spacing, time.perf_counter() - t0))
    return rows


def report_table(result: dict) -> str:
    rows = result["per_patient"]
    s = result["summary"]
    mean = {"case": "mean", **{k: s[k]["mean"] for k in METRICS}}
    std = {"case": "std", **{k: s[k]["std"] for k in METRICS}}
    note = ("3D metrics per patient volume; dice_slice = mean 2D Dice over slices with atrium "
            "(per-slice, shown for reference)")
    return format_table(rows + [mean, std], ["case", *METRICS]) + "\n" + note


def run_evaluate(checkpoint, out_dir=None, **kwargs) -> dict:
    result = evaluate(checkpoint, **kwargs)
    source = result["checkpoint"]  # one folder, or an ensemble's list of them
    name = Path(source).name if isinstance(source, str) else result["arch"].replace("+", "-") + "-ensemble"
    out_dir = Path(out_dir) if out_dir else Path("runs") / "evaluate" / f"{name}-{result['part']}"
    write_json(out_dir / "evaluation.json", result)
    write_csv(out_dir / "evaluation.csv", result["per_patient"])
    result["out_dir"] = str(out_dir)
    return result
