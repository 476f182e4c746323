#!/usr/bin/env bash
# The served U-Net recipe per plane: docs/experiments/views.sh with ARCH=unet (its header lists PLANES, JOBS, FINAL).
#     PLANES="axial coronal" JOBS=2 FINAL=true bash docs/experiments/views_unet.sh
exec env ARCH=unet bash "$(dirname "$0")/views.sh"
