"""Assemble a Hugging Face Space folder: app, lasegm package, checkpoints, examples, requirements.

    python demo/build_space.py --out dist/space
    cd dist/space && git init && git remote add space https://huggingface.co/spaces/<user>/<name> ...
"""

from __future__ import annotations

import argparse
import re
import shutil
import tomllib
from pathlib import Path

from lasegm.checkpoint import SERVED

ROOT = Path(__file__).resolve().parents[1]
FRONT_MATTER = """---
title: lasegm - left atrium segmentation
emoji: 🫀
colorFrom: red
colorTo: gray
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
license: cc-by-sa-4.0
short_description: PSPNet, FPN and U-Net segment the left atrium in cardiac MRI
---

# lasegm demo

Left-atrium segmentation of cardiac MRI (Medical Segmentation Decathlon Task02_Heart) with the best
PSPNet, FPN and U-Net checkpoints of [lasegm](https://github.com/). Upload a NIfTI scan or a .zip of one DICOM
series, or pick an example patient. Research demo, not for clinical use. Example data: CC-BY-SA 4.0, Antonelli
et al. 2022.
"""
# The Space runs the lasegm folder copied beside app.py, not an installed package: its requirements are lasegm's own
# (pyproject.toml's dependencies), PyTorch for a GPU Space ([torch]) and the demo's ([demo]; gradio itself comes with
# the Space's SDK), at the versions requirements.txt pins.
SPACE_EXTRAS = ("torch", "demo")


def space_requirements() -> list[str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if version:
            pins[_normalise(name)] = f"{name}=={version}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in SPACE_EXTRAS for s in project["optional-dependencies"][extra]]
    needed = []
    for spec in specs:
        name = re.match(r"[A-Za-z0-9._-]+", spec).group(0)
        if _normalise(name) not in ("lasegm", "gradio"):
            needed.append(pins.get(_normalise(name), spec))
    return sorted(set(needed), key=str.lower)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build(out: Path) -> Path:
    missing = [a for a in SERVED if not (ROOT / "checkpoints" / a / "config.json").exists()]
    if missing:
        raise SystemExit(f"checkpoints missing for {missing}: train them first (see research_log.md)")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(ROOT / "demo" / "app.py", out / "app.py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "lasegm", out / "lasegm", ignore=ignore)
    shutil.copytree(ROOT / "checkpoints", out / "checkpoints", ignore=ignore)
    shutil.copytree(ROOT / "demo" / "examples", out / "examples", ignore=ignore)
    (out / "requirements.txt").write_text("\n".join(space_requirements()) + "\n")
    reqs = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    gradio = next(r.split("==")[1] for r in reqs if r.startswith("gradio=="))
    (out / "README.md").write_text(FRONT_MATTER.format(gradio=gradio) + model_card())
    return out


def model_card() -> str:
    """What a Space visitor should know: data, licence, measured accuracy and how, intended use, limits."""
    import json

    from lasegm.checkpoint import model_folders, read_checkpoint_config, read_served_config, slicing_planes

    rows = []
    for arch in SERVED:
        config = read_served_config(ROOT / "checkpoints" / arch)
        encoder = read_checkpoint_config(model_folders(ROOT / "checkpoints" / arch)[0])["encoder"]  # each view's
        planes = " + ".join(slicing_planes(ROOT / "checkpoints" / arch))
        cv = config.get("cv", {})
        oof = f"{cv['oof_dice_3d_mean']:.3f} ± {cv['oof_dice_3d_std']:.3f}" if cv else "–"
        test_file = ROOT / "checkpoints" / arch / "evaluation-test" / "evaluation.json"
        if test_file.is_file():  # only a model trained on part of the patients has a held-out test
            test = json.loads(test_file.read_text())["summary"]
            held_out = (f"{test['dice']['mean']:.3f} ± {test['dice']['std']:.3f} (n={test['dice']['n']}) | "
                        f"{test['hd95_mm']['mean']:.1f}")
        else:
            held_out = "– (none left) | –"
        rows.append(f"| {arch} | {encoder} | {planes} | {len(config['trained_on'])} | {oof} | {held_out} |")
    return """
## Model card

**Data.** Medical Segmentation Decathlon, Task02_Heart: 3D mono-modal cardiac MRI (King's College London),
label = left atrium; 20 labelled scans in the public release, of which 16 were used here. Licence of the data
and of the example scans in this Space: **CC-BY-SA 4.0** (Antonelli et al., Nature Communications 13, 4128, 2022;
Simpson et al., arXiv:1902.09063).

**Models.** 2D PSPNet, FPN and U-Net (segmentation-models-pytorch) on 2.5D input (each slice with its two
neighbours), a 200 mm field of view, intensities normalised per scan; a model of several slicing planes averages
the probabilities of one network per plane (view aggregation); the mask is mapped back onto the uploaded scan's own
voxel grid (any orientation, field of view or in-plane spacing).

**Accuracy, and how it was measured.** Mean per-patient 3D Dice. *Cross-validation*: 5 patient-level folds of
the 16 development patients, each patient scored by the model of the fold that held it out (the recipe of the
served model; per patient in `checkpoints/<model>/cv-oof.json`). *Test*: a served model trained on part of the
patients, scored once on 4 held-out ones; a model trained on all 16 has no development patient left to test on,
and its recipe's cross-validation is its estimate.

| model | encoder | slicing planes | trained on (patients) | 5-fold cross-validation | held-out test | test HD95 (mm) |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + """

For scale: nnU-Net reports 0.910 (2D) and 0.933 (3D) on this task.

**Intended use.** Research and teaching: looking at what 2D networks do on cardiac MRI, comparing models,
checking the pipeline on your own scans. **Not for clinical use**: not a medical device, not validated for
diagnosis, treatment or any decision about a patient.

**Limitations.** Trained on 16 patients from one centre, one MRI sequence (3D balanced SSFP-like, 1.25 mm in-plane)
and adult hearts; other sequences, scanners, contrast, pathology or children may fail. The field of view is the
central 200 mm of each slice: an atrium outside it is missed. Scans far coarser than 1.25 mm in-plane lose
boundary detail. An empty mask or a volume outside 10-400 mL is flagged as implausible, not corrected.
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="dist/space")
    out = build(Path(p.parse_args().out))
    print(f"Space assembled in {out}: push that folder to a Hugging Face Space (sdk: gradio)")


if __name__ == "__main__":
    main()
