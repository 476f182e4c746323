"""Fetch the Decathlon's Task02_Heart archive, verify it and unpack it (no macOS ._ files)."""

from __future__ import annotations

import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from lasegm import LasegmError
from lasegm.utils import atomic_path, hash_file

# The Decathlon's public mirror that MONAI's DecathlonDataset uses.
TASK02_URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task02_Heart.tar"
TASK02_MD5 = "06ee59366e1e5124267b774dbd654057"


def fetch(url: str, dest: Path, quiet: bool = False) -> Path:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, atomic_path(dest) as tmp, open(tmp, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}", disable=quiet) as bar:
                while block := resp.read(1 << 20):
                    fh.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise LasegmError(
            f"could not download {url} ({reason}). Without network access, download Task02_Heart.tar "
            f"elsewhere and run: lasegm download --archive PATH/Task02_Heart.tar --dest DIR"
        ) from None
    return dest


def verify(archive: Path, md5: str, quiet: bool = False) -> None:
    with tqdm(total=archive.stat().st_size, unit="B", unit_scale=True, desc="verifying md5", disable=quiet) as bar:
        got = hash_file(archive, "md5", progress=bar)
    if md5 and got != md5.lower():
        raise LasegmError(f"{archive}: md5 {got} does not match the expected {md5}; the file is damaged "
                          "or not the Task02_Heart archive (delete it and download again)")


def extract(archive: Path, dest: Path, quiet: bool = False) -> Path:
    """Unpack into dest (atomically per archive); skips macOS ._ resource forks."""
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError) as e:
        raise LasegmError(f"{archive}: not a readable tar archive ({e})") from None
    with tar:
        members = [m for m in tar.getmembers() if not Path(m.name).name.startswith("._")]
        roots = {Path(m.name).parts[0] for m in members if Path(m.name).parts}
        if len(roots) != 1:
            raise LasegmError(f"{archive}: expected one top folder (Task02_Heart/), found {sorted(roots)}")
        root = roots.pop()
        target = dest / root
        if target.exists():
            raise LasegmError(f"{target}: already exists; remove it or choose another --dest")
        staging = dest / f".{root}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            for m in tqdm(members, desc="extracting", unit="file", disable=quiet):
                tar.extract(m, staging, filter="data")  # 'data' filter refuses paths outside dest
            (staging / root).rename(target)
        except (tarfile.TarError, OSError) as e:
            raise LasegmError(f"{archive}: extraction failed ({e})") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def run_download(dest: str | Path, url: str = TASK02_URL, md5: str = TASK02_MD5, archive: str | None = None,
                 quiet: bool = False) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if archive:
        path = Path(archive)
        if not path.is_file():
            raise LasegmError(f"{path}: archive not found")
    else:
        path = dest / Path(url.split("?")[0]).name
        if not path.is_file():
            fetch(url, path, quiet)
        try:
            verify(path, md5, quiet)
        except LasegmError:
            path.unlink()  # a damaged download must not be picked up by the next run
            raise
        return extract(path, dest, quiet)
    verify(path, md5, quiet)
    return extract(path, dest, quiet)
