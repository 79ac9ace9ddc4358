#!/usr/bin/env python
r"""
Draw a trained model's predictions on the first images of a test dataset, next to the ground
truth, with detectron2's Visualizer and the dataset's metadata (class names and colors):

    python tools/visualize_predictions.py --config-file CONFIG --output DIR \
        [--dataset NAME] [--num-images 8] MODEL.WEIGHTS model_final.pth [KEY VALUE ...]

Writes DIR/<image name>.png: ground truth on the left, prediction on the right. Panoptic
predictions are drawn when the model makes them, else instances, else semantic segmentation.
"""

import argparse
import os
import sys
from typing import Dict

import numpy as np
import torch


from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from detectron2.utils.visualizer import ColorMode, Visualizer
from PIL import Image

from mask2former.config import build_config_or_exit
from mask2former.modeling.postprocessing import semantic_labels
from mask2former.utils.cpu_allocator import keep_freed_memory_on_cpu
from mask2former.checkpoint import load_model_weights


def _scale(image: np.ndarray) -> float:
    # small images are drawn larger, so that labels stay readable
    return max(1.0, 384.0 / max(image.shape[:2]))


def _draw_prediction(image: np.ndarray, output: Dict, metadata) -> np.ndarray:
    vis = Visualizer(image, metadata, scale=_scale(image), instance_mode=ColorMode.IMAGE)
    if "panoptic_seg" in output:
        seg, segments_info = output["panoptic_seg"]
        return vis.draw_panoptic_seg(seg.cpu(), segments_info).get_image()
    if "instances" in output:
        instances = output["instances"].to("cpu")
        instances = instances[instances.scores > 0.5]
        return vis.draw_instance_predictions(instances).get_image()
    return vis.draw_sem_seg(semantic_labels(output).cpu()).get_image()


def _draw_ground_truth(image: np.ndarray, record: Dict, metadata) -> np.ndarray:
    record = dict(record)
    if "pan_seg_file_name" in record:
        # draw the panoptic ground truth rather than the semantic one
        from panopticapi.utils import rgb2id

        pan = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
        vis = Visualizer(image, metadata, scale=_scale(image))
        return vis.draw_panoptic_seg(torch.from_numpy(pan), record["segments_info"]).get_image()
    return Visualizer(image, metadata, scale=_scale(image)).draw_dataset_dict(record).get_image()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", required=True, help="directory for the PNG files")
    parser.add_argument("--dataset", help="dataset to draw (default: the first of DATASETS.TEST)")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE ...")
    args = parser.parse_args(argv)
    cfg = build_config_or_exit(parser, args)
    keep_freed_memory_on_cpu(cfg.MODEL.DEVICE)
    dataset = args.dataset or cfg.DATASETS.TEST[0]
    metadata = MetadataCatalog.get(dataset)
    records = DatasetCatalog.get(dataset)[: args.num_images]

    model = build_model(cfg)
    model.eval()
    load_model_weights(model, cfg.MODEL.WEIGHTS)
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)

    os.makedirs(args.output, exist_ok=True)
    for record in records:
        image = read_image(record["file_name"], format="RGB")  # for drawing
        model_input = read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        h, w = model_input.shape[:2]
        resized = resize.get_transform(model_input).apply_image(model_input)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        with torch.no_grad():
            output = model([{"image": tensor, "height": h, "width": w}])[0]
        panel = np.concatenate(
            [
                _draw_ground_truth(image, record, metadata),
                _draw_prediction(image, output, metadata),
            ],
            axis=1,
        )
        name = os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png"
        Image.fromarray(panel).save(os.path.join(args.output, name))
    print(f"Wrote {len(records)} visualizations to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
