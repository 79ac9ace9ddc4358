#!/usr/bin/env python
r"""
Run a Mask2Former model exported by ``tools/deploy/export_model.py --format onnx`` with
onnxruntime, NumPy and OpenCV only (neither torch nor detectron2), and draw its predictions.

    python demo/onnx_predictor.py --model DIR --input a.jpg b.png --output OUTDIR \
        [--task panoptic|instance|semantic] [--min-size N] [--max-size N] [--save-outputs]

DIR is the export folder (DIR/model.onnx, DIR/export_info.json, and DIR/postprocess.onnx, the
post-processing's dense step, run with onnxruntime when present). The post-processing is
``postprocess_numpy.py``, loaded by path from this script's folder or else from
mask2former/export/ in this repository: to deploy, ship this script with that one file beside
it, and DIR; the ``mask2former`` package is not needed. ``cpu_allocator.py`` (from
mask2former/utils/), beside it or in the repository, makes the command line keep freed memory
for the next image, as demo/demo.py does on the CPU.

Everything the model needs besides the graph comes from DIR/export_info.json (written by the
export from the config): each image is read with OpenCV, put in the model's channel order,
resized as detectron2's ``ResizeShortestEdge`` at test time (shortest edge to "min_size_test",
longest edge at most "max_size_test"; --min-size / --max-size override them; the bilinear
resize of Pillow, which detectron2 uses, reproduced exactly), normalised and run; the outputs
are at the image's original size, computed with the export's thresholds and outputs, and drawn
with the dataset's class names and colors. OUTDIR/NAME.png is the drawing of --task (default:
the richest output the export turns on); --save-outputs also writes OUTDIR/NAME.npz with every
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
# the post-processing's dense step as a graph (mask2former/export/postprocess_graph.py), optional
DENSE_BLOCK_FILE = "postprocess.onnx"
# optional: glibc settings for many images (mask2former/utils/cpu_allocator.py)
ALLOCATOR_FILE = "cpu_allocator.py"
INFO_KEYS = ("input_format", "pixel_mean", "pixel_std", "min_size_test", "max_size_test", "size_divisibility",
             "num_queries", "num_classes", "settings")
SETTINGS_KEYS = ("semantic_on", "panoptic_on", "instance_on", "object_mask_threshold", "overlap_threshold",
                 "test_topk_per_image", "sem_seg_postprocess_before_inference")
# keys holding one entry per class
CLASS_KEYS = ("is_thing", "class_names", "class_colors")
# Pillow's fixed-point precision for 8-bit images (Resample.c: 32 - 8 - 2 bits)
PRECISION_BITS = 22
HERE = os.path.dirname(os.path.abspath(__file__))


class PredictorError(RuntimeError):
    """Bad model folder, metadata or input, described in the message (shown without traceback)."""


class UnreadableImage(PredictorError):
    """An input image that cannot be read (the others are still processed)."""


def _load_file(file_name: str, package_folder: str):
    """The module ``file_name`` from this script's folder or else the repository's
    mask2former/``package_folder``/, loaded as a single file (not through the package, whose
    import needs torch), or None. Never from the model folder: a model downloaded from
    elsewhere brings no code."""
    candidates = [os.path.join(HERE, file_name),
                  os.path.join(os.path.dirname(HERE), "mask2former", package_folder, file_name)]
    for path in candidates:
        if os.path.isfile(path):
            spec = importlib.util.spec_from_file_location(os.path.splitext(file_name)[0], path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


def load_postprocess_module():
    """``postprocess_numpy.py`` (see :func:`_load_file`)."""
    module = _load_file(POSTPROCESS_FILE, "export")
    if module is None:
        raise PredictorError(f"{POSTPROCESS_FILE} not found beside {__file__} or in the repository's "
                             "mask2former/export/")
    return module


def keep_freed_memory() -> bool:
    """What ``demo/demo.py`` does on the CPU: glibc keeps freed memory for the next image, whose
    outputs (the semantic scores: 567 MB at 800x1333 with 133 classes) then do not start on
    fresh pages (first-touch page faults cost about 15 % of an 800x1333 image here).
    ``mask2former/utils/cpu_allocator.py``, beside this script or in the repository, when there
    is one; MASK2FORMER_KEEP_FREED_MEMORY=0 turns it off."""
    module = _load_file(ALLOCATOR_FILE, "utils")
    return bool(module is not None and module.keep_freed_memory())


def _pillow_bilinear_taps(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(out, T) input indices and fixed-point int32 weights of Pillow's BILINEAR resize along one
    axis (its Resample.c: a triangle filter widened by the scale when reducing, so that every
    input pixel counts, normalised, then rounded to PRECISION_BITS bits)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the bilinear filter's support is 1 input pixel
    centers = (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(centers + support + 0.5), in_size).astype(np.int64) - first
    taps = np.arange(int(np.ceil(support)) * 2 + 1)
    weights = np.maximum(1.0 - np.abs((taps + first[:, None] - centers[:, None] + 0.5) * (1.0 / filter_scale)), 0)
    weights = np.where(taps < count[:, None], weights, 0.0)
    weights /= weights.sum(1, keepdims=True)
    fixed = np.floor(0.5 + weights * (1 << PRECISION_BITS)).astype(np.int32)
    return np.minimum(first[:, None] + taps, in_size - 1), fixed


def _pillow_resample(image: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """Pillow's 8-bit bilinear pass along ``axis`` (0: rows, 1: columns) of an (H, W, C) uint8
    image; the sum of each output is rounded and clipped to uint8, as Pillow does."""
    index, weights = _pillow_bilinear_taps(image.shape[axis], out_size)
    shape = [1, 1, 1]
    shape[axis] = out_size
    total = np.full([out_size if a == axis else n for a, n in enumerate(image.shape)],
                    1 << (PRECISION_BITS - 1), dtype=np.int32)
    for tap in range(index.shape[1]):
        total += np.take(image, index[:, tap], axis=axis).astype(np.int32) * weights[:, tap].reshape(shape)
    return np.clip(total >> PRECISION_BITS, 0, 255).astype(np.uint8)


def pillow_bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8 -> (height, width, C), equal to ``PIL.Image.resize((width, height),
    Image.BILINEAR)``, the resize of detectron2's ``ResizeShortestEdge``: the columns, then the
    rows, each pass skipped where the size stays."""
    if image.shape[1] != width:
        image = _pillow_resample(image, width, axis=1)
    if image.shape[0] != height:
        image = _pillow_resample(image, height, axis=0)
    return image


def resized_shape(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """The (height, width) detectron2's ``ResizeShortestEdge.get_output_shape`` gives."""
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        scale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * scale, new_w * scale
    return int(new_h + 0.5), int(new_w + 0.5)


def _session(path: str, threads: int, flush_denormals: bool = False) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    if flush_denormals:
        # The decoder's masked softmax meets tiny exponentials (keys far below the row's
        # maximum), which are denormal floats: onnxruntime's Softmax takes 4x as long on them
        # (130 against 33 ms in the R50 network at 800x1344, 2 threads). Flushing them to zero
        # changes nothing above 1.2e-38.
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    # every graph optimisation, one operator at a time on ``threads`` threads (0: one per
    # physical core): the graph is a chain, parallel operators would only compete
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
        raise PredictorError(f"{path}: not a loadable ONNX model ({e})") from e


class OnnxDenseBlock:
    """The post-processing's dense step (``postprocess_numpy.dense_block``: the row resize of a
    block of logits, their sigmoid, the semantic mixing and what the panoptic and instance
    inference need of the queries they keep) run by onnxruntime from the export's
    postprocess.onnx."""

    INPUTS = ("rows", "columns", "mixing", "panoptic_queries", "instance_queries")
    OUTPUTS = ("scores", "panoptic_probs", "instance_masks", "instance_inside")

    def __init__(self, path: str, threads: int):
        self.path = path
        self.session = _session(path, threads)
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if names != (list(self.INPUTS), list(self.OUTPUTS)):
            raise PredictorError(f"{path}: inputs {names[0]} and outputs {names[1]}, expected "
                                 f"{list(self.INPUTS)} and {list(self.OUTPUTS)}")

    def __call__(self, rows: np.ndarray, columns: np.ndarray, mixing: Optional[np.ndarray],
                 panoptic_queries: np.ndarray, instance_queries: np.ndarray,
                 scores_out: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if mixing is None:  # no semantic output: no classes to mix
            mixing = np.zeros((0, columns.shape[0]), dtype=np.float32)
        feed = {"rows": np.ascontiguousarray(rows, dtype=np.float32),
                "columns": np.ascontiguousarray(columns, dtype=np.float32), "mixing": mixing,
                "panoptic_queries": panoptic_queries, "instance_queries": instance_queries}
        scores, panoptic_probs, instance_masks, instance_inside = self.session.run(list(self.OUTPUTS), feed)
        if scores_out is not None:
            scores_out[...] = scores
        return panoptic_probs, instance_masks, instance_inside


class OnnxPredictor:
    """
    One exported model: ``predictor(bgr_image)`` -> {"sem_seg": (K, H, W) float32,
    "panoptic_seg": ((H, W) int32 ids, segments_info), "instances": {"scores": (N,),
    "pred_classes": (N,), "pred_masks": (N, H, W) bool, "pred_boxes": (N, 4) XYXY}}, the outputs
    the export turns on, at the image's (H, W).

    ``flush_denormals`` (default): the network runs with denormal floats flushed to zero, which
    makes it faster (see ``_session``). onnxruntime sets this mode on its own threads and on the
    thread that creates the predictor, where it stays: float arithmetic on that thread then
    treats values below 1.2e-38 as zero. Pass False to keep that thread's mode.
    """

    def __init__(self, model_dir: str, min_size: Optional[int] = None, max_size: Optional[int] = None,
                 threads: int = 0, flush_denormals: bool = True):
        self.model_path = os.path.join(model_dir, MODEL_FILE)
        self.info = self._read_info(os.path.join(model_dir, INFO_FILE))
        self.settings = argparse.Namespace(**self.info["settings"])
        # as the model: the thing classes only matter where panoptic inference is on
        self.is_thing = np.array(self.info["is_thing"], dtype=bool) if self.settings.panoptic_on else None
        self.class_names: Optional[List[str]] = self.info.get("class_names")
        self.class_colors: Optional[List[List[int]]] = self.info.get("class_colors")
        self.mean = np.asarray(self.info["pixel_mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(self.info["pixel_std"], np.float32).reshape(3, 1, 1)
        self.min_size = min_size or int(self.info["min_size_test"])
        self.max_size = max_size or int(self.info["max_size_test"])
        postprocess_module = load_postprocess_module()
        self.postprocess = postprocess_module.postprocess
        if not os.path.isfile(self.model_path):
            raise PredictorError(f"{self.model_path}: no such file")
        self.session = _session(self.model_path, threads, flush_denormals)
        self._check_graph()
        # onnxruntime's matrix products and sigmoid are 3x NumPy's here (postprocess_graph.py);
        # an export without the graph gets NumPy's, with the same results
        dense_path = os.path.join(model_dir, DENSE_BLOCK_FILE)
        self.dense_block = (OnnxDenseBlock(dense_path, threads) if os.path.isfile(dense_path)
                            else postprocess_module.dense_block)

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
        problems = []
        if info["input_format"] not in ("BGR", "RGB"):
            problems.append(f"input_format {info['input_format']!r} is not BGR or RGB")
        for key in ("pixel_mean", "pixel_std"):
            if len(info[key]) != 3:
                problems.append(f"{key} has {len(info[key])} values, not 3")
        missing = [key for key in SETTINGS_KEYS if key not in info["settings"]]
        if missing:
            problems.append(f"settings lack {', '.join(missing)}")
        elif info["settings"]["panoptic_on"] and "is_thing" not in info:
            problems.append("panoptic inference is on but is_thing (the thing classes) is missing")
        for key in CLASS_KEYS:
            if key in info and len(info[key]) != info["num_classes"]:
                problems.append(f"{key} has {len(info[key])} entries, num_classes is {info['num_classes']}")
        if problems:
            raise PredictorError(f"{path}: " + "; ".join(problems))
        return info

    def _check_graph(self) -> None:
        """The graph's inputs and outputs against the metadata: one image input (B, 3, H, W),
        class logits (B, Q, K + 1) and mask logits (B, Q, h, w), Q = num_queries and
        K = num_classes."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        queries, classes = self.info["num_queries"], self.info["num_classes"]
        problems = []
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] != 3:
            problems.append(f"inputs {[(i.name, i.shape) for i in inputs]}, expected one (B, 3, H, W)")
        if len(outputs) != 2 or len(outputs[0].shape) != 3 or len(outputs[1].shape) != 4:
            problems.append(f"outputs {[(o.name, o.shape) for o in outputs]}, expected class logits "
                            "(B, Q, K + 1) and mask logits (B, Q, h, w)")
        else:
            # the dimensions the graph fixes (its query count may be symbolic: checked per run)
            for name, dims, expected in (("class logits", outputs[0].shape, [None, queries, classes + 1]),
                                         ("mask logits", outputs[1].shape, [None, queries, None, None])):
                if any(isinstance(d, int) and e is not None and d != e for d, e in zip(dims, expected)):
                    shape = ", ".join("?" if e is None else str(e) for e in expected)
                    problems.append(f"{name} {dims}, {INFO_FILE} gives num_queries {queries} and num_classes "
                                    f"{classes}: expected ({shape})")
        if problems:
            raise PredictorError(f"{self.model_path} does not fit {INFO_FILE}: " + "; ".join(problems))

    def network_input(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (h, w, 3) uint8 at the test size in the model's channel
        order, as detectron2's ``DefaultPredictor`` gives it to the model."""
        if self.info["input_format"] == "RGB":
            image = image[:, :, ::-1]
        return pillow_bilinear_resize(image, *resized_shape(*image.shape[:2], self.min_size, self.max_size))

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (1, 3, h, w) float32 normalised network input."""
        image = self.network_input(image)
        return ((image.transpose(2, 0, 1).astype(np.float32) - self.mean) / self.std)[None]

    def __call__(self, image: np.ndarray) -> Dict:
        x = self.preprocess(image)
        mask_cls, mask_pred = self.session.run(None, {self.session.get_inputs()[0].name: x})
        size = x.shape[-2:]
        div = max(int(self.info["size_divisibility"]), 1)
        padded = tuple(-(-s // div) * div for s in size)
        expected = (1, self.info["num_queries"], self.info["num_classes"] + 1)
        if mask_cls.shape != expected or mask_pred.shape[:2] != expected[:2]:
            raise PredictorError(
                f"{self.model_path} does not fit {INFO_FILE}: outputs of shapes {mask_cls.shape}, "
                f"{mask_pred.shape} for an input of {x.shape}; num_queries {expected[1]} and num_classes "
                f"{expected[2] - 1} expect {expected} and (1, {expected[1]}, h, w)")
        return self.postprocess(mask_cls[0], mask_pred[0], padded, size, image.shape[:2],
                                self.settings, self.is_thing, dense=self.dense_block)

    def enabled_tasks(self) -> List[str]:
        return [t for t in TASKS if getattr(self.settings, f"{t}_on")]


def read_image(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableImage(f"{path}: cannot read this file as an image")
    return image


# ----------------------------------------------------------------------------- drawing
def _color(predictor: "OnnxPredictor", category: int, instance: Optional[int] = None) -> Tuple[int, int, int]:
    """BGR color of a class: the dataset's (class_colors, RGB) or a fixed random one; with
    ``instance``, shifted a little per instance so that touching objects of one class differ."""
    colors = predictor.class_colors
    if colors and 0 <= category < len(colors):
        color = np.asarray(colors[category][::-1], np.int64)
    else:
        color = np.random.default_rng(category).integers(40, 256, 3)
    if instance is not None:
        color = np.clip(color + np.random.default_rng(1000 + instance).integers(-40, 41, 3), 0, 255)
    return tuple(int(c) for c in color)


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
            _blend(canvas, labels == category, _color(predictor, int(category)))
            labelled.append((labels == category, _label(predictor, int(category))))
    elif task == "panoptic":
        ids, segments = outputs["panoptic_seg"]
        for segment in segments:
            mask = ids == segment["id"]
            instance = segment["id"] if segment["isthing"] else None
            _blend(canvas, mask, _color(predictor, segment["category_id"], instance))
            labelled.append((mask, _label(predictor, segment["category_id"])))
    else:
        found = outputs["instances"]
        for i in np.flatnonzero(found["scores"] > confidence_threshold):
            mask, category = found["pred_masks"][i], int(found["pred_classes"][i])
            color = _color(predictor, category, int(i))
            _blend(canvas, mask, color)
            x0, y0, x1, y1 = (int(v) for v in found["pred_boxes"][i])
            cv2.rectangle(canvas, (x0, y0), (x1, y1), color, 1)
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
    parser.add_argument("--min-size", type=int, help=f"test-time shortest edge (default: {INFO_FILE}'s)")
    parser.add_argument("--max-size", type=int, help=f"test-time longest edge cap (default: {INFO_FILE}'s)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, metavar="T",
                        help="instances scoring at most this are not drawn (default 0.5)")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--save-outputs", action="store_true", help="also write OUTDIR/NAME.npz")
    return parser


def predict_and_draw(args: argparse.Namespace) -> int:
    """Status 0, or 1 when an image could not be read; raises PredictorError for the model."""
    predictor = OnnxPredictor(args.model, args.min_size, args.max_size, args.threads)
    enabled = predictor.enabled_tasks()
    task = args.task or (enabled[0] if enabled else None)
    if task not in enabled:
        raise PredictorError(f"--task {task}: {INFO_FILE} turns on {', '.join(enabled) or 'no output'}")
    os.makedirs(args.output, exist_ok=True)
    status = 0
    for path in args.input:
        try:
            image = read_image(path)
        except UnreadableImage as e:
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


def main(argv=None) -> int:
    try:
        return predict_and_draw(get_parser().parse_args(argv))
    except PredictorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    keep_freed_memory()  # process-wide: the command line's, not a caller's of main()
    sys.exit(main())
