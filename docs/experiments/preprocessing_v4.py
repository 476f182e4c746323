"""Which checkpoints recorded with preprocessing version 3 see the same arrays under version 4 (which also resamples
the slice axis to the model's pixel spacing), and converting their records (research_log.md, 2026-12-06, "The slice
axis resampled"). For every model folder and every case of the data folder: the kept slices, the model slices
version 4 makes of them, and whether prepare() and prepare_label() give identical arrays. --write rewrites the
config.json of each model folder whose arrays are identical on every case (version 4, `converted_from` saying
so) and the preprocessing its model.onnx records; the weights are untouched.

    python docs/experiments/preprocessing_v4.py checkpoints/unet --data $LASEGM_DATA [--write]
"""

import argparse
import json
import sys

import numpy as np

from lasegm.checkpoint import model_folders, read_checkpoint_config
from lasegm.data import find_cases, load_case
from lasegm.preprocess import RECIPES, Preprocessing
from lasegm.utils import atomic_path, write_json

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("checkpoints", nargs="+")
parser.add_argument("--data", required=True)
parser.add_argument("--write", action="store_true")
args = parser.parse_args()

cases = find_cases(args.data)
volumes = [load_case(c) for c in cases]
failed = False
for checkpoint in args.checkpoints:
    for folder in model_folders(checkpoint):
        config = read_checkpoint_config(folder)
        record = config["preprocessing"]
        if record["version"] != 3:
            print(f"{folder}: preprocessing version {record['version']}, not 3: left as it is")
            continue
        v3 = Preprocessing.from_dict(record)
        v4 = Preprocessing.from_dict({**record, "version": 4, "normalization": RECIPES[4][0],
                                      "resize": RECIPES[4][1]})
        same = True
        for case, vol in zip(cases, volumes):
            (a3, g3), (a4, g4) = v3.prepare(vol.image, vol.affine), v4.prepare(vol.image, vol.affine)
            identical = a3.shape == a4.shape and np.array_equal(a3, a4) and \
                np.array_equal(v3.prepare_label(vol.label, g3), v4.prepare_label(vol.label, g4))
            same &= identical
            print(f"{folder} {v4.orientation} {case.case_id}: slice spacing {g4.spacing[2]:.4f} mm, "
                  f"{g4.kept} kept slices -> {g4.depth} model slices: "
                  f"{'identical' if identical else 'DIFFERENT'}")
        if not same:
            failed = True
            print(f"{folder}: version 4 differs from version 3 on this data: not converted", file=sys.stderr)
        elif args.write:
            import onnx

            config["preprocessing"] = v4.to_dict()
            config["converted_from"] = {"preprocessing_version": 3, "why": "the same arrays on every case of "
                                        f"{len(cases)} (docs/experiments/preprocessing_v4.py)"}
            write_json(folder / "config.json", config)
            onnx_path = folder / "model.onnx"
            if onnx_path.is_file():
                model = onnx.load(str(onnx_path), load_external_data=False)  # weights: in model.safetensors
                for prop in model.metadata_props:
                    if prop.key == "preprocessing":
                        prop.value = json.dumps(config["preprocessing"], sort_keys=True)
                with atomic_path(onnx_path) as tmp:
                    onnx.save(model, str(tmp))
            print(f"{folder}: converted to preprocessing version 4")
sys.exit(1 if failed else 0)
