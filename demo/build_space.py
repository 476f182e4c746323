"""Assemble a Hugging Face Space folder: app, lasegm package, checkpoints, examples, requirements.

    python demo/build_space.py --out dist/space
    cd dist/space && git init && git remote add space https://huggingface.co/spaces/<user>/<name> ...
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lasegm.models import SERVED  # noqa: E402
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
PSPNet, FPN and U-Net checkpoints of [lasegm](https://github.com/). Upload a NIfTI scan or pick an
example patient. Research demo, not for clinical use. Example data: CC-BY-SA 4.0, Antonelli et al. 2022.
"""
RUNTIME_PREFIXES = ("torch", "torchvision", "segmentation-models-pytorch", "albumentations", "nibabel",
                    "safetensors", "numpy", "scipy", "scikit-image", "matplotlib", "imageio", "tqdm", "pyyaml", "trimesh")


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
    reqs = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    keep = [r for r in reqs if r and r.lower().startswith(RUNTIME_PREFIXES)]
    (out / "requirements.txt").write_text("\n".join(keep) + "\n")  # gradio comes with the Space's SDK
    gradio = next(r.split("==")[1] for r in reqs if r.startswith("gradio=="))
    (out / "README.md").write_text(FRONT_MATTER.format(gradio=gradio))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="dist/space")
    out = build(Path(p.parse_args().out))
    print(f"Space assembled in {out}: push that folder to a Hugging Face Space (sdk: gradio)")


if __name__ == "__main__":
    main()
