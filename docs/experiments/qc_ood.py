"""Do the quality flags fire on scans unlike the training data, and never on the development patients? Made from
development patients (stored with their true ASR geometry): another contrast (intensities inverted: dark blood), a
CT-like profile (one soft-tissue level, air dark: blood pool and myocardium alike), no heart in view (only the slab
below the diaphragm), and noise. Each served model segments each, and every development patient as stored; the
flags are predict's (lasegm.predict.segment_scan: the input's, lasegm.ood, and the result's,
lasegm.postprocess.quality_flags). Writes docs/experiments/qc_ood.csv.

    LASEGM_DATA=... python docs/experiments/qc_ood.py
"""

from dataclasses import replace
from pathlib import Path

from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.models import SERVED
from lasegm.ood import made_up_unlike
from lasegm.predict import Segmenter, segment_scan
from lasegm.utils import write_csv

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_suffix(".csv")
CASES = ("la_003", "la_009", "la_019", "la_030")


def main() -> None:
    cases = {c.case_id: c for c in find_cases(default_data_dir())}
    rows = []
    for arch in SERVED:
        seg = Segmenter(ROOT / "checkpoints" / arch, device="cpu")
        for cid, case in cases.items():
            vol = load_case(case)
            made = made_up_unlike(vol.image) if cid in CASES else iter(())
            for name, image in [("as stored", vol.image), *made]:
                mask, result = segment_scan(seg, replace(vol, image=image, label=None))
                rows.append({"model": arch, "case": cid, "variant": name, "volume_ml": round(result["volume_ml"], 1),
                             "flags": " ".join(result["flags"])})
                print(rows[-1], flush=True)
    write_csv(OUT, rows)
    made = [r for r in rows if r["variant"] != "as stored"]
    print(f"wrote {OUT}; flagged {sum(bool(r['flags']) for r in made)} of {len(made)} made-up scans, "
          f"{sum(bool(r['flags']) for r in rows if r['variant'] == 'as stored')} of {len(rows) - len(made)} "
          "development scans as stored")


if __name__ == "__main__":
    main()
