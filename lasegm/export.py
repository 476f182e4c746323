"""`lasegm export`: publish a run's checkpoint where it is served (e.g. checkpoints/unet), with its model.onnx.

Its own module, above both lasegm.models (load the checkpoint) and lasegm.onnx_export (write model.onnx), so
neither of those imports the other's caller: the import graph has no cycle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from lasegm import LasegmError
from lasegm.checkpoint import CONFIG_FILE, CV_TABLE_FILE, WEIGHTS_FILE, checkpoint_recipe
from lasegm.models import load_checkpoint
from lasegm.onnx_export import export_onnx
from lasegm.utils import atomic_dir


def export_checkpoint(src: str | Path, dest: str | Path, postprocessing: dict | None = None,
                      onnx: bool = True) -> Path:
    """Copy a run's checkpoint to where it is served (e.g. checkpoints/unet), after checking that it
    loads, optionally recording post-processing chosen on validation, with its model.onnx (onnx=True) and its
    cross-validation table. Written atomically."""
    src, dest = Path(src), Path(dest)
    _, config = load_checkpoint(src)  # refuse to publish a checkpoint that does not load
    _, post = checkpoint_recipe(config, src / CONFIG_FILE)
    config["postprocessing"] = post.override(**(postprocessing or {})).to_dict()
    table = src / CV_TABLE_FILE
    scored_with = json.loads(table.read_text()).get("postprocessing") if table.is_file() else None
    if scored_with and scored_with != config["postprocessing"]:  # its recorded accuracy would not describe it
        name = config.get("cv", {}).get("name", "NAME")
        raise LasegmError(f"{src}'s recorded cross-validation ({CV_TABLE_FILE}) was scored with post-processing "
                          f"{scored_with}, not {config['postprocessing']}; re-score the folds with it first: "
                          f"lasegm cv --name {name} --reevaluate --final <post-processing flags>")
    with atomic_dir(dest) as tmp:
        shutil.copy2(src / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        if table.is_file():
            shutil.copy2(table, tmp / CV_TABLE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if onnx:
            export_onnx(tmp)
    return dest
