"""Golden masks: each served model (ONNX backend, as `lasegm predict` runs by default) on each bundled example
(demo/examples, stored with true headers) gives the mask recorded in tests/fixtures/golden/, to within a few
boundary voxels. No data folder is needed.

The masks are not ground truth: they pin down what the served models do, so that a change to preprocessing,
post-processing, the runtime or the mask writing that alters a result is seen, however small.

Regenerate them ONLY after a deliberate change of what the models output (a new served checkpoint, a new
preprocessing or post-processing contract, re-made examples), and say so in the commit:

    python tests/test_golden.py            # rewrites tests/fixtures/golden/masks.npz and golden.json

A fix that merely moves a mask by more than the tolerance is a change of results: look at why before
regenerating (python tests/test_golden.py --check prints the differences without writing anything).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPO / "checkpoints"
EXAMPLES = REPO / "demo" / "examples"
GOLDEN = REPO / "tests" / "fixtures" / "golden"
CASES = ("la_003", "la_019")
# Voxels allowed to differ, as a fraction of the golden mask's (~45,000-55,000 voxels: about 25). ONNX Runtime on
# another CPU moves probabilities by ~1e-6; on these examples at most 21 voxels per mask lie within 1e-3 of the
# threshold, and ONNX Runtime and PyTorch give identical masks.
TOLERANCE = 5e-4


def _served() -> tuple[str, ...]:
    from lasegm.checkpoint import SERVED

    return SERVED


def predict(arch: str, case: str, out_dir: Path) -> np.ndarray:
    """`lasegm predict` on the ONNX backend, the mask read back from the NIfTI file it wrote."""
    from lasegm.cli import main

    out = out_dir / f"{arch}-{case}.nii.gz"
    code = main(["--quiet", "predict", "--checkpoint", str(CHECKPOINTS / arch), "--input",
                 str(EXAMPLES / f"{case}_image.nii.gz"), "--output", str(out), "--backend", "onnx"])
    assert code == 0, f"lasegm predict failed for {arch} on {case}"
    return np.asarray(nib.load(str(out)).dataobj).astype(bool)


def provenance(arch: str, case: str) -> dict:
    """What a golden mask was made from: the weights, the recipe and the example file (a multi-view checkpoint:
    each view's weights and preprocessing, and the folder's post-processing)."""
    from lasegm.checkpoint import model_folders, read_checkpoint_config, read_served_config
    from lasegm.utils import sha256_file

    models = [read_checkpoint_config(m) for m in model_folders(CHECKPOINTS / arch)]
    record = {"weights_sha256": [m["weights_sha256"] for m in models],
              "preprocessing": [m["preprocessing"] for m in models]}
    if len(models) == 1:  # one model: as recorded before multi-view checkpoints
        record = {key: value[0] for key, value in record.items()}
    return {**record, "postprocessing": read_served_config(CHECKPOINTS / arch).get("postprocessing"),
            "example_sha256": sha256_file(EXAMPLES / f"{case}_image.nii.gz")}


def load_golden() -> tuple[dict, dict]:
    meta = json.loads((GOLDEN / "golden.json").read_text())
    with np.load(GOLDEN / "masks.npz") as packed:
        masks = {key: np.unpackbits(packed[key], count=int(np.prod(meta["masks"][key]["shape"])))
                 .reshape(meta["masks"][key]["shape"]).astype(bool) for key in packed.files}
    return meta, masks


@pytest.fixture(scope="module")
def golden():
    return load_golden()


# the quick tier checks every model on la_019 (100 slices); la_003 (130) runs with the slow tests
@pytest.mark.parametrize("case", [c if c == "la_019" else pytest.param(c, marks=pytest.mark.slow) for c in CASES])
@pytest.mark.parametrize("arch", _served())
def test_served_model_reproduces_its_golden_mask(arch, case, golden, tmp_path, capsys):
    meta, masks = golden
    key = f"{arch}-{case}"
    recorded = meta["masks"][key]
    now = provenance(arch, case)
    changed = [k for k in now if now[k] != recorded[k]]
    assert not changed, (f"{key}: the golden mask was made with another {', '.join(changed)}; after a deliberate "
                         "model or example change, regenerate: python tests/test_golden.py")
    capsys.readouterr()
    mask, expected = predict(arch, case, tmp_path), masks[key]
    warnings = capsys.readouterr().err
    assert "warning:" not in warnings, f"{key}: a development scan was flagged: {warnings}"  # no quality flag
    assert mask.shape == expected.shape
    differing = int((mask != expected).sum())
    allowed = int(TOLERANCE * expected.sum())
    assert differing <= allowed, (
        f"{key}: {differing} voxels differ from the golden mask (allowed {allowed}; golden {int(expected.sum())}, "
        f"now {int(mask.sum())} voxels). If the change of results is deliberate, regenerate: "
        "python tests/test_golden.py (see its docstring)")


def regenerate(check_only: bool = False) -> int:
    """Segment every example with every served model and write (or, check_only, compare with) the golden masks."""
    from lasegm import __version__

    old = load_golden()[1] if (GOLDEN / "masks.npz").is_file() else {}
    meta = {"how": "python tests/test_golden.py (lasegm predict --backend onnx on demo/examples)",
            "lasegm_version": __version__, "created": time.strftime("%Y-%m-%d"), "masks": {}}
    packed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in _served():
            for case in CASES:
                key = f"{arch}-{case}"
                mask = predict(arch, case, Path(tmp))
                before = f"{int((mask != old[key]).sum())} voxels differ" if key in old else "new"
                print(f"{key}: {int(mask.sum())} voxels ({before})")
                meta["masks"][key] = {"shape": list(mask.shape), "voxels": int(mask.sum()), **provenance(arch, case)}
                packed[key] = np.packbits(mask)
    if check_only:
        return 0
    GOLDEN.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN / "masks.npz", **packed)
    (GOLDEN / "golden.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {GOLDEN / 'masks.npz'} and golden.json")
    return 0


if __name__ == "__main__":
    sys.exit(regenerate(check_only="--check" in sys.argv[1:]))
