"""Record in a checkpoint what its training scans look like (lasegm.ood's `input_reference`, which `lasegm train`
writes for every new model): for checkpoints trained before it existed, from the patients they trained on, prepared
with their own preprocessing. Prints each training scan's distance from the mean profile of the others.

    LASEGM_DATA=... python docs/experiments/input_reference.py checkpoints/pspnet checkpoints/fpn checkpoints/unet
"""

import argparse
import json

from lasegm.checkpoint import CONFIG_FILE, checkpoint_recipe, model_folders, read_checkpoint_config
from lasegm.data import default_data_dir, find_cases, load_case
from lasegm.ood import intensity_profile, make_reference, profile_distance
from lasegm.utils import write_json


def record(folder, cases) -> None:
    config = read_checkpoint_config(folder)
    pre, _ = checkpoint_recipe(config, folder)
    trained = [cases[c] for c in config["trained_on"]]
    volumes = [load_case(c) for c in trained]
    profiles = [intensity_profile(pre.prepare(v.image, v.affine)[0]) for v in volumes]
    reference = make_reference(profiles, [v.spacing for v in volumes])
    for k, (case, profile) in enumerate(zip(trained, profiles)):
        others = make_reference(profiles[:k] + profiles[k + 1:], [1.0])["profile"]
        print(f"{folder} {case.case_id}: distance from the others' mean {profile_distance(profile, others):.3f}")
    print(f"{folder}: spread {reference['training_spread']}, flagged beyond {reference['max_distance']}")
    raw = json.loads((folder / CONFIG_FILE).read_text())  # as stored (a format-1 record stays format 1)
    write_json(folder / CONFIG_FILE, {**raw, "input_reference": reference})


def main() -> None:
    from pathlib import Path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args()
    cases = {c.case_id: c for c in find_cases(default_data_dir())}
    for folder in args.checkpoints:
        for f in model_folders(folder):  # a multi-view checkpoint: each view
            record(f, cases)


if __name__ == "__main__":
    main()
