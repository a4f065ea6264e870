#!/usr/bin/env bash
# The recipe of the shipped gender + apparent-age model (v2), end to end (CPU: about 3 hours; every
# step resumes or is cached, so run the same line again after an interruption):
#   bash scripts/train_shipped_model.sh [DATA_DIR]
# DATA_DIR holds utkface/ (images/ + labels.csv) and mask_templates/ (MaskTheFace masks folder:
# masks.cfg, templates/; without it the bundled templates are used). Needs requirements-train.txt and
# a git checkout (v2 starts from model v1, read from the git history).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash scripts/train_shipped_model.sh DATA_DIR  (DATA_DIR holds utkface/images and utkface/labels.csv)}
[ -d "$DATA/utkface" ] || { [ -d "$DATA/data/utkface" ] && DATA="$DATA/data"; }
[ -f "$DATA/utkface/labels.csv" ] || { echo "error: $DATA/utkface/labels.csv not found (see README: UTKFace)" >&2; exit 2; }
PY=${PYTHON:-python}
CACHE=data_cache/utk192ctx
V1=runs/v1_int8.tflite
RUN_A=runs/v2_warm
RUN_B=runs/v2_warm2
MASKS="$DATA/mask_templates"
[ -d "$MASKS" ] || MASKS=bundled
mkdir -p runs

# Crops with 1.5x context around the runtime crop (for framing augmentation and the looser/tighter report).
[ -f "$CACHE/crops.npy" ] || $PY -m training prepare --utkface "$DATA/utkface" --out "$CACHE" --size 128 --context 1.5
# Stage 0: model v1 (VGG16 from scratch at 64 px; its own recipe: git show f92b4cf:scripts/train_shipped_model.sh).
if [ ! -f "$V1" ] || [ ! -f "${V1%.tflite}.json" ]; then
  { git show f92b4cf:models/gender_vgg16_int8.tflite > "$V1.tmp" \
      && git show f92b4cf:models/gender_vgg16_int8.json > "${V1%.tflite}.json.tmp"; } 2>/dev/null \
    || { rm -f "$V1.tmp" "${V1%.tflite}.json.tmp"
         echo "error: model v1 (commit f92b4cf) not found: run this in a full git clone of the project" >&2; exit 2; }
  mv "$V1.tmp" "$V1" && mv "${V1%.tflite}.json.tmp" "${V1%.tflite}.json"
fi
# Stage A: v1's weights plus a new apparent-age head; one epoch with the backbone frozen (Adam 3e-4), then
# all layers at 3e-5, halved after 2 epochs without a better validation score, stopped after 4 (it stops at 5).
if [ -f "$RUN_A/state.json" ]; then resume=--resume; else resume=; fi
# shellcheck disable=SC2086
$PY -m training train --data "$CACHE" --run "$RUN_A" --weights "$V1" --age-head --age-weight 0.02 --lr 3e-4 \
  --frozen-epochs 1 --lr-schedule plateau --patience 4 --schedule 64:12 --mask-templates "$MASKS" --seed 1 $resume
# Stage B: from stage A's last epoch, 10 epochs at 1e-5 (plateau halving), a lighter age loss.
if [ -f "$RUN_B/state.json" ]; then resume=--resume; else resume=; fi
# shellcheck disable=SC2086
$PY -m training train --data "$CACHE" --run "$RUN_B" --weights "$RUN_A/last.keras" --frozen-epochs 0 --lr 1e-4 \
  --schedule 64:10 --age-head --age-weight 0.005 --lr-schedule plateau --patience 3 --mask-templates "$MASKS" --seed 1 $resume
# Stage B's best validation epoch; flip averaging (and its flip band: the 10 % of faces nearest the
# threshold), calibration, threshold and uncertain band chosen on val.
$PY -m training export --checkpoint "$RUN_B/best.keras" --data "$CACHE" --size 64 --mask-templates "$MASKS" \
  --out models/gender_vgg16_int8.tflite --float16-weights models/gender_vgg16_float16.npz --force --reproduce "bash scripts/train_shipped_model.sh DATA_DIR" \
  --note "VGG16 at 64 px with an apparent-age head, warm-started from model v1 (VGG16 from scratch, no ImageNet weights): stage A 5 epochs (1 with the backbone frozen at Adam 3e-4, then 3e-5, early-stopped), stage B 10 epochs from stage A's last at 1e-5 with plateau halving and a lighter age loss; all UTKFace ages (children's gender loss x0.3); framing, colour, blur, low-resolution, JPEG and synthetic-mask augmentation; best validation epoch of stage B"
# The ship decision: v2 against v1 on the validation split (score and ms per face), for the README.
$PY scripts/compare_on_val.py --data "$CACHE" --mask-templates "$MASKS" --model "$V1" \
  --model models/gender_vgg16_int8.tflite --json docs/measurements/ship_decision.json
# The model card, README and docs figures from the new metadata (its training curve included).
$PY scripts/render_docs.py
