"""Do the quality flags fire on scans unlike the training data? Made from development patients (stored with their
true ASR geometry): another contrast (intensities inverted: dark blood), a CT-like profile (one soft-tissue level,
air dark: blood pool and myocardium alike), no heart in view (only the slab below the diaphragm), and noise. Each
served model segments each; the flags are lasegm.postprocess.quality_flags' (the same as predict's).
Writes docs/experiments/qc_ood.csv.

    LASEGM_DATA=... python docs/experiments/qc_ood.py
"""

from pathlib import Path

import numpy as np

from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.models import SERVED
from lasegm.postprocess import quality_flags
from lasegm.predict import Segmenter
from lasegm.utils import write_csv

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_suffix(".csv")
CASES = ("la_003", "la_009", "la_019", "la_030")


def variants(vol):
    image = vol.image
    rng = np.random.default_rng(0)
    lo, hi = np.percentile(image, (1, 99))
    yield "inverted contrast", image.max() - image, vol.affine
    ct = np.where(image < np.percentile(image, 20), -900.0, 40.0) + rng.normal(0, 15, image.shape)
    yield "CT-like profile", ct.astype(np.float32), vol.affine
    # voxel axis 1 runs superior (ASR): its lowest 60 slices (75 mm) lie below the heart
    yield "no heart in view", np.ascontiguousarray(image[:, :60]), vol.affine
    yield "noise", rng.uniform(lo, hi, image.shape).astype(np.float32), vol.affine


def main() -> None:
    cases = {c.case_id: c for c in find_cases(default_data_dir())}
    rows = []
    for arch in SERVED:
        seg = Segmenter(ROOT / "checkpoints" / arch, device="cpu")
        for cid in CASES:
            vol = load_case(cases[cid])
            for name, image, affine in variants(vol):
                probs = seg.probabilities(type(vol)(image=image, affine=affine, header=vol.header, spacing=vol.spacing))
                mask = seg.post.binarize(probs)
                flags = [code for code, _ in quality_flags(mask, vol.voxel_ml, probs, seg.post.threshold)]
                rows.append({"model": arch, "case": cid, "variant": name,
                             "volume_ml": round(float(mask.sum() * vol.voxel_ml), 1), "flags": " ".join(flags)})
                print(rows[-1], flush=True)
    write_csv(OUT, rows)
    print(f"wrote {OUT}; flagged {sum(bool(r['flags']) for r in rows)} of {len(rows)}")


if __name__ == "__main__":
    main()
