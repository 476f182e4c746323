"""A training's state between processes: `lasegm train --resume` (and `lasegm cv --resume`) continues a training that
a time limit, a killed process or the end of a job stopped, from its last saved epoch, as nnU-Net's
`--c` does. A 3D fold at nnU-Net's budget can take longer than a job on a shared GPU may run, so its epochs can
be spread over several jobs.

The state is a folder in the run's folder (run_dir/resume), rewritten whole after an epoch (when a time limit stops
the training, else at most every SAVE_EVERY_S seconds) and deleted when the training ends: `state.safetensors`
(the weights, the optimiser's tensors and the random generators' states, never pickled) and `state.json` (the
epoch, the history, the kept checkpoint's row, the schedule and the recipe). Every random stream a CPU training
draws from is restored (torch's, numpy's, Python's, the sampler's, the in-loader and on-device augmentations'),
so a resumed CPU training ends with the weights of the uninterrupted one (tests/test_resume.py). Loader workers and
GPU kernels draw from streams of their own: there it continues the same optimisation, not bit for bit.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from lasegm import LasegmError
from lasegm.models import cpu_state_dict
from lasegm.utils import atomic_dir, json_default

FOLDER = "resume"
SAVE_EVERY_S = 60.0  # a killed training loses at most this much (and an epoch); a time limit loses nothing
FORMAT = "lasegm.training-state/1"


def _generator_states(s) -> tuple[dict[str, torch.Tensor], dict]:
    """The states of the streams a training draws from: tensors (torch generators) and JSON (numpy, Python)."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.sampler": s.loader.sampler.generator.get_state(),
               "rng.loader": s.loader.generator.get_state()}
    if torch.cuda.is_available() and s.device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(s.device)
    if s.augment_batch is not None:
        tensors["rng.augment_batch"] = s.augment_batch.rng.get_state()
    transform = getattr(s.loader.dataset, "transform", None)
    numpy_state = np.random.get_state()
    plain = {"numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]], "python": random.getstate()}
    if transform is not None:  # albumentations' streams (lasegm.augment.reseed)
        plain["augment"] = {"numpy": transform.random_generator.bit_generator.state,
                            "python": transform.py_random.getstate()}
    return tensors, plain


def _set_generator_states(s, tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    s.loader.sampler.generator.set_state(tensors["rng.sampler"])
    s.loader.generator.set_state(tensors["rng.loader"])
    if "rng.cuda" in tensors and s.device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], s.device)
    if s.augment_batch is not None and "rng.augment_batch" in tensors:
        s.augment_batch.rng.set_state(tensors["rng.augment_batch"])
    n = plain["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    random.setstate(_as_tuple(plain["python"]))
    transform = getattr(s.loader.dataset, "transform", None)
    if transform is not None and "augment" in plain:
        transform.random_generator.bit_generator.state = plain["augment"]["numpy"]
        transform.py_random.setstate(_as_tuple(plain["augment"]["python"]))


def _as_tuple(x):
    """random.getstate() after a JSON round trip: its lists back to tuples."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list) else x


def identity(s) -> dict:
    """What must match for a state to continue this training: the recipe, the patients and the schedule's length."""
    return {"train_config": s.meta["train_config"], "split_sha256": s.meta["split_sha256"], "fold": s.meta["fold"],
            "trained_on": s.meta["trained_on"], "steps_per_epoch": len(s.loader)}


def save_state(s, epoch: int, history: list[dict], kept: dict, training_time_s: float,
               wandb_run_id: str | None = None) -> Path:
    """Write the state after `epoch` (atomically: a run stopped while writing keeps the previous epoch's), with the
    id of the W&B run logging it, which the resumed training continues."""
    from safetensors.torch import save_file

    tensors = cpu_state_dict(s.model, prefix="model.")
    opt = s.opt.state_dict()
    for pid, values in opt["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{pid}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    generators, plain = _generator_states(s)
    tensors.update(generators)
    meta = {"format": FORMAT, **identity(s), "epoch": epoch, "history": history, "kept": kept,
            "training_time_s": training_time_s, "scheduler": s.sched.state_dict(),
            "optimizer_lrs": [g["lr"] for g in opt["param_groups"]], "random": plain, "wandb_run_id": wandb_run_id}
    with atomic_dir(s.run_dir / FOLDER) as tmp:
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, default=json_default))
    return s.run_dir / FOLDER


def load_state(s) -> dict | None:
    """Put the saved state into the training `s` built (weights, optimiser, schedule, random streams); returns
    the saved epoch, history, kept row and training time, or None when the run has no state. A state of another
    recipe, other patients or another schedule is refused in one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = s.run_dir / FOLDER
    if not has_state(s.run_dir):
        return None
    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"), device="cpu")
    except (OSError, json.JSONDecodeError, SafetensorError) as e:
        raise LasegmError(f"{folder}: unreadable training state ({e}); delete it to start over") from None
    if meta.get("format") != FORMAT:
        raise LasegmError(f"{folder}: not a lasegm training state (format must be {FORMAT})")
    mine = json.loads(json.dumps(identity(s), default=json_default))
    differ = [k for k in mine if meta.get(k) != mine[k]]
    if differ:
        raise LasegmError(f"{folder}: saved by another training ({', '.join(differ)} differ); it cannot continue "
                          "this one (delete it, or resume with the flags it was started with)")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if weights.keys() != s.model.state_dict().keys():  # e.g. saved before lasegm dropped the blocks never run
        raise LasegmError(f"{folder}: its weights do not fit this model (saved by an older lasegm?); delete it to "
                          "start over")
    s.model.load_state_dict(weights)
    opt = s.opt.state_dict()
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for group, lr in zip(opt["param_groups"], meta["optimizer_lrs"]):
        group["lr"] = lr
    s.opt.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
    s.sched.load_state_dict(meta["scheduler"])
    _set_generator_states(s, tensors, meta["random"])
    return meta


def saved_wandb_run_id(run_dir: Path) -> str | None:
    """The W&B run a saved state was logged to (None: no state, or it was not logged)."""
    try:
        return json.loads((Path(run_dir) / FOLDER / "state.json").read_text()).get("wandb_run_id")
    except (OSError, json.JSONDecodeError):
        return None


def clear_state(run_dir: Path) -> None:
    shutil.rmtree(Path(run_dir) / FOLDER, ignore_errors=True)


def finished(run_dir: Path) -> bool:
    """The run trained to its last epoch: its summary is written and no state is left to continue from."""
    return (Path(run_dir) / "summary.json").is_file() and not has_state(run_dir)


def has_state(run_dir: Path) -> bool:
    """A state to continue from (both files: a record copied without its weights is none)."""
    folder = Path(run_dir) / FOLDER
    return (folder / "state.json").is_file() and (folder / "state.safetensors").is_file()
