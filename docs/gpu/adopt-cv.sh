#!/usr/bin/env bash
# Give the served checkpoints the out-of-fold tables of a new cross-validation of their own recipes, e.g. the one
# docs/gpu/cv-2d.sh runs on a GPU (its results.tgz holds each fold's config.json and summary.json; the served
# models were trained with the same flags on 2 CPU cores, docs/experiments/finals_cpu.sh). For each architecture:
# the folds' records and a copy of checkpoints/<arch> go to runs/cv/<arch>-<suffix>/; `lasegm cv --final
# --collect_only` checks that the folds trained the served model's recipe for as many epochs and writes the table
# into it; `lasegm export` serves it. Refused (nothing changes) if a recipe or an epoch count differs.
# Usage: bash docs/gpu/adopt-cv.sh RESULTS_DIR SUFFIX [unet fpn pspnet]
#   RESULTS_DIR: where results.tgz was unpacked (it holds cv/<arch>-<suffix>/fold-K/); e.g. SUFFIX=v3
set -euo pipefail
SRC=$1; SUFFIX=$2; shift 2
for arch in ${*:-unet fpn pspnet}; do
  name=$arch-$SUFFIX; dst=runs/cv/$name
  [ -d "$SRC/cv/$name" ] || { echo "$SRC/cv/$name: no such cross-validation"; exit 1; }
  rm -rf "$dst"; mkdir -p "$dst/final"
  cp -r "$SRC/cv/$name"/fold-* "$dst/"
  cp -r "checkpoints/$arch" "$dst/final/checkpoint"
  lasegm --quiet cv --name="$name" --final --collect_only --split_file=splits/cv5.json
  lasegm export --checkpoint "$dst/final/checkpoint" --out "checkpoints/$arch"
done
