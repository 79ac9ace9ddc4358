#!/usr/bin/env python
r"""
Draw a video Mask2Former model's tracks on a video: every track in one colour in all frames.

    python demo_video/demo.py --config-file CONFIG --video-input clip.mp4 --output OUT \
        [--save-frames] [--confidence-threshold 0.5] --opts MODEL.WEIGHTS model_final.pth
    python demo_video/demo.py --config-file CONFIG --input 'frames/*.jpg' --output OUT ...
    python demo_video/demo.py --config-file CONFIG --input frames/ --output OUT ...

--input takes the frames of one video: image files (in the order given), folders (their images,
sorted by name) or glob patterns (sorted). --output is a folder: the drawn video is written
there as NAME.mp4 (NAME: the video's file name, or "visualization" for frames; an MJPG .avi
where OpenCV cannot write mp4), and with --save-frames each drawn frame as an image too (the
input frame's file name, or 00000.jpg ... for a video file). The whole clip goes through the
model at once, or in windows of MODEL.MASK_FORMER.TEST.WINDOW_SIZE frames.

Exit status: 0 on success, 2 for bad input or settings (a missing or unreadable frame, an
unreadable video, a config error), each named in a one-line message.
"""
import argparse
import glob
import logging
import os
import sys
from typing import List, Optional, Tuple

import cv2
import numpy as np
import tqdm

from detectron2.utils.logger import setup_logger

# the repository first: its `demo` package (whose model loading predictor.py reuses) must win
# over this folder's demo.py
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mask2former.config import build_config
from mask2former.utils.config_merge import ConfigError
from mask2former.utils.cpu_allocator import keep_freed_memory_on_cpu
from mask2former_video import add_maskformer2_video_config

# the module next to this script: `python demo_video/demo.py` puts demo_video/ first on sys.path
from predictor import DemoError, VisualizationDemo

logger = logging.getLogger("demo_video")

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# (extension, codec) to try for the drawn video; OpenCV's built-in MJPG writer needs no FFmpeg
VIDEO_FORMATS = ((".mp4", "mp4v"), (".avi", "MJPG"))


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: must be in [0, 1]")
    return value


def get_parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser("demo_video/demo.py", description=__doc__, formatter_class=raw)
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument("--output", required=True, help="output folder")
    threshold = "tracks scoring at most this are not drawn (default 0.5)"
    parser.add_argument("--confidence-threshold", type=_fraction, default=0.5, help=threshold)
    parser.add_argument("--save-frames", action="store_true", help="also write the drawn frames")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video-input", metavar="VIDEO", help="a video file")
    source.add_argument("--input", nargs="+", help="the frames: files, folders or glob patterns")
    overrides = "config overrides, last: KEY VALUE ..., e.g. MODEL.WEIGHTS model_final.pth"
    parser.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help=overrides)
    return parser


# ---------------------------------------------------------------------------- the frames
def frame_paths(specs: List[str]) -> List[str]:
    """The frame files named by ``specs``: files in the order given, a folder's or a pattern's
    images sorted by name. A spec naming nothing is an error that names it."""
    paths = []
    for spec in map(os.path.expanduser, specs):
        if os.path.isdir(spec):
            names = [f for f in os.listdir(spec) if f.lower().endswith(FRAME_EXTENSIONS)]
            found = sorted(os.path.join(spec, f) for f in names)
            if not found:
                raise DemoError(f"Folder {spec!r} holds no {'/'.join(FRAME_EXTENSIONS)} frame")
        elif any(c in spec for c in "*?["):
            found = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
            if not found:
                raise DemoError(f"Pattern {spec!r} matches no frame file")
        elif os.path.isfile(spec):
            found = [spec]
        else:
            raise DemoError(f"Frame file {spec!r} does not exist")
        paths += found
    return paths


def read_frames(paths: List[str]) -> List[np.ndarray]:
    """The BGR frames of ``paths``; an unreadable file is an error that names it."""
    frames = []
    for path in tqdm.tqdm(paths, desc="reading frames", unit="frame"):
        frame = cv2.imread(path, cv2.IMREAD_COLOR)
        if frame is None:
            raise DemoError(f"Cannot read frame {path!r} as an image")
        if frames and frame.shape != frames[0].shape:
            raise DemoError(
                f"Frame {path!r} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
                f"{paths[0]!r} is {frames[0].shape[1]}x{frames[0].shape[0]}: all frames of a "
                "video must have one size"
            )
        frames.append(frame)
    return frames


def read_video(path: str) -> Tuple[List[np.ndarray], float]:
    """The BGR frames and the frame rate of the video file ``path``."""
    if not os.path.isfile(path):
        raise DemoError(f"Video {path!r} does not exist")
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise DemoError(f"Cannot open video {path!r}: not a video OpenCV can read")
    fps = video.get(cv2.CAP_PROP_FPS)
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    with tqdm.tqdm(desc="reading frames", unit="frame", total=total if total > 0 else None) as bar:
        ok, frame = video.read()
        while ok:
            frames.append(frame)
            bar.update()
            ok, frame = video.read()
    video.release()
    if not frames:
        raise DemoError(f"Video {path!r} has no frame OpenCV can read")
    return frames, fps if fps and fps > 0 else 5.0


# ---------------------------------------------------------------------------- the drawings
def open_writer(stem: str, fps: float, size: Tuple[int, int]) -> Tuple[cv2.VideoWriter, str]:
    """A video writer for ``stem`` + the first extension of :data:`VIDEO_FORMATS` that this
    OpenCV build can write; ``size`` is (width, height)."""
    for extension, codec in VIDEO_FORMATS:
        writer = cv2.VideoWriter(stem + extension, cv2.VideoWriter_fourcc(*codec), fps, size)
        if writer.isOpened():
            return writer, stem + extension
        writer.release()
    raise DemoError(f"Cannot open a video writer for {stem!r} (tried {VIDEO_FORMATS})")


def write_drawings(
    demo: VisualizationDemo,
    frames: List[np.ndarray],
    output: str,
    name: str,
    fps: float,
    frame_names: Optional[List[str]],
) -> Tuple[str, int]:
    """Predict the video, write its drawing to ``output/name`` and, with ``frame_names``, each
    drawn frame to ``output/frame_name``. Returns the video's path and the number of tracks."""
    predictions, drawings = demo.run_on_video(frames)
    num_tracks = len(demo.tracks(predictions)[0])
    height, width = frames[0].shape[:2]
    writer, path = open_writer(os.path.join(output, name), fps, (width, height))
    try:
        bar = tqdm.tqdm(drawings, desc="drawing", unit="frame", total=len(frames))
        for t, drawing in enumerate(bar):
            image = drawing.get_image()[:, :, ::-1]
            writer.write(image)
            if frame_names is not None:
                frame_path = os.path.join(output, frame_names[t])
                if not cv2.imwrite(frame_path, image):
                    raise DemoError(f"Cannot write frame {frame_path!r}")
    finally:
        writer.release()
    return path, num_tracks


def _run(args) -> None:
    cfg, notes = build_config(args, extra_keys=(add_maskformer2_video_config,))
    for note in notes:
        logger.warning(note)
    # inputs are checked before the model is built
    if args.video_input:
        frames, fps = read_video(args.video_input)
        name = os.path.splitext(os.path.basename(args.video_input))[0]
        frame_names = [f"{t:05d}.jpg" for t in range(len(frames))]
    else:
        paths = frame_paths(args.input)
        frames, fps, name = read_frames(paths), 5.0, "visualization"
        frame_names = [os.path.basename(p) for p in paths]
        if len(set(frame_names)) < len(frame_names):
            frame_names = [f"{t:05d}{os.path.splitext(p)[1]}" for t, p in enumerate(paths)]
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise DemoError(f"Output {args.output!r} exists and is not a folder")
    os.makedirs(args.output, exist_ok=True)
    keep_freed_memory_on_cpu(cfg.MODEL.DEVICE)
    demo = VisualizationDemo(cfg, confidence_threshold=args.confidence_threshold)
    path, num_tracks = write_drawings(
        demo, frames, args.output, name, fps, frame_names if args.save_frames else None
    )
    logger.info(f"Drew {num_tracks} tracks on {len(frames)} frames into {path}")


def main(argv: Optional[List[str]] = None) -> int:
    """The demo on the command line ``argv``; returns the exit status (see the module doc)."""
    args = get_parser().parse_args(argv)
    try:
        _run(args)
        return 0
    except (DemoError, ConfigError) as e:
        print(f"demo_video/demo.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    for name in ("demo_video", "demo"):  # the image demo's model loading logs as "demo"
        setup_logger(name=name, abbrev_name=name)
    sys.exit(main())
