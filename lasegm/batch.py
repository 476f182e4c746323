"""`lasegm predict --input DIR|ZIP --output OUTDIR`: many scans in one process.

The scans of an input: every NIfTI file below a folder, every DICOM series below it (grouped by SeriesInstanceUID,
any file names or folders), or the same inside a .zip. The model loads once; each scan's mask is written atomically to
OUTDIR/<name>.nii.gz (name: the NIfTI file's stem, or the folder holding the series' files; made unique), and
OUTDIR/summary.csv (rewritten atomically after every scan, so an interrupted batch leaves a whole table) says what
happened to each: its volume, quality flags, geometry and seconds, or why it failed. A scan that fails is reported
on stderr and in the summary, and the rest go on.
"""

from __future__ import annotations

import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lasegm import LasegmError
from lasegm.data import case_id_of, declare_axes, is_nifti, load_volume
from lasegm.utils import write_csv

SUMMARY = "summary.csv"


@dataclass(frozen=True)
class Scan:
    name: str
    source: Path | tuple[Path, ...]  # a NIfTI file, or a DICOM series' files
    series_uid: str = ""


def is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip"


def unzip(archive_path: Path, folder: str | Path, max_mb: float | None = None) -> Path:
    """Unpack a .zip into `folder` (extract() drops absolute paths and '..'). An unreadable archive, or one that
    would unpack to more than max_mb, is a one-line LasegmError naming the archive."""
    archive_path = Path(archive_path)
    try:
        with zipfile.ZipFile(archive_path) as archive:
            if max_mb is not None and sum(i.file_size for i in archive.infolist()) > max_mb * 1e6:
                raise LasegmError(f"{archive_path}: unpacks to more than {max_mb:.0f} MB")
            archive.extractall(folder)
    except (zipfile.BadZipFile, OSError) as e:
        raise LasegmError(f"{archive_path}: unreadable .zip ({e})") from None
    return Path(folder)


def discover(folder: Path) -> list[Scan]:
    """The scans below a folder: NIfTI files, and DICOM series; names unique."""
    from lasegm.dicom import find_series

    scans = [Scan(case_id_of(p), p) for p in sorted(folder.rglob("*")) if p.is_file() and is_nifti(p)
             and not p.name.startswith(".")]
    for uid, files in sorted(find_series(folder).items(), key=lambda item: str(item[1][0])):
        parent = files[0].parent if len({f.parent for f in files}) == 1 else Path(*_common_parts(files))
        scans.append(Scan(parent.name if parent != folder else folder.name, tuple(files), uid))
    seen: dict[str, int] = {}
    unique = []
    for scan in scans:
        n = seen[scan.name] = seen.get(scan.name, 0) + 1
        unique.append(scan if n == 1 else Scan(f"{scan.name}_{n}", scan.source, scan.series_uid))
    return unique


def _common_parts(files) -> tuple[str, ...]:
    parts = [f.parent.parts for f in files]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return tuple(common)


def load_scan(scan: Scan, axes: str | None):
    if isinstance(scan.source, Path):
        return load_volume(scan.source, None, axes)
    from lasegm.dicom import read_series

    return declare_axes(read_series(list(scan.source), f"{scan.name} (series {scan.series_uid})"), axes)


def run_batch(seg, input_path, out_dir, axes: str | None = None, skip_existing: bool = False,
              quiet: bool = False, output_format: str = "nifti") -> dict:
    """Segment every scan of `input_path` with the loaded segmenter `seg` (lasegm.predict.load_segmenter).
    output_format: nifti (<name>.nii.gz) or dicom-seg (<name>.dcm, a DICOM SEG over each DICOM series)."""
    from lasegm.predict import save_mask, segment_scan

    input_path, out_dir = Path(input_path), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="lasegm-zip-") as unpacked:
        if is_zip(input_path):
            folder = unzip(input_path, unpacked)
        elif input_path.is_dir():
            folder = input_path
        else:
            raise LasegmError(f"{input_path}: for a batch, give a folder or a .zip (one scan: --output FILE.nii.gz)")
        scans = discover(folder)
        if not scans:
            raise LasegmError(f"{input_path}: no NIfTI files or DICOM series found")
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for scan in tqdm(scans, desc="scans", unit="scan", disable=quiet):
            output = out_dir / f"{scan.name}{'.dcm' if output_format == 'dicom-seg' else '.nii.gz'}"
            shown = scan.source if isinstance(scan.source, Path) else scan.source[0].parent
            row = {"input": str(shown if input_path.is_dir() else input_path / shown.relative_to(folder)),
                   "output": str(output), "status": "", "volume_ml": "", "flags": "", "series_uid": scan.series_uid,
                   "shape": "", "spacing_mm": "", "seconds": "", "warnings": "", "error": ""}
            if skip_existing and output.exists():
                row["status"] = "skipped (exists)"
            else:
                t0 = time.perf_counter()
                try:
                    vol = load_scan(scan, axes)
                    mask, result = segment_scan(seg, vol)
                    save_mask(mask, vol, output)
                except Exception as e:  # noqa: BLE001 - one bad scan never stops the batch; LasegmError says why
                    message = str(e) if isinstance(e, LasegmError) else f"{type(e).__name__}: {e}"
                    row.update(status="failed", error=message)
                    print(f"lasegm predict: {scan.name}: error: {message}", file=sys.stderr)
                else:
                    row.update(status="ok", volume_ml=round(result["volume_ml"], 2), flags=" ".join(result["flags"]),
                               shape="x".join(map(str, vol.image.shape)),
                               spacing_mm="x".join(f"{s:.3f}" for s in vol.spacing),
                               seconds=round(time.perf_counter() - t0, 2), warnings=" | ".join(result["warnings"]))
                    for warning in result["warnings"]:
                        print(f"lasegm predict: {scan.name}: warning: {warning}", file=sys.stderr)
            rows.append(row)
            write_csv(out_dir / SUMMARY, rows)
    failed = [r for r in rows if r["status"] == "failed"]
    return {"rows": rows, "failed": len(failed), "flagged": sum(bool(r["flags"]) for r in rows),
            "summary": str(out_dir / SUMMARY)}
