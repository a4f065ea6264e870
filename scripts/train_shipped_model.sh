#!/usr/bin/env bash
# Reproduce the shipped model end to end (CPU: a few hours; every step resumes or is cached):
#   bash scripts/train_shipped_model.sh [SHARED_DIR]
# SHARED_DIR holds data/utkface and data/mask_templates (default ../shared). Needs requirements-train.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${1:-../shared}
PY=${PYTHON:-python}
CACHE=data_cache/utkface128
RUN=runs/vgg16_main
MASKS="$SHARED/data/mask_templates"

[ -f "$CACHE/crops.npy" ] || $PY -m training prepare --utkface "$SHARED/data/utkface" --out "$CACHE" --size 128
# 12 epochs at 64 px from scratch (Adam 1e-4, cosine decay); rerun the same line to resume.
$PY -m training train --data "$CACHE" --run "$RUN" --schedule 64:12 --mask-templates "$MASKS" --resume
$PY -m training export --checkpoint "$RUN/best.keras" --data "$CACHE" --size 64 --mask-templates "$MASKS" \
  --out models/gender_vgg16_int8.tflite \
  --note "VGG16 from scratch (no ImageNet weights), 12 epochs at 64 px, Adam 1e-4 cosine, batch 32, synthetic masks on 40% of crops"
$PY -m training card --model models/gender_vgg16_int8.tflite --history "$RUN/history.csv" \
  --reproduce "bash scripts/train_shipped_model.sh ../shared"
