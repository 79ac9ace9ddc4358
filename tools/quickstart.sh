#!/usr/bin/env bash
# Quick start on a CPU: generate the synthetic dataset, train the small panoptic Mask2Former of
# configs/synthetic/panoptic.yaml, evaluate it (PQ, AP, mIoU) and draw a few predictions.
#
#   bash tools/quickstart.sh [KEY VALUE ...]     (extra config overrides for training)
#
# Environment: PYTHON (default .venv/bin/python), OUTPUT_DIR (default output/quickstart_panoptic),
# DETECTRON2_DATASETS (default datasets), NUM_TRAIN (training images to generate, default 2000),
# NUM_VIS (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
OUTPUT_DIR=${OUTPUT_DIR:-output/quickstart_panoptic}
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets}
CONFIG=configs/synthetic/panoptic.yaml
COMMON=(MODEL.DEVICE cpu OUTPUT_DIR "$OUTPUT_DIR")

start=$(date +%s)
echo "== 1/4 generating the synthetic dataset in $DETECTRON2_DATASETS/synthetic"
# more generated images than the default 400: the model sees each image only ~6 times
"$PYTHON" -m mask2former.data.synthetic --root "$DETECTRON2_DATASETS" --num-train "${NUM_TRAIN:-2000}"

echo "== 2/4 training ($CONFIG) into $OUTPUT_DIR"
# evaluation is the next step: no test set during training
"$PYTHON" train_net.py --config-file "$CONFIG" --num-gpus 1 "${COMMON[@]}" DATASETS.TEST "()" "$@"

echo "== 3/4 evaluating $OUTPUT_DIR/model_final.pth"
"$PYTHON" train_net.py --config-file "$CONFIG" --num-gpus 1 --eval-only "${COMMON[@]}" \
    MODEL.WEIGHTS "$OUTPUT_DIR/model_final.pth"

echo "== 4/4 drawing predictions into $OUTPUT_DIR/vis"
"$PYTHON" tools/visualize_predictions.py --config-file "$CONFIG" --output "$OUTPUT_DIR/vis" \
    --num-images "${NUM_VIS:-8}" "${COMMON[@]}" MODEL.WEIGHTS "$OUTPUT_DIR/model_final.pth"

echo "== done in $(( $(date +%s) - start )) s; metrics: $OUTPUT_DIR/eval_results.json"
"$PYTHON" - "$OUTPUT_DIR/eval_results.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
for task, key in (("panoptic_seg", "PQ"), ("segm", "AP"), ("sem_seg", "mIoU")):
    if task in res:
        print(f"{task:>13} {key:>4} = {res[task][key]:.1f}")
PY
