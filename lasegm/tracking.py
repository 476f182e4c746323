"""Weights & Biases for training runs: offline by default, never a login, one small surface for train.py.

The same curves are always written locally (history.csv/json, curves.png); W&B is a mirror of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def wandb_mode(requested: str = "") -> str:
    """--wandb_mode, else $WANDB_MODE, else offline; online without an API key falls back to offline."""
    mode = requested or os.environ.get("WANDB_MODE") or "offline"
    if mode == "online" and not (os.environ.get("WANDB_API_KEY") or _has_netrc_login()):
        print("W&B: no API key found, logging offline (upload later with `wandb sync wandb/offline-run-*`)")
        mode = "offline"
    return mode


def _has_netrc_login() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def metric_keys(row: dict) -> dict:
    """History row -> W&B keys: train_loss -> train/loss, val_dice_3d -> val/dice_3d (the sweep metric)."""
    return {f"train/{k[6:]}" if k.startswith("train_") else f"val/{k[4:]}" if k.startswith("val_") else k: v
            for k, v in row.items()}


class Tracker:
    """One W&B run: config, per-epoch metrics with validation overlays, summary, curves, the model artifact."""

    def __init__(self, project: str, name: str, mode: str, config: dict, group: str | None = None,
                 job_type: str | None = None, run_id: str | None = None):
        """run_id: continue that run (a resumed training), else start a new one."""
        self.run = None
        mode = wandb_mode(mode)
        if mode == "disabled":  # nothing to log: not even import wandb (slow, and optional on a GPU box)
            return
        import wandb

        # wandb otherwise fixes ./wandb at its first init in the process; each run goes under the current folder
        self.run = wandb.init(project=project, name=name or None, mode=mode, group=group,
                              job_type=job_type, dir=os.environ.get("WANDB_DIR") or os.getcwd(), config=config,
                              id=run_id, resume="allow" if run_id else None, settings=wandb.Settings(silent=True))
        self.run.define_metric("val/dice_3d", summary="max")  # the sweeps' metric: best epoch, not last

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log_epoch(self, row: dict, overlays: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """overlays: (caption, image slice, ground truth, prediction) at model resolution."""
        if self.run is None:
            return
        import wandb

        from lasegm.viz import to_uint8

        images = [wandb.Image(to_uint8(image.astype(np.float32)), caption=caption, masks={
            "prediction": {"mask_data": pred, "class_labels": {1: "atrium"}},
            "ground_truth": {"mask_data": truth, "class_labels": {1: "atrium"}}})
            for caption, image, truth, pred in overlays]
        self.run.log({**metric_keys(row), **({"val/overlays": images} if images else {})}, step=row["epoch"])

    def log_table(self, key: str, rows: list[dict]) -> None:
        if self.run is None:
            return
        import wandb

        if rows:
            columns = list(rows[0])
            self.run.log({key: wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})

    def finish(self, summary: dict, curves: Path | None = None, checkpoint: Path | None = None,
               artifact_name: str = "", metadata: dict | None = None) -> None:
        """The run's summary, and its curves and model artifact when it has them."""
        if self.run is None:
            return
        import wandb

        self.run.summary.update(summary)
        if curves is not None:
            self.run.log({"curves": wandb.Image(str(curves))})
        if checkpoint is not None and artifact_name:
            artifact = wandb.Artifact(artifact_name, type="model", metadata=metadata)
            artifact.add_dir(str(checkpoint))
            self.run.log_artifact(artifact)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
