#!/usr/bin/env bash
# A device call sends the tracked files plus what it carries, 64 MiB at most; the checkpoints' weights, demo
# examples, figures and test fixtures (~58 MB) are not read by the GPU scripts (the checkpoints' configs are).
# `out` moves them aside, `in` puts them back (run it after every call: tests and CI need them).
# Usage: bash docs/gpu/slim-tree.sh out|in
set -uo pipefail
HOLD=${HOLD:-/tmp/lasegm-hold}
PATHS="checkpoints/unet/model.safetensors checkpoints/fpn/model.safetensors checkpoints/pspnet/model.safetensors
       demo/examples docs/figures tests/fixtures"
case "${1:-}" in
  out) for p in $PATHS; do [ -e "$HOLD/$p" ] && { echo "$HOLD/$p exists: run '$0 in' first"; exit 1; }; done
       for p in $PATHS; do mkdir -p "$HOLD/$(dirname $p)" && mv "$p" "$HOLD/$p" || exit 1; done ;;
  in)  for p in $PATHS; do if [ -e "$HOLD/$p" ] && [ ! -e "$p" ]; then mv "$HOLD/$p" "$p"; fi; done
       git status --short ;;
  *)   echo "usage: $0 out|in"; exit 2 ;;
esac
