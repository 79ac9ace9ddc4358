#!/usr/bin/env python
r"""
Draw a Mask2Former model's predictions on images, a video or a webcam stream.

    python demo/demo.py --config-file CONFIG --input a.jpg b.png 'dir/*.jpg' dir/ \
        [--output OUT] [--save-predictions DIR] [--task panoptic|instance|semantic] \
        [--confidence-threshold 0.5] [--parallel] --opts MODEL.WEIGHTS model_final.pth \
        [KEY VALUE ...]
    python demo/demo.py --config-file CONFIG --video-input clip.mp4 --output OUT --opts ...
    python demo/demo.py --config-file CONFIG --webcam --opts ...

Inputs are image files, folders (their images) or glob patterns (quoted or not). --output is a
folder, or a file name for a single input image or a video; without --output the drawings are
shown in a window, unless --save-predictions is given (then nothing is drawn).

--save-predictions DIR writes every output the config turns on, for every image or video frame,
in the formats of the official tools (not filtered by --task or --confidence-threshold):
DIR/panoptic/NAME.png + DIR/panoptic.json (COCO panoptic, for panopticapi), DIR/instances.json
(COCO results: RLE masks, scores, XYWH boxes, for pycocotools) and DIR/sem_seg/NAME.png
(labels; 16-bit above id 255), all in the dataset's class ids (DATASETS.TEST[0]'s metadata,
else DATASETS.TRAIN[0]'s; contiguous ids where it has no *_dataset_id_to_contiguous_id).
NAME is the input's file name without extension (made unique, as the drawings'), or
VIDEO_000012 for frame 12 of VIDEO. Image ids: an input whose file name (without folder) is
the file name of one image of DATASETS.TEST[0] gets that image's image_id, so that the files
can be scored against the dataset's ground truth; other images get NAME, video frames their
frame index. Boxes are instances.pred_boxes as the model gives them.

Exit status: 0 when at least one input was processed, 1 when none could be,
2 for bad settings (config, task, output path, checkpoint, video).
"""

import argparse
import glob
import logging
import os
import sys
import time
from typing import List, Optional, Tuple

import cv2
import tqdm
from PIL import UnidentifiedImageError

from detectron2.data.detection_utils import read_image
from detectron2.utils.logger import setup_logger

from mask2former.config import build_config
from mask2former.evaluation.prediction_writers import dataset_image_ids
from mask2former.hf_conversion import HFConversionError
from mask2former.utils.config_merge import ConfigError
from mask2former.utils.cpu_allocator import keep_freed_memory_on_cpu

# the modules next to this script: `python demo/demo.py` puts demo/ first on sys.path
from demo_outputs import (  # noqa: F401  (open_video_writer, VIDEO_CODECS: public here too)
    VIDEO_CODECS,
    SavePredictions,
    check_output_dir,
    check_output_file,
    has_extension,
    open_video,
    open_video_writer,
    refuse_overwriting,
    run_on_video,
    saving_predictions,
    show_frame,
    video_output_path,
)
from predictor import TASKS, DemoError, VisualizationDemo, choose_task

logger = logging.getLogger("demo")

# images taken from folders and glob patterns; a file named explicitly is read whatever its name
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description="Mask2Former demo: draw a model's predictions on images or videos",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.strip().split("\n\n")[1:]),
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="image files, folders or glob patterns")
    source.add_argument("--video-input", metavar="VIDEO", help="a video file")
    source.add_argument("--webcam", action="store_true", help="the first webcam")
    parser.add_argument(
        "--output",
        help="folder for the drawings (or a file name for one image or a video); "
        "without it, they are shown in a window",
    )
    parser.add_argument(
        "--save-predictions",
        metavar="DIR",
        help="folder for the predictions in COCO panoptic / COCO results / label-PNG formats "
        "(see below)",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        help="what to draw; default: the richest the config turns on (panoptic > instance > "
        "semantic)",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        metavar="T",
        help="instances scoring at most this are not drawn (default 0.5)",
    )
    parser.add_argument(
        "--parallel", action="store_true", help="one worker process per GPU (needs GPUs)"
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE ..., e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


# ----------------------------------------------------------------------------- inputs
def _dedupe(paths: List[str]) -> List[str]:
    """``paths`` without the later mentions of a file (by absolute path), in order."""
    by_file = {}
    for path in paths:
        by_file.setdefault(os.path.abspath(path), path)
    return list(by_file.values())


def _images_in(paths: List[str]) -> List[str]:
    return sorted(
        p for p in paths if os.path.isfile(p) and p.lower().endswith(IMAGE_EXTENSIONS)
    )


def expand_inputs(specs: List[str]) -> Tuple[List[str], List[str]]:
    """
    The image files named by ``specs`` (files, folders, glob patterns), in order and without
    duplicates, and one warning per spec that names no image.
    """
    found, warnings = [], []
    for spec in specs:
        spec = os.path.expanduser(spec)
        if os.path.isfile(spec):
            found.append(spec)
        elif os.path.isdir(spec):
            images = _images_in([os.path.join(spec, f) for f in os.listdir(spec)])
            found += images
            if not images:
                kinds = "/".join(IMAGE_EXTENSIONS)
                warnings.append(f"Skipping folder {spec!r}: it holds no {kinds} image")
        elif any(c in spec for c in "*?["):
            images = _images_in(glob.glob(spec))
            found += images
            if not images:
                warnings.append(f"Skipping {spec!r}: the pattern matches no image file")
        else:
            warnings.append(f"Skipping {spec!r}: no such file or folder")
    return _dedupe(found), warnings


# ----------------------------------------------------------------------------- image outputs
def unique_names(inputs: List[str]) -> List[Tuple[str, str]]:
    """(file stem, extension) of each input, the stem made unique (a_1 after a) when inputs share
    one (same name in two folders, or a.jpg and a.png): drawings and saved predictions of one
    input get the same stem."""
    names, used = [], set()
    for path in inputs:
        stem, ext = os.path.splitext(os.path.basename(path))
        unique, n = stem, 0
        while unique in used:
            n += 1
            unique = f"{stem}_{n}"
        used.add(unique)
        names.append((unique, ext))
    return names


def image_output_paths(inputs: List[str], output: str) -> List[str]:
    """
    The drawing's path of each input: ``output`` itself for a single input when it has an image
    extension, else ``output/<input file name>`` (made unique; PNG for extensions cv2 cannot
    write). Checks that they can be written.
    """
    if has_extension(output, IMAGE_EXTENSIONS) and not os.path.isdir(output):
        if len(inputs) != 1:
            raise DemoError(
                f"Output {output!r} is an image file name but {len(inputs)} input images were "
                f"given: give a folder"
            )
        refuse_overwriting(inputs, [output])
        check_output_file(output)
        return [output]
    check_output_dir(output)
    paths = [
        os.path.join(output, stem + (ext if ext.lower() in IMAGE_EXTENSIONS else ".png"))
        for stem, ext in unique_names(inputs)
    ]
    refuse_overwriting(inputs, paths)
    return paths


def _has_display() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


# ----------------------------------------------------------------------------- runs
def run_on_images(
    demo: VisualizationDemo,
    inputs: List[str],
    outputs: Optional[List[str]],
    save: Optional[SavePredictions] = None,
) -> int:
    """
    Predict each input, pass the predictions to ``save`` and draw them into its output (or a
    window; nothing is drawn when ``save`` is given without outputs). Returns how many inputs
    were processed.
    """
    show = outputs is None and save is None
    done = 0
    for i, path in enumerate(tqdm.tqdm(inputs, desc="images", unit="image")):
        try:
            image = read_image(path, format="BGR")
        except UnidentifiedImageError:
            logger.warning(f"Skipping {path!r}: cannot read it as an image (unknown format)")
            continue
        except Exception as e:  # truncated files, unsupported modes, I/O errors ...
            logger.warning(f"Skipping {path!r}: cannot read it as an image ({e})")
            continue
        start = time.perf_counter()
        if outputs is None and not show:
            predictions, vis = demo.predictor(image), None
        else:
            predictions, vis = demo.run_on_image(image)
        logger.info(f"{path}: {demo.summary(predictions)} in {time.perf_counter() - start:.2f}s")
        if save is not None:
            save(i, predictions)
        if vis is None:
            done += 1
            continue
        drawing = vis.get_image()[:, :, ::-1]
        if outputs is None:
            done += 1
            if not show_frame(drawing, 0):
                break
        elif cv2.imwrite(outputs[i], drawing):
            done += 1
        else:
            logger.warning(f"Could not write {outputs[i]!r}")
    return done


def _demo(cfg, args) -> VisualizationDemo:
    try:
        return VisualizationDemo(
            cfg,
            task=args.task,
            parallel=args.parallel,
            confidence_threshold=args.confidence_threshold,
        )
    except HFConversionError as e:  # MODEL.WEIGHTS names a directory that is no HF Mask2Former
        raise DemoError(f"MODEL.WEIGHTS: {e}") from None


def _image_ids(cfg, inputs: List[str], stems: List[str]) -> list:
    """The image id of each input: its image_id in DATASETS.TEST[0] (by file name), else its
    stem."""
    ids = dataset_image_ids(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else {}
    return [ids.get(os.path.basename(path), stem) for path, stem in zip(inputs, stems)]


def _run_video(cfg, args) -> int:
    video = open_video(args.video_input)
    output = None if args.output is None else video_output_path(args.video_input, args.output)
    stem = os.path.splitext(os.path.basename(args.video_input))[0]
    demo = _demo(cfg, args)
    with saving_predictions(args.save_predictions, demo, lambda i: (f"{stem}_{i:06d}", i)) as save:
        frames, written = run_on_video(demo, video, output, save)
    verb = "Drew" if output is not None or args.save_predictions is None else "Predicted"
    logger.info(f"{verb} {frames} frames" + (f" into {written}" if written else ""))
    if not frames:
        logger.error(f"No frame could be read from {args.video_input!r}")
    return 0 if frames else 1


def _run_images(cfg, args) -> int:
    inputs, warnings = expand_inputs(args.input)
    for warning in warnings:
        logger.warning(warning)
    if not inputs:
        logger.error("No input image to process")
        return 1
    outputs = None if args.output is None else image_output_paths(inputs, args.output)
    stems = [stem for stem, _ in unique_names(inputs)]
    image_ids = _image_ids(cfg, inputs, stems) if args.save_predictions else stems
    demo = _demo(cfg, args)
    with saving_predictions(args.save_predictions, demo, lambda i: (stems[i], image_ids[i])) as save:
        done = run_on_images(demo, inputs, outputs, save)
    where = f" into {args.output}" if args.output else ""
    verb = "Drew" if outputs is not None or args.save_predictions is None else "Predicted"
    logger.info(f"{verb} {done} of {len(inputs)} images{where}")
    if not done:
        logger.error("No input image could be processed")
    return 0 if done else 1


def _run(args) -> int:
    cfg, notes = build_config(args)
    for note in notes:
        logger.warning(note)
    # every check that can fail fast runs before the model is built
    if args.save_predictions is not None:
        if args.webcam:
            raise DemoError("--save-predictions is not supported with --webcam")
        check_output_dir(args.save_predictions, "--save-predictions folder")
    choose_task(cfg, args.task)
    if args.output is None and args.save_predictions is None and not _has_display():
        raise DemoError("No display to show the drawings in a window: give --output")
    keep_freed_memory_on_cpu(cfg.MODEL.DEVICE)

    if args.webcam:
        if args.output is not None:
            raise DemoError("--webcam shows the drawings in a window; --output is not supported")
        webcam = cv2.VideoCapture(0)
        if not webcam.isOpened():
            raise DemoError("Cannot open the webcam (camera 0)")
        frames, _ = run_on_video(_demo(cfg, args), webcam, None)
        return 0 if frames else 1
    return _run_video(cfg, args) if args.video_input else _run_images(cfg, args)


def main(argv: Optional[List[str]] = None) -> int:
    """The demo on the command line ``argv``; returns the exit status (see the module doc)."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.confidence_threshold <= 1.0:
        parser.error(f"--confidence-threshold {args.confidence_threshold}: must be in [0, 1]")
    try:
        return _run(args)
    except (DemoError, ConfigError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


def cli() -> None:
    setup_logger(name="demo", abbrev_name="demo")
    sys.exit(main())


if __name__ == "__main__":
    cli()
