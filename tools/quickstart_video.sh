#!/usr/bin/env bash
# Video quick start on a CPU: generate the synthetic video dataset, train the small video
# Mask2Former of configs/synthetic/video_instance.yaml, evaluate its YouTube-VIS track AP on the
# synthetic validation videos and draw the tracks of one of them.
#
#   bash tools/quickstart_video.sh [KEY VALUE ...]     (extra config overrides for training)
#
# Environment: PYTHON (default .venv/bin/python), OUTPUT_DIR (default output/quickstart_video),
# DETECTRON2_DATASETS (default datasets), NUM_TRAIN / NUM_VAL (videos to generate; the
# generator's defaults if unset).
set -euo pipefail
CONFIG=configs/synthetic/video_instance.yaml
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets}
OUTPUT_DIR=${OUTPUT_DIR:-output/quickstart_video}
PYTHON=${PYTHON:-.venv/bin/python}
SIZES=()
[[ -n "${NUM_TRAIN:-}" ]] && SIZES+=(--num-train "$NUM_TRAIN")
[[ -n "${NUM_VAL:-}" ]] && SIZES+=(--num-val "$NUM_VAL")
COMMON=(MODEL.DEVICE cpu OUTPUT_DIR "$OUTPUT_DIR")
cd "$(dirname "$0")/.."

start=$(date +%s)
echo "== 1/4 generating the synthetic video dataset in $DETECTRON2_DATASETS/synthetic_video"
"$PYTHON" -m mask2former_video.data_video.synthetic --root "$DETECTRON2_DATASETS" "${SIZES[@]}"

echo "== 2/4 training ($CONFIG) into $OUTPUT_DIR"
# evaluation is the next step: no test set during training
"$PYTHON" train_net_video.py --config-file "$CONFIG" --num-gpus 1 "${COMMON[@]}" DATASETS.TEST "()" "$@"

echo "== 3/4 evaluating $OUTPUT_DIR/model_final.pth (YouTube-VIS track AP)"
"$PYTHON" train_net_video.py --config-file "$CONFIG" --num-gpus 1 --eval-only "${COMMON[@]}" \
    MODEL.WEIGHTS "$OUTPUT_DIR/model_final.pth"

video=$(ls -d "$DETECTRON2_DATASETS"/synthetic_video/valid/JPEGImages/*/ | head -n 1)
echo "== 4/4 drawing the tracks of $video into $OUTPUT_DIR/vis"
"$PYTHON" demo_video/demo.py --config-file "$CONFIG" --input "$video" --output "$OUTPUT_DIR/vis" \
    --save-frames --opts MODEL.DEVICE cpu MODEL.WEIGHTS "$OUTPUT_DIR/model_final.pth"

echo "== done in $(( $(date +%s) - start )) s; metrics: $OUTPUT_DIR/eval_results.json"
"$PYTHON" - "$OUTPUT_DIR/eval_results.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["segm"]
print("track AP = {AP:.1f} (AP50 {AP50:.1f}, AP75 {AP75:.1f}, AR1 {AR1:.1f}, AR10 {AR10:.1f})".format(**res))
PY
