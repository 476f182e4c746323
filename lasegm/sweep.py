"""Run a W&B sweep YAML locally, with W&B's own sweep engine (the `sweeps` package).

The same YAML drives `wandb sweep` + `wandb agent` when a W&B server is at hand; here,
parameters are proposed by `sweeps.next_run` exactly as the W&B server would propose them,
early termination is decided by `sweeps.stop_runs`, and trials run in-process with W&B offline.
"""

from __future__ import annotations

import dataclasses
import random
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

from lasegm import LasegmError
from lasegm.config import TrainConfig, str2bool

with warnings.catch_warnings():  # sweeps 0.2 still uses pydantic-1 config names
    warnings.simplefilter("ignore")
    from sweeps.config.cfg import validator

    import sweeps

FLAGS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # `lasegm train`'s flags and their defaults


def load_sweep(path: str | Path) -> dict:
    """Parse and validate a sweep YAML against W&B's sweep schema and lasegm's train flags."""
    path = Path(path)
    if not path.is_file():
        raise LasegmError(f"{path}: sweep file not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LasegmError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise LasegmError(f"{path}: a sweep file must be a mapping with method, metric and parameters")
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}"
                for e in validator.iter_errors(config)]
    if not problems:
        try:
            problems = sweeps.schema_violations_from_proposed_config(config)
        except ValueError as e:
            problems = [str(e)]
    if problems:
        raise LasegmError(f"{path}: invalid sweep: {'; '.join(dict.fromkeys(problems))}")
    for name in config.get("parameters", {}):
        if name not in FLAGS:
            raise LasegmError(f"{path}: parameters.{name}: not a `lasegm train` flag")
    if "metric" not in config:
        raise LasegmError(f"{path}: metric: missing (e.g. name: val/dice_3d, goal: maximize)")
    return config


def _coerce(name: str, value):
    """Values the engine proposes (numpy scalars, strings from YAML) -> the config field's type."""
    kind = type(FLAGS[name])
    if kind is bool:
        return str2bool(str(value))
    return kind(value.item() if hasattr(value, "item") else value)


def _sweep_run(name, state, params, history, metric, goal):
    rows = [{**r, metric: r.get(metric)} for r in history]
    pick = max if goal == "maximize" else min  # summary = best epoch, as define_metric(summary=max) logs it
    summary = {metric: pick(r[metric] for r in rows)} if rows else {}
    # the aliases (W&B's API names) work with pydantic 1 and 2 alike; the field names do not
    return sweeps.SweepRun(name=name, state=state, config={k: {"value": v} for k, v in params.items()},
                           sampledHistory=rows, summaryMetrics=summary)


def is_cross_validated(config: dict) -> bool:
    """A sweep whose command runs `lasegm cv` scores each trial by cross-validation."""
    command = [str(c) for c in config.get("command", [])]
    return "lasegm" in command and command[command.index("lasegm") + 1:][:1] == ["cv"]


def run_local_sweep(sweep_yaml, count: int, fixed: list[str] = (), out_dir="runs/sweeps", quiet=False,
                    jobs: int = 1) -> list[dict]:
    from lasegm.analyze import format_table
    from lasegm.cv import CV_METRIC, run_cv
    from lasegm.tracking import metric_keys as wandb_metrics
    from lasegm.train import train
    from lasegm.utils import write_csv, write_json

    config = load_sweep(sweep_yaml)
    metric, goal = config["metric"]["name"], config["metric"].get("goal", "minimize")
    cross_validated = is_cross_validated(config)
    if cross_validated and metric != CV_METRIC:
        raise LasegmError(f"{sweep_yaml}: a sweep of `lasegm cv` is scored by metric {CV_METRIC}, not {metric}")
    fixed_params = {}
    for item in fixed:
        key, sep, value = item.partition("=")
        if not sep or key not in FLAGS:
            raise LasegmError(f"--set {item}: expected KEY=VALUE with KEY a `lasegm train` flag")
        fixed_params[key] = _coerce(key, value)
        spec = config.get("parameters", {}).get(key)
        if spec is not None and "value" not in spec:
            raise LasegmError(f"--set {item}: {key} is searched by this sweep; it cannot be fixed")
        config.get("parameters", {}).pop(key, None)  # a fixed value from --set wins over the YAML's
    name = Path(sweep_yaml).stem
    out = Path(out_dir) / name
    done: list[sweeps.SweepRun] = []
    results: list[dict] = []
    for i in range(1, count + 1):
        proposal = sweeps.next_run(config, done, validate=False)
        if proposal is None:
            print(f"the {config['method']} search space is exhausted after {i - 1} trials")
            break
        params = {k: _coerce(k, v["value"]) for k, v in proposal.config.items()}
        trial = f"trial-{i:02d}"
        print(f"[{name} {trial}] {params}", flush=True)
        cfg = TrainConfig(**{**fixed_params, **params, "out_dir": str(out), "run_name": trial})

        def should_stop(history, trial=trial, params=params):
            curves = [wandb_metrics(h) for h in history]
            running = _sweep_run(trial, sweeps.RunState.running, params, curves, metric, goal)
            return trial in {r.name for r in sweeps.stop_runs(config, done + [running], validate=False)}

        t0 = time.perf_counter()
        # train() seeds Python's and numpy's RNGs; the engine draws from them too, so keep its stream
        rng_state = random.getstate(), np.random.get_state()
        try:
            if cross_validated:  # the trial's metric is the out-of-fold mean over every patient
                oof = run_cv(cfg, name=f"{name}-{trial}", jobs=jobs, quiet=quiet)
                history, epochs = [{CV_METRIC: oof["summary"]["dice"]["mean"]}], cfg.epochs
            else:
                summary = train(cfg, quiet=quiet, should_stop=should_stop if "early_terminate" in config else None)
                history, epochs = [wandb_metrics(h) for h in summary["history"]], summary["epochs_run"]
            state = sweeps.RunState.finished
            status = "stopped early" if epochs < cfg.epochs else "finished"
        except Exception as e:  # like `wandb agent`: a crashed trial is recorded, the sweep goes on
            error = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            print(f"[{name} {trial}] failed: {error}", flush=True)
            state, history, epochs, status = sweeps.RunState.crashed, [], 0, f"failed: {error}"
        finally:
            random.setstate(rng_state[0])
            np.random.set_state(rng_state[1])
        done.append(_sweep_run(trial, state, params, history, metric, goal))
        results.append({"trial": trial, **params, metric: done[-1].summary_metrics.get(metric), "epochs": epochs,
                        "status": status, "minutes": round((time.perf_counter() - t0) / 60, 2),
                        "run_dir": str(out / trial)})
    sign = -1 if goal == "maximize" else 1  # failed trials (no metric) rank last
    ranked = sorted(results, key=lambda r: (r[metric] is None, sign * (r[metric] or 0)))
    for rank, r in enumerate(ranked, 1):
        r["rank"] = rank
    if ranked:
        write_json(out / "ranking.json", {"sweep": str(sweep_yaml), "metric": metric, "goal": goal, "trials": ranked})
        write_csv(out / "ranking.csv", ranked)
        cols = ["rank", "trial", *[k for k in ranked[0] if k not in ("rank", "trial", "run_dir")]]
        print(f"\n{name}: {len(ranked)} trials ranked by {metric} ({goal})\n" + format_table(ranked, cols))
        print(f"wrote {out}/ranking.json and ranking.csv")
    return ranked
