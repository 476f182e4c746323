"""`lasegm export`: publish a run's checkpoint where it is served (e.g. checkpoints/unet), with its model.onnx.

Its own module, above both lasegm.models (load the checkpoint) and lasegm.onnx_export (write model.onnx), so
neither of those imports the other's caller: the import graph has no cycle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import save_file

from lasegm import LasegmError
from lasegm.checkpoint import (CHECKPOINT_FORMAT, CONFIG_FILE, CV_TABLE_FILE, ONNX_FILE, WEIGHTS_FILE,
                               checkpoint_recipe, cv_block, read_checkpoint_config, read_views)
from lasegm.models import cpu_state_dict, holds_dropped_weights, load_checkpoint
from lasegm.onnx_export import export_onnx, onnx_matches
from lasegm.postprocess import Postprocessing, unsure_limit
from lasegm.preprocess import plane_of
from lasegm.utils import atomic_dir, sha256_file


def export_checkpoint(src: str | Path, dest: str | Path, postprocessing: dict | None = None,
                      onnx: bool = True, unsure: float | None = None) -> Path:
    """Copy a run's checkpoint to where it is served (e.g. checkpoints/unet), after checking that it
    loads, optionally recording post-processing chosen on validation and the quality check's unsure-voxel limit
    (lasegm.postprocess), with its model.onnx (onnx=True) and its cross-validation table. Written atomically.
    Weights of blocks the model never runs, which checkpoints saved before lasegm dropped them hold, are left out."""
    src, dest = Path(src), Path(dest)
    views = read_views(src)
    if views:  # a multi-view checkpoint: its views and its own table
        table = src / CV_TABLE_FILE
        return export_views(views[1], dest, postprocessing, table if table.is_file() else None, onnx,
                            Postprocessing.from_dict(views[0].get("postprocessing")),
                            unsure if unsure is not None else unsure_limit(views[0], str(src / CONFIG_FILE)))
    model, config = load_checkpoint(src)  # refuse to publish a checkpoint that does not load
    _, post = checkpoint_recipe(config, src / CONFIG_FILE)
    config["postprocessing"] = post.override(**(postprocessing or {})).to_dict()
    _record_unsure_limit(config, unsure, src)
    table = src / CV_TABLE_FILE
    if table.is_file():
        _scored_with(json.loads(table.read_text()), config["postprocessing"], src, config.get("cv", {}).get("name"))
    with atomic_dir(dest) as tmp:
        if holds_dropped_weights(src / WEIGHTS_FILE, model):  # saved before lasegm dropped them: published without
            save_file(cpu_state_dict(model, half=config.get("weights_dtype") == "float16"), str(tmp / WEIGHTS_FILE))
            config.update(weights_sha256=sha256_file(tmp / WEIGHTS_FILE),
                          parameters=sum(p.numel() for p in model.parameters()))
        else:
            shutil.copy2(src / WEIGHTS_FILE, tmp / WEIGHTS_FILE)
        if table.is_file():
            shutil.copy2(table, tmp / CV_TABLE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if onnx and onnx_matches(src, config):  # exported from these very weights: the same file
            shutil.copy2(src / ONNX_FILE, tmp / ONNX_FILE)
        elif onnx:
            export_onnx(tmp)
    return dest


def _scored_with(table: dict, postprocessing: dict, src, name: str | None) -> None:
    """A checkpoint's out-of-fold table must have been scored with the post-processing it serves."""
    scored_with = table.get("postprocessing")
    if scored_with and scored_with != postprocessing:  # its recorded accuracy would not describe it
        raise LasegmError(f"{src}'s cross-validation table was scored with post-processing {scored_with}, not "
                          f"{postprocessing}; re-score the folds with it first: lasegm cv --name {name or 'NAME'} "
                          "--reevaluate <post-processing flags>")


def _record_unsure_limit(config: dict, limit: float | None, source) -> None:
    if limit is not None:
        config["quality"] = {"unsure_limit": float(limit)}
        unsure_limit(config, f"{source}: --unsure_limit")  # refused in one line unless a number > 0


def export_views(checkpoints, dest: str | Path, postprocessing: dict | None = None, cv_table: str | Path | None = None,
                 onnx: bool = True, recorded: Postprocessing | None = None, unsure: float | None = None) -> Path:
    """Publish models of one architecture that slice along different planes as one multi-view checkpoint
    (lasegm.checkpoint): each view exported into the subfolder named by its plane, served as the mean of their
    probabilities. cv_table: the views' out-of-fold table (`lasegm cv --ensemble`), scored with the folder's
    post-processing (by default the table's). Written atomically."""
    dest, folders = Path(dest), [Path(c) for c in checkpoints]
    # the records only: export_checkpoint loads each view below, inside the atomic folder (one that does not load
    # leaves nothing written)
    configs = [read_checkpoint_config(f) for f in folders]
    planes = [plane_of(checkpoint_recipe(c, f / CONFIG_FILE)[0].orientation) for c, f in zip(configs, folders)]
    if len(set(planes)) != len(planes) or len({c["arch"] for c in configs}) != 1:
        raise LasegmError("a multi-view checkpoint needs one architecture slicing along distinct planes, got "
                          + ", ".join(f"{f} ({c['arch']}, {p})" for f, c, p in zip(folders, configs, planes)))
    table = json.loads(Path(cv_table).read_text()) if cv_table else None
    if recorded is None and table:
        recorded = Postprocessing.from_dict(table.get("postprocessing"), str(cv_table))
    if recorded is None:  # as an ensemble of the views would post-process
        posts = [checkpoint_recipe(c, f / CONFIG_FILE)[1] for c, f in zip(configs, folders)]
        recorded = Postprocessing(largest_component=all(p.largest_component for p in posts),
                                  flip_tta=all(p.flip_tta for p in posts))
    post = recorded.override(**(postprocessing or {})).to_dict()
    trained_on = sorted(set().union(*(c.get("trained_on", []) for c in configs)))
    config = {"format": CHECKPOINT_FORMAT, "arch": configs[0]["arch"], "views": planes, "postprocessing": post,
              "trained_on": trained_on, "view_cvs": {p: c.get("cv", {}).get("name") for p, c in zip(planes, configs)}}
    _record_unsure_limit(config, unsure, dest)
    if table:
        if table.get("partial"):  # some folds' patients only: not the recipe's accuracy on the development set
            raise LasegmError(f"{cv_table} scores folds {table.get('folds_scored')} only; a served checkpoint "
                              "carries the table of every fold (`lasegm cv --ensemble` without --folds)")
        _scored_with(table, post, cv_table, table.get("cv"))
        members = table.get("recipe", {}).get("ensemble")
        named = sorted(n for n in config["view_cvs"].values() if n)
        if members is not None and (len(members) != len(folders) or not set(named) <= set(members)):
            raise LasegmError(f"{cv_table} is the table of {members}, not of these views ({named or 'unrecorded'})")
        config["cv"] = cv_block(table, len(trained_on))
    with atomic_dir(dest) as tmp:
        for folder, plane in zip(folders, planes):
            export_checkpoint(folder, tmp / plane, onnx=onnx)
        if table:
            shutil.copy2(cv_table, tmp / CV_TABLE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return dest
