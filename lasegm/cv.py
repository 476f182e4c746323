"""Cross-validation: one training per fold of a folds file (splits/cv5.json), then the out-of-fold
per-patient table (every development patient scored once, by the model that never saw it).

Each fold keeps its last epoch (no selection on the patients it is scored on), is one W&B run in the
group NAME with job_type fold-K, and the table is written as CSV/JSON and logged as a wandb.Table.
Folds may run in parallel processes (`--jobs`), which is how a GPU is kept busy.

`--final` also trains the recipe on every patient of the folds file (runs/cv/NAME/final, no validation): the
model to serve. Its checkpoint records the out-of-fold result of its recipe, which is its accuracy estimate (it
has seen every development patient, so nothing here can score it), and carries the table itself. `--reevaluate
--final` re-scores the folds with other post-processing and gives the final model that post-processing and
that table: it is served as it was scored. `--ensemble A B ...` scores the fold-wise ensemble of finished CVs
out of fold (their fold checkpoints averaged on each fold's held-out patients); with `--folds K ...`, only the
folds all of them have finished, as a table marked partial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lasegm import LasegmError
from lasegm.config import TrainConfig, recorded_recipe, recorded_run_options, same_recipe
from lasegm.metrics import PATIENT_METRICS, summarize
from lasegm.postprocess import Postprocessing
from lasegm.probability_maps import FOLDER as MAPS_FOLDER
from lasegm.probability_maps import load_probability_map, map_flip_tta, on_grid, saved_maps
from lasegm.split import FOLDS_FORMAT, read_split, split_hash
from lasegm.utils import available_cores, write_csv, write_json

OOF_FORMAT = "lasegm.oof/1"
CV_METRIC = "cv/oof_dice_3d"  # what a sweep of `lasegm cv` optimises (logged in the out-of-fold run's summary)
# set by `wandb agent` for the run it expects: the folds are runs of their own, the out-of-fold run is that one
AGENT_VARIABLES = ("WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")


FINAL = "final"  # runs/cv/NAME/final: the recipe trained on all folds


def fold_config(cfg: TrainConfig, name: str, fold: int) -> TrainConfig:
    return dataclasses.replace(cfg, fold=fold, all_folds=False, select="last", run_name=f"fold-{fold}",
                               out_dir=str(Path(cfg.out_dir) / "cv" / name), wandb_group=name)


def final_config(cfg: TrainConfig, name: str) -> TrainConfig:
    return dataclasses.replace(fold_config(cfg, name, -1), all_folds=True, run_name=FINAL)


def _flags(cfg: TrainConfig) -> list[str]:
    return [f"--{k}={v}" for k, v in cfg.to_dict().items()]


def run_cv(cfg: TrainConfig, name: str, folds: list[int] | None = None, jobs: int = 1, quiet: bool = False,
           collect_only: bool = False, reevaluate: bool = False, final: bool = False,
           ensemble: list[str] | None = None) -> dict:
    """folds: the folds to train (None: all; [] with final: only the final model, the folds being trained).
    ensemble: names of finished CVs; nothing is trained, their fold-wise ensemble is scored (ensemble_folds)."""
    split = read_split(cfg.split_file)
    if split["format"] != FOLDS_FORMAT:
        raise LasegmError(f"{cfg.split_file}: not a folds file; make one with `lasegm split --folds 5 "
                          "--split_file splits/cv5.json`")
    k = len(split["folds"])
    bad = [f for f in folds or [] if not 0 <= f < k]
    if bad:
        raise LasegmError(f"--folds {bad}: {cfg.split_file} has folds 0..{k - 1}")
    if ensemble:
        if collect_only or reevaluate or final or folds == []:
            raise LasegmError("--ensemble scores finished cross-validations; it takes no --final, --collect_only "
                              "or --reevaluate, and --folds only with the folds to score")
        return ensemble_folds(Path(cfg.out_dir) / "cv", name, ensemble, split, cfg, quiet, folds)
    folds = list(range(k)) if folds is None else folds
    cv_dir = Path(cfg.out_dir) / "cv" / name
    if reevaluate:
        result = reevaluate_folds(cv_dir, split, cfg, quiet)
        if final:  # the final model adopts the post-processing chosen out of fold, with its table
            record_cv(cv_dir / FINAL / "checkpoint", cv_dir, result)
        return result
    if final and not collect_only:  # the final model records the CV's result: every fold must exist by then,
        for f in sorted(set(range(k)) - set(folds)):  # trained with this recipe (checked before training)
            _fold_summary(cv_dir, f, split["folds"][f])
            fold_config_json = same_recipe(cfg.recipe_dict(), cv_dir / f"fold-{f}" / "checkpoint", "this command")
            _same_folds_file(fold_config_json, split_hash(cfg.split_file), cv_dir / f"fold-{f}", cfg.split_file)
    if not collect_only:
        configs = [fold_config(cfg, name, f) for f in folds] + ([final_config(cfg, name)] if final else [])
        if cfg.resume:  # trainings that finished are kept (if of this recipe); stopped ones continue; others start
            from lasegm.train import finished_run

            done = [c for c in configs if finished_run(c) is not None]
            configs = [c for c in configs if c not in done]
            if done:
                print(f"[cv {name}] --resume: {', '.join(c.run_name for c in done)} finished before, kept", flush=True)
        t0 = time.perf_counter()
        with _without_agent_run():
            if jobs > 1:
                if cfg.workers < 0:  # folds share the cores: the loader workers too
                    configs = [dataclasses.replace(c, workers=max(0, available_cores() // jobs - 1)) for c in configs]
                _build_cache(cfg, quiet)
                _run_parallel(configs, cv_dir, jobs)
            else:
                from lasegm.train import train

                for c in configs:
                    print(f"[cv {name}] {c.run_name} ({k} folds)", flush=True)
                    train(c, quiet=quiet)
        print(f"[cv {name}] {len(configs)} training(s) trained in {(time.perf_counter() - t0) / 60:.1f} min",
              flush=True)
    result = collect(cv_dir, split, cfg)
    if final:
        record_cv(cv_dir / FINAL / "checkpoint", cv_dir, result)
    return result


def record_cv(checkpoint: Path, cv_dir: Path, result: dict) -> dict:
    """Put the out-of-fold table into the final model's folder (CV_TABLE_FILE), summarised in its config.json,
    with the post-processing the table was scored with, after checking that the folds trained the same recipe
    (the same Recipe, whatever their RunOptions) on the same folds file."""
    from lasegm.checkpoint import CONFIG_FILE, CV_TABLE_FILE, cv_block, read_checkpoint_config

    config = read_checkpoint_config(checkpoint)
    if not recorded_run_options(config).get("all_folds"):
        raise LasegmError(f"{checkpoint}: not trained on all folds (`lasegm cv --final`)")
    for f in range(len(result["folds"])):
        fold_config_json = same_recipe(recorded_recipe(config), cv_dir / f"fold-{f}" / "checkpoint", str(checkpoint))
        _same_folds_file(fold_config_json, result["folds_sha256"], cv_dir / f"fold-{f}", result["folds_file"])
        if fold_config_json.get("epoch") != config.get("epoch"):  # e.g. a time limit stopped one of them early
            raise LasegmError(f"{checkpoint} is epoch {config.get('epoch')}, fold {f}'s checkpoint epoch "
                              f"{fold_config_json.get('epoch')}: not the recipe the cross-validation scored")
        if fold_config_json["model_kwargs"] != config["model_kwargs"]:  # the same network, whatever the flags say
            raise LasegmError(f"{checkpoint} is a {config['model_kwargs']} network, fold {f}'s checkpoint a "
                              f"{fold_config_json['model_kwargs']} one: not the recipe the cross-validation scored")
    if config.get("split_sha256") != result["folds_sha256"]:
        raise LasegmError(f"{checkpoint} was trained on another folds file than {result['folds_file']}")
    d = result["summary"]["dice"]
    config["postprocessing"] = result["postprocessing"]
    config["cv"] = cv_block(result, len(config["trained_on"]))
    write_json(checkpoint / CV_TABLE_FILE, result)
    write_json(checkpoint / CONFIG_FILE, config)
    print(f"[cv {result['cv']}] {checkpoint} records its recipe's out-of-fold 3D Dice {d['mean']:.4f}", flush=True)
    return config["cv"]


@contextlib.contextmanager
def _without_agent_run():
    saved = {v: os.environ.pop(v) for v in AGENT_VARIABLES if v in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _build_cache(cfg: TrainConfig, quiet: bool) -> None:
    """Every patient's slices in the cache once, on all cores, before the folds start: folds started together
    would each build it at once (on a lent 16-core GPU machine, 10 of 17 such trainings had not begun an epoch
    after 8 minutes)."""
    from lasegm.data import default_data_dir, find_cases, load_all_cached
    from lasegm.train import recipe_preprocessing

    cases = find_cases(cfg.data or default_data_dir(), cfg.data_axes)
    load_all_cached(cases, recipe_preprocessing(cfg, cases), Path(cfg.cache_dir) if cfg.cache_dir else None,
                    progress=not quiet)


def _run_parallel(configs: list[TrainConfig], cv_dir: Path, jobs: int) -> None:
    """Each fold in its own process (one CPU thread each unless set), `jobs` at a time; logs in cv_dir. A child's
    numpy (BLAS) and OpenMP get its thread count too: left at every core each, they oversubscribe the machine."""
    cv_dir.mkdir(parents=True, exist_ok=True)
    pending, running, failed = list(configs), [], []
    while pending or running:
        while pending and len(running) < jobs:
            c = pending.pop(0)
            c = dataclasses.replace(c, num_threads=c.num_threads or 1)
            log = open(cv_dir / f"{c.run_name}.log", "w")
            threads = {k: str(c.num_threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
            running.append((c, log, subprocess.Popen([sys.executable, "-m", "lasegm", "--quiet", "train", *_flags(c)],
                                                     stdout=log, stderr=subprocess.STDOUT,
                                                     env={**os.environ, **threads})))
        time.sleep(2)
        for item in list(running):
            c, log, proc = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"[cv] {c.run_name} {'finished' if proc.returncode == 0 else 'FAILED'}", flush=True)
                if proc.returncode:
                    failed.append(c.run_name)
    if failed:
        raise LasegmError(f"fold(s) {', '.join(failed)} failed; see their logs in {cv_dir}")


def collect(cv_dir: Path, split: dict, cfg: TrainConfig) -> dict:
    """Out-of-fold table from the folds' summaries and configs (their weights need not be here: a GPU run
    returns those two); every patient must be validated exactly once."""
    from lasegm.checkpoint import checkpoint_recipe, read_checkpoint_config

    rows, runs, post, recipe, folds_sha256 = [], [], {}, None, split_hash(cfg.split_file)
    for f, fold_cases in enumerate(split["folds"]):
        s = _fold_summary(cv_dir, f, fold_cases)
        rows += [{**r, "fold": f} for r in s["per_patient_val"]]
        runs.append({"fold": f, "epochs": s["epochs_run"], "training_time_s": s["training_time_s"],
                     "device": s["device"], "checkpoint": s["checkpoint"]})
        # each fold validated with its checkpoint's post-processing: one table, one post-processing
        checkpoint = cv_dir / f"fold-{f}" / "checkpoint"
        config = read_checkpoint_config(checkpoint, weights=False)
        post[f] = checkpoint_recipe(config, checkpoint)[1].to_dict()
        _same_folds_file(config, folds_sha256, cv_dir / f"fold-{f}", cfg.split_file)
        if recipe is None:  # the table records what the folds trained, not this command's flags (--collect_only)
            recipe = recorded_recipe(config) or cfg.recipe_dict()
        else:  # and one table describes one recipe
            same_recipe(recipe, checkpoint, str(cv_dir / "fold-0" / "checkpoint"))
    if any(p != post[0] for p in post.values()):
        raise LasegmError(f"{cv_dir}: the folds were validated with different post-processing ({post}); "
                          "re-score them alike with `lasegm cv --reevaluate`")
    return _write_oof(cv_dir, "oof", rows, runs, cfg, postprocessing=post[0], recipe=recipe)


def reevaluate_folds(cv_dir: Path, split: dict, cfg: TrainConfig, quiet: bool = False) -> dict:
    """The out-of-fold table again, each fold's checkpoint segmenting its own held-out patients from the
    scans with `cfg`'s post-processing (largest component, flip TTA): post-processing chosen on every
    patient without retraining (nnU-Net chooses its post-processing on out-of-fold predictions too)."""
    rows, runs, seg, _ = _score_folds([[cv_dir]], split, cfg, quiet)
    tag = f"lc-{str(seg.post.largest_component).lower()}-tta-{str(seg.post.flip_tta).lower()}"
    # the recipe is the folds' own (this command's training flags played no part)
    return _write_oof(cv_dir, f"oof-{tag}", rows, runs, cfg, postprocessing=seg.post.to_dict(),
                      recipe=recorded_recipe(seg.config) or cfg.recipe_dict())


def ensemble_folds(cv_root: Path, name: str, members: list[str], split: dict, cfg: TrainConfig,
                   quiet: bool = False, folds: list[int] | None = None) -> dict:
    """The out-of-fold table of an ensemble of recipes: for each fold, the mean probability of the member CVs'
    fold models on that fold's held-out patients, with `cfg`'s post-processing. The folds' saved probability maps
    (lasegm.probability_maps) are averaged where every member has them with that post-processing's flip TTA, so
    the fold weights need not be here; otherwise the fold checkpoints segment the scans (lasegm.predict.Ensemble).
    Every patient is still scored only by models that never saw it, so recipes and their ensembles are compared
    on the same footing (nnU-Net chooses between configurations and their ensembles the same way). The served
    ensemble is the members' final models.
    folds: score only these (the members' finished folds while the rest train): a partial table of their held-out
    patients, written as oof-folds-<K-K...>.json and marked partial, never as the ensemble's oof.json.
    A member may be several CVs joined by commas (`unet-axial,unet-coronal`): the views of one multi-view model,
    averaged first, so that the group weighs as one member, as a served ensemble weighs a multi-view checkpoint."""
    names = [n for m in members for n in m.split(",")]
    if len(names) < 2 or name in names:
        raise LasegmError(f"--ensemble needs two or more finished cross-validations other than --name {name!r}")
    # a name under runs/cv, or a CV's folder
    groups = [[Path(n) if os.sep in n else cv_root / n for n in m.split(",")] for m in members]
    folds = sorted(set(range(len(split["folds"])) if folds is None else folds))
    rows, runs, _, post = _score_folds(groups, split, cfg, quiet, folds)
    recipes = {n: recorded_recipe(_fold_config(d, folds[0])) for n, d in zip(names, (d for g in groups for d in g))}
    partial = len(folds) < len(split["folds"])
    return _write_oof(cv_root / name, oof_stem(folds, len(split["folds"])), rows, runs, cfg,
                      postprocessing=post.to_dict(), recipe={"ensemble": members, "members": recipes},
                      **({"partial": True, "folds_scored": folds} if partial else {}))


def oof_stem(folds: list[int], n_folds: int) -> str:
    """The file stem of an out-of-fold table scored on `folds` (sorted, distinct) of n_folds: oof, or
    oof-folds-K-K... for a partial one."""
    return "oof" if len(folds) == n_folds else "oof-folds-" + "-".join(map(str, folds))


def _fold_config(cv_dir: Path, f: int) -> dict:
    from lasegm.checkpoint import read_checkpoint_config

    return read_checkpoint_config(cv_dir / f"fold-{f}" / "checkpoint", weights=False)


def _score_folds(groups: list[list[Path]], split: dict, cfg: TrainConfig, quiet: bool,
                 folds: list[int] | None = None):
    """Each fold's checkpoint(s) in the CV folders of `groups` (several: their ensemble, each group weighing as one
    member, its CVs equally within it) segment that fold's held-out patients from the scans, or, for an ensemble,
    their saved probability maps are averaged -> (rows, runs, the last fold's segmenter or None, the
    post-processing scored with). folds: only these (default: all)."""
    from lasegm.data import default_data_dir, find_cases
    from lasegm.evaluate import refuse_trained_on, score_cases
    from lasegm.predict import Ensemble, load_segmenter

    cases = {c.case_id: c for c in find_cases(cfg.data or default_data_dir(), cfg.data_axes)}
    wanted = cfg.postprocessing()
    cv_dirs = [d for g in groups for d in g]
    weights = [1 / len(groups) / len(g) for g in groups for _ in g]
    rows, runs, seg = [], [], None
    for f in range(len(split["folds"])) if folds is None else folds:
        fold_cases = split["folds"][f]
        for cv_dir in cv_dirs:
            _fold_summary(cv_dir, f, fold_cases)  # the fold exists and held these patients out
        # the members' post-processing with this command's choices, as the Ensemble of the checkpoints applies it
        post = Postprocessing.from_dict(_fold_config(cv_dirs[0], f).get("postprocessing")).override(
            largest_component=wanted.largest_component, flip_tta=wanted.flip_tta)
        maps = [saved_maps(d / f"fold-{f}", fold_cases) for d in cv_dirs] if len(cv_dirs) > 1 else [None]
        if all(m is not None and map_flip_tta(m[0]) == post.flip_tta for m in maps):
            members = [SimpleNamespace(source=str(d / f"fold-{f}" / "checkpoint"),
                                       trained_on=_fold_config(d, f).get("trained_on", [])) for d in cv_dirs]
            refuse_trained_on(SimpleNamespace(members=members), fold_cases, split.get("duplicate_groups", []))
            rows += [{**row, "fold": f} for row in score_saved_maps(
                [[m[i] for m in maps] for i in range(len(fold_cases))], [cases[c] for c in fold_cases], post,
                weights)]
            runs.append({"fold": f, "probability_maps": [str(d / f"fold-{f}" / MAPS_FOLDER) for d in cv_dirs],
                         "weights": weights})
            how = "saved probability maps"
        else:
            checkpoints = [[d / f"fold-{f}" / "checkpoint" for d in g] for g in groups]
            overrides = dict(device=cfg.device, largest_component=wanted.largest_component,
                             flip_tta=wanted.flip_tta)
            if len(groups) == 1:  # one CV, or the views of one model: their plain mean
                seg = load_segmenter(checkpoints[0], **overrides)
            else:  # a group of views enters as one member, as a multi-view checkpoint does
                seg = load_segmenter([g[0] if len(g) == 1 else Ensemble(g, device=cfg.device, flip_tta=wanted.flip_tta)
                                      for g in checkpoints], **overrides)
            post = seg.post
            refuse_trained_on(seg, fold_cases, split.get("duplicate_groups", []))
            rows += [{**row, "fold": f} for row in score_cases(seg, [cases[case_id] for case_id in fold_cases])]
            runs.append({"fold": f, "checkpoint": seg.source, "backend": seg.backend})
            how = "segmented"
        if not quiet:
            names = " + ".join(",".join(d.name for d in g) for g in groups)
            print(f"[cv] fold {f} scored ({names}; {how})", flush=True)
    return rows, runs, seg, post


def score_saved_maps(paths: list[list[Path]], cases: list, post, weights: list[float] | None = None) -> list[dict]:
    """Each case scored from the mean of its saved probability maps (paths[i]: case i's maps, one per member;
    weights: the members' shares, equal by default)."""
    from lasegm.data import load_case
    from lasegm.metrics import patient_row

    rows = []
    for case, case_paths in zip(cases, paths):
        vol = load_case(case)
        t0 = time.perf_counter()
        mean = np.average([on_grid(load_probability_map(p), vol.label.shape, vol.affine, str(p)) for p in case_paths],
                          axis=0, weights=weights)
        rows.append(patient_row(case.case_id, post.binarize(mean), vol.label, vol.spacing, time.perf_counter() - t0))
    return rows


def _same_folds_file(fold_config_json: dict, folds_sha256: str, fold_dir: Path, folds_file: str) -> None:
    """The fold was trained with this folds file: the same content (its path, a run option, may differ)."""
    recorded = fold_config_json.get("split_sha256")
    if recorded is not None and recorded != folds_sha256:
        raise LasegmError(f"{fold_dir} was trained with another folds file than {folds_file} (SHA-256 "
                          f"{recorded[:12]} vs {folds_sha256[:12]})")


def _fold_summary(cv_dir: Path, f: int, fold_cases: list[str]) -> dict:
    from lasegm.resume import finished

    summary_path = cv_dir / f"fold-{f}" / "summary.json"
    if not summary_path.is_file():
        raise LasegmError(f"{summary_path}: missing; fold {f} has not been trained (run `lasegm cv` for it)")
    if not finished(cv_dir / f"fold-{f}"):  # stopped before its last epoch: not the recipe's model yet
        raise LasegmError(f"{cv_dir / f'fold-{f}'}: stopped before its last epoch; continue it with `lasegm cv "
                          f"--folds {f} --resume` and the same flags (or delete its resume folder to score it as is)")
    s = json.loads(summary_path.read_text())
    got = sorted(r["case"] for r in s["per_patient_val"])
    if got != sorted(fold_cases):
        raise LasegmError(f"{summary_path}: validated {got}, but fold {f} of the folds file is {sorted(fold_cases)}"
                          " (trained with another folds file?)")
    return s


def _write_oof(cv_dir: Path, stem: str, rows: list[dict], runs: list[dict], cfg: TrainConfig, **extra) -> dict:
    rows.sort(key=lambda r: r["case"])
    result = {"format": OOF_FORMAT, "cv": cv_dir.name,
              "folds_file": cfg.split_file, "folds_sha256": split_hash(cfg.split_file), "patients": len(rows),
              "per_patient": rows, "summary": summarize(rows, PATIENT_METRICS), "folds": runs,
              "recipe": cfg.recipe_dict(), **extra}  # extra may name the recipe the folds trained
    write_json(cv_dir / f"{stem}.json", result)
    write_csv(cv_dir / f"{stem}.csv", rows)
    d = result["summary"]["dice"]
    part = f" (partial: folds {', '.join(map(str, extra['folds_scored']))})" if extra.get("partial") else ""
    print(f"[cv {cv_dir.name}] out-of-fold 3D Dice over {len(rows)} patients{part}: {d['mean']:.4f} ± {d['std']:.4f} "
          f"(min {d['min']:.4f}); wrote {cv_dir}/{stem}.json and {stem}.csv", flush=True)
    _log_oof(result, cfg, stem)
    return result


def _log_oof(result: dict, cfg: TrainConfig, stem: str = "oof") -> None:
    from lasegm.tracking import Tracker

    tracker = Tracker(cfg.wandb_project, f"{result['cv']}-{stem}", cfg.wandb_mode, config=result["recipe"],
                      group=result["cv"], job_type=stem)
    try:
        tracker.log_table("cv/oof_per_patient", result["per_patient"])
        s = result["summary"]
        tracker.finish({CV_METRIC: s["dice"]["mean"], "cv/oof_dice_3d_std": s["dice"]["std"],
                        "cv/oof_hd95_mm": s["hd95_mm"]["mean"], "cv/oof_volume_error_ml": s["volume_error_ml"]["mean"],
                        "cv/min_patient_dice_3d": s["dice"]["min"]})
    finally:
        tracker.close()
