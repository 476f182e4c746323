"""Small shared helpers: atomic writes, hashing, device choice, a mask's bounding box."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    Keeps the suffix (".nii.gz", ".png") so libraries that dispatch on it still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem.split('.')[0]}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give outputs the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Like atomic_path for a folder: build it under a temporary name, then swap it in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default) + "\n")


def read_format_json(path: Path, expected_format: str | None, kind: str) -> dict:
    """A lasegm JSON file (split, checkpoint config) whose "format" field must match (None: any)."""
    from lasegm import LasegmError

    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LasegmError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or (expected_format is not None and obj.get("format") != expected_format):
        raise LasegmError(f"{path}: not a lasegm {kind} (format must be {expected_format})")
    return obj


def json_default(o):
    """json.dumps(default=...) for what lasegm writes: numpy scalars and arrays, paths."""
    if hasattr(o, "tolist"):  # numpy scalars and arrays (a scalar's tolist is its Python value)
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    return hash_file(path, "sha256", chunk)


def hash_file(path: str | Path, algorithm: str, chunk: int = 1 << 20, progress=None) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
            if progress is not None:
                progress.update(len(block))
    return h.hexdigest()


def resolve_device(name: str = "auto"):
    """'auto' picks CUDA when present, else Apple MPS, else CPU."""
    import torch

    from lasegm import LasegmError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise LasegmError(f"--device {name}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LasegmError(f"--device {name}: CUDA is not available on this machine")
    return device


def available_cores() -> int:
    """The cores this process may use (cgroups and taskset can give fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_cpu_threads(n: int = 0) -> None:
    """Use all cores by default (torch sometimes picks fewer in containers)."""
    import torch

    torch.set_num_threads(n if n > 0 else available_cores())


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every nonzero voxel of `mask`, None if there is none. One np.any per axis:
    ~9x faster than scipy's find_objects on a whole scan (4 vs 34 ms at 256 x 256 x 130), which matters because
    post-processing and scoring call it on every validation patient of every epoch."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not hit.size:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)
