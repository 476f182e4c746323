"""Fold ensemble or one model on every patient? A nested comparison on the development patients.

The served models are one network trained on all 16 patients; nnU-Net serves the ensemble of its five fold models,
each trained on 4/5 of them. Neither can be scored on patients it did not see, so the question is asked one level
down, where both can: for each outer fold K of the cross-validation CV (a `lasegm cv` folder: its folds file, its
recipe and its out-of-fold table),
  - one model on all four other folds: the CV's own fold-K model (its out-of-fold Dice, already measured), against
  - the ensemble of four models, each trained on three of those four folds (leave folds K and J out, J != K):
    the fold ensemble one level down. The model leaving K and J out serves outer folds K and J both, so the
    five outer folds need 10 trainings, each the CV's recipe (read from its fold-0 config.json) on 3/5 of the
    patients, where the CV's fold models had 4/5.
Each patient is scored once, by the ensemble of the four models that never saw it (`lasegm evaluate` refuses a
patient a member trained on), and the 16 are paired with the CV's out-of-fold table and with nnU-Net's.

    python docs/experiments/fold_ensemble.py --cv docs/cv/2026-12-05-cpu/records/unet-coronal --jobs 3
        [--out runs/fold-ensemble] [--folds_file splits/cv5.json] [--threads 1] [--tiny]

Trainings run --jobs at a time (one --threads each), continue when stopped (`--resume`), and are skipped when
finished; --tiny trains each for one short epoch (a dry run). Logs: OUT/logs/. Results: OUT/eval/outer-K/,
OUT/compare-*.json. Run from the repository root with LASEGM_DATA set; any CUDA machine runs it as it is.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lasegm.resume import finished
from lasegm.split import nested_folds, outer_split, read_split, save_split, split_hash

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--cv", required=True, help="a lasegm cv folder (fold-K/checkpoint/config.json, oof.json)")
p.add_argument("--folds_file", default="splits/cv5.json")
p.add_argument("--out", default="runs/fold-ensemble")
p.add_argument("--jobs", type=int, default=2)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--anchor", default="docs/anchors/nnunet_task02_oof_dice.csv")
p.add_argument("--tiny", action="store_true", help="one short epoch per training: a dry run")
args = p.parse_args()

cv, out = Path(args.cv), Path(args.out)
folds = read_split(args.folds_file)
k = len(folds["folds"])
config = json.loads((cv / "fold-0" / "checkpoint" / "config.json").read_text())
if config.get("split_sha256") != split_hash(args.folds_file):
    sys.exit(f"{cv} was cross-validated on another folds file than {args.folds_file}")
recipe = [f"--{key}={value}" for key, value in config["train_config"].items()]
run = [f"--val_every={config['run_options']['val_every']}", f"--num_threads={args.threads}", "--select=last",
       "--resume=true", f"--out_dir={out}"]
if args.tiny:
    run += ["--epochs=1", "--samples_per_epoch=32"]
env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
(out / "logs").mkdir(parents=True, exist_ok=True)

pairs = list(itertools.combinations(range(k), 2))


def pair_name(pair: tuple[int, int]) -> str:
    """The training that leaves out the pair's two folds: its run folder, split file and log."""
    return "pair-{}-{}".format(*pair)


for pair in pairs:
    save_split(out / "splits" / f"{pair_name(pair)}.json", nested_folds(folds, list(pair)))
for f in range(k):
    save_split(out / "splits" / f"outer-{f}.json", outer_split(folds, f), force=True)  # only its date may differ


def train(pair: tuple[int, int]) -> int:
    name = pair_name(pair)
    if finished(out / name):
        return 0
    with open(out / "logs" / f"{name}.txt", "a") as log:
        return subprocess.call([sys.executable, "-m", "lasegm", "--quiet", "train", *recipe, *run,
                                f"--split_file={out / 'splits' / f'{name}.json'}", "--fold=0", f"--run_name={name}"],
                               stdout=log, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)


with ThreadPoolExecutor(args.jobs) as pool:
    codes = dict(zip(pairs, pool.map(train, pairs)))
failed = [pair_name(pair) for pair, code in codes.items() if code]
if failed:
    sys.exit(f"trainings failed or stopped: {', '.join(failed)} (logs in {out / 'logs'}; run again to continue)")

tables = []
for f in range(k):
    members = [str(out / pair_name(pair) / "checkpoint") for pair in pairs if f in pair]
    result = out / "eval" / f"outer-{f}"
    subprocess.run([sys.executable, "-m", "lasegm", "--quiet", "evaluate", "--checkpoint", *members,
                    f"--split_file={out / 'splits' / f'outer-{f}.json'}", "--split=test", f"--out={result}"],
                   check=True, env=env)
    tables.append(str(result / "evaluation.json"))
for reference, column, name in ((cv / "oof.json", "dice", "single"), (Path(args.anchor), None, "nnunet")):
    subprocess.run([sys.executable, "-m", "lasegm", "compare", *tables, f"--reference={reference}",
                    *([f"--reference_column={column}"] if column else []), f"--out={out / f'compare-{name}.json'}"],
                   check=True, env=env)
