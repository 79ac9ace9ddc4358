#!/usr/bin/env python
r"""
Run a Mask2Former model exported by ``tools/deploy/export_model.py --format onnx`` with
onnxruntime, NumPy and OpenCV only (neither torch nor detectron2), and draw its predictions.

    python demo/onnx_predictor.py --model DIR --input a.jpg b.png --output OUTDIR \
        [--task panoptic|instance|semantic] [--min-size 800] [--max-size 1333] [--save-outputs]

DIR is the export folder (DIR/model.onnx, DIR/export_info.json). The post-processing is
``postprocess_numpy.py``, loaded by path from this script's folder or else from
mask2former/export/ in this repository: to deploy, ship this script with that one file beside
it, and DIR; the ``mask2former`` package is not needed.

Each image is read with OpenCV, resized as detectron2's ``ResizeShortestEdge`` at test time
(shortest edge to --min-size, longest edge at most --max-size; values in export_info.json
under "min_size_test" / "max_size_test" win over the defaults), normalised and run; the outputs
are at the image's original size. OUTDIR/NAME.png is the drawing of --task (default: the
richest output the export turns on); --save-outputs also writes OUTDIR/NAME.npz with every
output (sem_seg (K, H, W), panoptic_seg (H, W) + segments_info as JSON, instance scores,
classes, masks and boxes).

Exit status: 0 when every image was processed, 1 when an image could not be read (named on
stderr; the others are still processed), 2 for a bad model folder or settings.
"""
import argparse
import importlib.util
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np
import onnxruntime

TASKS = ("panoptic", "instance", "semantic")  # richest first: the default is the first on
MODEL_FILE, INFO_FILE, POSTPROCESS_FILE = "model.onnx", "export_info.json", "postprocess_numpy.py"
INFO_KEYS = ("input_format", "pixel_mean", "pixel_std", "size_divisibility", "settings")
DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE = 800, 1333
HERE = os.path.dirname(os.path.abspath(__file__))


class PredictorError(RuntimeError):
    """Bad model folder, metadata or input, described in the message (shown without traceback)."""


def load_postprocess_module():
    """``postprocess_numpy.py`` from this script's folder or else the repository's
    mask2former/export/, loaded as a single file (not through the package, whose import needs
    torch). Never from the model folder: a model downloaded from elsewhere brings no code."""
    candidates = [os.path.join(HERE, POSTPROCESS_FILE),
                  os.path.join(os.path.dirname(HERE), "mask2former", "export", POSTPROCESS_FILE)]
    for path in candidates:
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location("postprocess_numpy", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise PredictorError(f"{POSTPROCESS_FILE} not found; looked for {', '.join(candidates)}")


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """The (height, width) detectron2's ``ResizeShortestEdge.get_output_shape`` gives."""
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


class OnnxPredictor:
    """
    One exported model: ``predictor(bgr_image)`` -> {"sem_seg": (K, H, W) float32,
    "panoptic_seg": ((H, W) int32 ids, segments_info), "instances": {"scores": (N,),
    "pred_classes": (N,), "pred_masks": (N, H, W) bool, "pred_boxes": (N, 4) XYXY}}, the outputs
    the export turns on, at the image's (H, W).
    """

    def __init__(self, model_dir: str, min_size: Optional[int] = None, max_size: Optional[int] = None,
                 threads: int = 0):
        self.model_path = os.path.join(model_dir, MODEL_FILE)
        self.info = self._read_info(os.path.join(model_dir, INFO_FILE))
        self.settings = argparse.Namespace(**self.info["settings"])
        self.is_thing = np.array(self.info["is_thing"], dtype=bool) if "is_thing" in self.info else None
        self.class_names: Optional[List[str]] = self.info.get("class_names")
        self.mean = np.asarray(self.info["pixel_mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(self.info["pixel_std"], np.float32).reshape(3, 1, 1)
        self.min_size = min_size or int(self.info.get("min_size_test", DEFAULT_MIN_SIZE))
        self.max_size = max_size or int(self.info.get("max_size_test", DEFAULT_MAX_SIZE))
        self.postprocess = load_postprocess_module().postprocess
        if not os.path.isfile(self.model_path):
            raise PredictorError(f"{self.model_path}: no such file")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                self.model_path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise PredictorError(f"{self.model_path}: not a loadable ONNX model ({e})") from e
        self.num_classes = self._check_graph()

    @staticmethod
    def _read_info(path: str) -> Dict:
        try:
            with open(path) as f:
                info = json.load(f)
        except (OSError, ValueError) as e:
            raise PredictorError(f"{path}: cannot read the export metadata ({e})") from e
        missing = [key for key in INFO_KEYS if key not in info]
        if missing:
            raise PredictorError(f"{path}: missing key(s) {', '.join(missing)}")
        if info["input_format"] not in ("BGR", "RGB"):
            raise PredictorError(f"{path}: input_format {info['input_format']!r} is not BGR or RGB")
        return info

    def _check_graph(self) -> int:
        """The class count K, after checking the graph's inputs and outputs against the
        metadata (one image input (B, 3, H, W); class logits (B, Q, K + 1), K the length of
        is_thing / class_names; mask logits (B, Q, h, w))."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        problems = []
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, "3"):
            problems.append(f"inputs {[(i.name, i.shape) for i in inputs]}, expected one (B, 3, H, W)")
        if len(outputs) != 2 or len(outputs[0].shape) != 3 or len(outputs[1].shape) != 4:
            problems.append(f"outputs {[(o.name, o.shape) for o in outputs]}, expected class logits "
                            "(B, Q, K + 1) and mask logits (B, Q, h, w)")
            raise PredictorError(f"{self.model_path} does not fit {INFO_FILE}: " + "; ".join(problems))
        num_classes = outputs[0].shape[2] - 1 if isinstance(outputs[0].shape[2], int) else None
        for key in ("is_thing", "class_names"):
            expected = len(self.info[key]) if key in self.info else None
            if expected is not None and num_classes is not None and expected != num_classes:
                problems.append(f"class logits {outputs[0].shape} give {num_classes} classes, "
                                f"{INFO_FILE} {key} has {expected}")
        if problems:
            raise PredictorError(f"{self.model_path} does not fit {INFO_FILE}: " + "; ".join(problems))
        return num_classes

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (1, 3, h, w) float32 normalised network input."""
        size = resized_shape(*image.shape[:2], self.min_size, self.max_size)
        if size != image.shape[:2]:
            image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
        if self.info["input_format"] == "RGB":
            image = image[:, :, ::-1]
        return ((image.transpose(2, 0, 1).astype(np.float32) - self.mean) / self.std)[None]

    def __call__(self, image: np.ndarray) -> Dict:
        x = self.preprocess(image)
        mask_cls, mask_pred = self.session.run(None, {self.session.get_inputs()[0].name: x})
        size = x.shape[-2:]
        div = max(int(self.info["size_divisibility"]), 1)
        padded = tuple(-(-s // div) * div for s in size)
        if mask_cls.shape[:1] != (1,) or mask_pred.shape[:2] != mask_cls.shape[:2] or (
                self.num_classes is not None and mask_cls.shape[2] != self.num_classes + 1):
            raise PredictorError(f"{self.model_path}: outputs of shapes {mask_cls.shape}, {mask_pred.shape} "
                                 f"for an input of {x.shape}; expected (1, Q, K + 1), (1, Q, h, w)")
        return self.postprocess(mask_cls[0], mask_pred[0], padded, size, image.shape[:2],
                                self.settings, self.is_thing)

    def enabled_tasks(self) -> List[str]:
        return [t for t in TASKS if getattr(self.settings, f"{t}_on")]


def read_image(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise PredictorError(f"{path}: cannot read this file as an image")
    return image


# ----------------------------------------------------------------------------- drawing
def _color(index: int) -> Tuple[int, int, int]:
    rng = np.random.default_rng(index)  # a fixed color per class or segment
    return tuple(int(c) for c in rng.integers(40, 256, 3))


def _label(predictor: OnnxPredictor, category: int) -> str:
    names = predictor.class_names
    return names[category] if names and 0 <= category < len(names) else f"class {category}"


def _blend(canvas: np.ndarray, mask: np.ndarray, color, alpha: float = 0.5) -> None:
    canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.asarray(color, np.float32)


def _text_at_mask(canvas: np.ndarray, mask: np.ndarray, text: str) -> None:
    ys, xs = np.nonzero(mask)
    if len(ys):
        org = (int(xs.mean()), int(ys.mean()))
        cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def draw(image: np.ndarray, outputs: Dict, task: str, predictor: OnnxPredictor,
         confidence_threshold: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 BGR drawing of ``task``'s output: colored masks with class names."""
    canvas = image.astype(np.float32)
    labelled: List[Tuple[np.ndarray, str]] = []
    if task == "semantic":
        labels = outputs["sem_seg"].argmax(0)
        for category in np.unique(labels):
            _blend(canvas, labels == category, _color(int(category)))
            labelled.append((labels == category, _label(predictor, int(category))))
    elif task == "panoptic":
        ids, segments = outputs["panoptic_seg"]
        for segment in segments:
            mask = ids == segment["id"]
            _blend(canvas, mask, _color(segment["id"] * 7919 + segment["category_id"]))
            labelled.append((mask, _label(predictor, segment["category_id"])))
    else:
        found = outputs["instances"]
        for i in np.flatnonzero(found["scores"] > confidence_threshold):
            mask, category = found["pred_masks"][i], int(found["pred_classes"][i])
            _blend(canvas, mask, _color(1000 + int(i)))
            x0, y0, x1, y1 = (int(v) for v in found["pred_boxes"][i])
            cv2.rectangle(canvas, (x0, y0), (x1, y1), _color(1000 + int(i)), 1)
            labelled.append((mask, f"{_label(predictor, category)} {found['scores'][i]:.2f}"))
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    for mask, text in labelled:
        _text_at_mask(canvas, mask, text)
    return canvas


def save_outputs(path: str, outputs: Dict) -> None:
    """Every output in one .npz: sem_seg, panoptic_seg + segments_info (JSON), instances_*."""
    arrays = {}
    if "sem_seg" in outputs:
        arrays["sem_seg"] = outputs["sem_seg"]
    if "panoptic_seg" in outputs:
        arrays["panoptic_seg"] = outputs["panoptic_seg"][0]
        arrays["segments_info"] = np.array(json.dumps(outputs["panoptic_seg"][1]))
    for key, value in outputs.get("instances", {}).items():
        arrays[f"instances_{key}"] = value
    np.savez_compressed(path, **arrays)


# ----------------------------------------------------------------------------- command line
def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onnx_predictor.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.strip().split("\n\n")[0],
        epilog="\n\n".join(__doc__.strip().split("\n\n")[1:]))
    parser.add_argument("--model", required=True, metavar="DIR", help="export folder")
    parser.add_argument("--input", required=True, nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--output", required=True, metavar="OUTDIR", help="folder for the drawings")
    parser.add_argument("--task", choices=TASKS, help="what to draw (default: the richest turned on)")
    parser.add_argument("--min-size", type=int, help=f"test-time shortest edge (default {DEFAULT_MIN_SIZE})")
    parser.add_argument("--max-size", type=int, help=f"test-time longest edge cap (default {DEFAULT_MAX_SIZE})")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, metavar="T",
                        help="instances scoring at most this are not drawn (default 0.5)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--save-outputs", action="store_true", help="also write OUTDIR/NAME.npz")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        predictor = OnnxPredictor(args.model, args.min_size, args.max_size, args.threads)
        enabled = predictor.enabled_tasks()
        task = args.task or (enabled[0] if enabled else None)
        if task not in enabled:
            raise PredictorError(f"--task {task}: {INFO_FILE} turns on {', '.join(enabled) or 'no output'}")
    except PredictorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(args.output, exist_ok=True)
    status = 0
    for path in args.input:
        try:
            image = read_image(path)
        except PredictorError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
            continue
        outputs = predictor(image)
        name = os.path.splitext(os.path.basename(path))[0]
        cv2.imwrite(os.path.join(args.output, name + ".png"),
                    draw(image, outputs, task, predictor, args.confidence_threshold))
        if args.save_outputs:
            save_outputs(os.path.join(args.output, name + ".npz"), outputs)
        print(f"{path}: {task} drawn to {os.path.join(args.output, name + '.png')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
