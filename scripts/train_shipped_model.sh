#!/usr/bin/env bash
# Reproduce the shipped model end to end (CPU: a few hours; every step resumes or is cached):
#   bash scripts/train_shipped_model.sh [SHARED_DIR]
# SHARED_DIR holds data/utkface and data/mask_templates (default ../shared). Needs requirements-train.txt.
# EXPERIMENTS=0 skips the input-size and upper-half experiments that the model card reports.
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
  --note "VGG16 from scratch (no ImageNet weights), 12 epochs at 64 px, Adam 1e-4 with cosine decay, batch 32, class-balanced, synthetic masks on 40% of crops; best epoch on validation"

card_extra=()
if [ "${EXPERIMENTS:-1}" = 1 ]; then
  # Same budget for each: one more epoch from the final 64 px checkpoint at lr 1e-5.
  # shellcheck disable=SC2086
  for cfg in "ft64 64 full" "ft64_upper 64 upper" "ft96 96 full" "ft128 128 full"; do
    set -- $cfg
    $PY -m training train --data "$CACHE" --run "runs/$1" --weights "$RUN/last.keras" --frozen-epochs 0 \
      --schedule "$2:1" --lr 1e-5 --face-region "$3" --mask-templates "$MASKS" --resume
  done
  note="Each checkpoint: the 12-epoch 64 px run plus one epoch at its size (lr 1e-5)."
  $PY scripts/size_tradeoff.py --data "$CACHE" --mask-templates "$MASKS" --json runs/size_tradeoff.json --note "$note" \
    --model 64=runs/ft64/last.keras --model 96=runs/ft96/last.keras --model 128=runs/ft128/last.keras
  $PY scripts/size_tradeoff.py --data "$CACHE" --mask-templates "$MASKS" --json runs/region_experiment.json \
    --note "$note" --model 64=runs/ft64/last.keras --model 64=runs/ft64_upper/last.keras
  card_extra=(--tradeoff runs/size_tradeoff.json --region-experiment runs/region_experiment.json)
fi
$PY -m training card --model models/gender_vgg16_int8.tflite --history "$RUN/history.csv" "${card_extra[@]}" \
  --reproduce "bash scripts/train_shipped_model.sh ../shared"
