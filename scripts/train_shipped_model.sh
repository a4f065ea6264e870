#!/usr/bin/env bash
# The recipe of the gender + apparent-age model (v2), end to end (CPU: many hours; every step
# resumes or is cached, so run the same line again after an interruption):
#   bash scripts/train_shipped_model.sh [DATA_DIR]
# DATA_DIR holds utkface/ (images/ + labels.csv) and mask_templates/ (MaskTheFace masks folder:
# masks.cfg, templates/; without it the bundled templates are used). Needs requirements-train.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash scripts/train_shipped_model.sh DATA_DIR  (DATA_DIR holds utkface/images and utkface/labels.csv)}
[ -d "$DATA/utkface" ] || { [ -d "$DATA/data/utkface" ] && DATA="$DATA/data"; }
[ -f "$DATA/utkface/labels.csv" ] || { echo "error: $DATA/utkface/labels.csv not found (see README: UTKFace)" >&2; exit 2; }
PY=${PYTHON:-python}
CACHE=data_cache/utk192ctx
RUN=runs/v2_age64
MASKS="$DATA/mask_templates"
[ -d "$MASKS" ] || MASKS=bundled

# Crops with 1.5x context around the runtime crop (for framing augmentation and the looser/tighter report).
[ -f "$CACHE/crops.npy" ] || $PY -m training prepare --utkface "$DATA/utkface" --out "$CACHE" --size 128 --context 1.5
# VGG16 from scratch at 64 px with the age head, all ages (children's gender loss x0.3), Adam 1e-4 halved
# after every 2 epochs without a better validation score, stopped after 5 (at most 60 epochs).
if [ -f "$RUN/state.json" ]; then resume=--resume; else resume=; fi
# shellcheck disable=SC2086
$PY -m training train --data "$CACHE" --run "$RUN" --schedule 64:60 --age-head --age-weight 0.02 \
  --lr-schedule plateau --patience 5 --mask-templates "$MASKS" --seed 1 $resume
# The epoch with the best validation score; flip averaging, calibration, threshold and uncertain band chosen on val.
$PY -m training export --checkpoint "$RUN/best.keras" --data "$CACHE" --size 64 --mask-templates "$MASKS" \
  --out models/gender_vgg16_int8.tflite --float16-weights models/gender_vgg16_float16.npz --force --reproduce "bash scripts/train_shipped_model.sh DATA_DIR" \
  --note "VGG16 from scratch (no ImageNet weights) at 64 px with an apparent-age head, all UTKFace ages; Adam 1e-4, plateau halving, early stopping on validation; framing, colour, blur, low-resolution, JPEG and synthetic-mask augmentation; best validation epoch"
# The model card, README and docs figures from the new metadata (its training curve included).
$PY scripts/render_docs.py
