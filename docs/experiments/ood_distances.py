"""How far each made-up unlike scan's intensity profile lies from a served checkpoint's input reference (lasegm.ood),
against the threshold it records: the input check's margins, without running the model.

    LASEGM_DATA=... python docs/experiments/ood_distances.py [checkpoints/unet]
"""

import sys
from dataclasses import replace
from pathlib import Path

from lasegm.checkpoint import checkpoint_recipe, read_checkpoint_config
from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.ood import intensity_profile, made_up_unlike, profile_distance

ROOT = Path(__file__).resolve().parents[2]
CASES = ("la_003", "la_009", "la_019", "la_030")  # as docs/experiments/qc_ood.py


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "checkpoints" / "unet"
    config = read_checkpoint_config(folder)
    pre, _ = checkpoint_recipe(config, folder)
    reference = config["input_reference"]
    print(f"{folder}: training spread {reference['training_spread']}, flagged beyond {reference['max_distance']}")
    cases = {c.case_id: c for c in find_cases(default_data_dir())}
    for cid in CASES:
        vol = load_case(cases[cid])
        for name, image in [("as stored", vol.image), *made_up_unlike(vol.image)]:
            slices, _ = pre.prepare(image, replace(vol, image=image).affine)
            print(f"{cid} {name}: {profile_distance(intensity_profile(slices), reference['profile']):.3f}")


if __name__ == "__main__":
    main()
