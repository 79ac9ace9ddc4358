"""
Where the demo's results go, apart from the drawings of images: the checks of output paths
(run before the model is built), video files (reading frames, choosing a codec that this
OpenCV build can write) and the saved predictions (``--save-predictions``).

Used by ``demo/demo.py``, which imports it from its own folder as it imports ``predictor``.
"""

import contextlib
import logging
import math
import os
import tempfile
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import tqdm

from mask2former.evaluation.prediction_writers import PredictionWriter

# the module next to this one: `python demo/demo.py` puts demo/ first on sys.path
from predictor import DemoError, VisualizationDemo

logger = logging.getLogger("demo")

WINDOW_NAME = "Mask2Former"
# video codecs to try, by output extension, most widely supported first
VIDEO_CODECS = {".mp4": ("mp4v", "avc1"), ".avi": ("MJPG", "XVID"), ".mkv": ("mp4v", "X264")}
# OpenCV's built-in writer: works without FFmpeg
FALLBACK_VIDEO = (".avi", "MJPG")
# called with the index of an image (or frame) and its predictions
SavePredictions = Callable[[int, Dict], None]


# ----------------------------------------------------------------------------- output paths
def refuse_overwriting(inputs: List[str], outputs: List[str]) -> None:
    """Raise :class:`DemoError` when an output path is also an input."""
    clash = set(map(os.path.abspath, inputs)) & set(map(os.path.abspath, outputs))
    if clash:
        raise DemoError(f"Output {sorted(clash)[0]!r} is also an input: choose another --output")


def check_output_dir(path: str, what: str = "output folder") -> None:
    """Create the folder ``path`` if needed and check that a file can be written in it;
    ``what`` names it in the error."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise DemoError(f"{what[0].upper() + what[1:]} {path!r} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        # permission bits do not tell (root, read-only file systems): try it
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise DemoError(f"Cannot write to {what} {path!r}: {e.strerror or e}") from None


def check_output_file(path: str) -> None:
    """Check that the file ``path`` can be written, creating its folder if needed."""
    if os.path.isdir(path):
        raise DemoError(f"Output {path!r} is a folder, not a file name")
    check_output_dir(os.path.dirname(path) or ".")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise DemoError(f"Cannot overwrite output file {path!r}: permission denied")


def has_extension(path: str, extensions) -> bool:
    """Whether ``path``'s extension, in lower case, is one of ``extensions``."""
    return os.path.splitext(path)[1].lower() in extensions


def video_output_path(video_input: str, output: str) -> str:
    """``output`` if it has a video extension, else ``output/<video name>`` (.mp4 for other
    extensions). Checks that it can be written."""
    if has_extension(output, VIDEO_CODECS) and not os.path.isdir(output):
        path = output
    else:
        check_output_dir(output)
        stem, ext = os.path.splitext(os.path.basename(video_input))
        path = os.path.join(output, stem + (ext if ext.lower() in VIDEO_CODECS else ".mp4"))
    refuse_overwriting([video_input], [path])
    check_output_file(path)
    return path


def open_video_writer(
    path: str, fps: float, size: Tuple[int, int]
) -> Tuple[cv2.VideoWriter, str, str]:
    """
    A video writer for ``path`` with the first codec of its extension that this OpenCV build
    can write, else an MJPG .avi next to it.

    Args:
        size: (width, height) of the frames.
    Returns:
        the opened writer, the path it writes and the codec.
    """
    extension = os.path.splitext(path)[1].lower()
    candidates = [(path, codec) for codec in VIDEO_CODECS.get(extension, ())]
    fallback = os.path.splitext(path)[0] + FALLBACK_VIDEO[0]
    candidates.append((fallback, FALLBACK_VIDEO[1]))
    for out_path, codec in dict.fromkeys(candidates):  # the fallback may be a candidate
        writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*codec), fps, size)
        if writer.isOpened():
            if out_path != path:
                logger.warning(f"No codec could write {path!r}: writing {out_path!r} instead")
            return writer, out_path, codec
        writer.release()
    tried = ", ".join(f"{codec} ({os.path.basename(p)})" for p, codec in candidates)
    raise DemoError(f"Cannot open a video writer for {path!r}; tried codecs {tried}")


def show_frame(image: np.ndarray, wait_ms: int) -> bool:
    """Show a BGR image; False when the user pressed Esc."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        cv2.imshow(WINDOW_NAME, image)
        return cv2.waitKey(wait_ms) != 27
    except cv2.error as e:
        raise DemoError(f"Cannot show a window ({e.err}): give --output to write files") from None


# ----------------------------------------------------------------------------- videos
def open_video(path: str) -> cv2.VideoCapture:
    """The video file ``path`` opened for reading; :class:`DemoError` when it is missing or
    not a video OpenCV can read."""
    if not os.path.isfile(path):
        raise DemoError(f"Video {path!r} does not exist")
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        raise DemoError(f"Cannot open video {path!r}: not a video OpenCV can read")
    return video


def run_on_video(
    demo: VisualizationDemo,
    video: cv2.VideoCapture,
    output: Optional[str],
    save: Optional[SavePredictions] = None,
) -> Tuple[int, Optional[str]]:
    """
    Predict every frame, pass the predictions to ``save`` and draw them into the video file
    ``output`` (or a window; nothing is drawn when ``save`` is given without output).

    Returns:
        the number of frames processed and the file written (another name if no codec could write
        ``output``; None without output).
    """
    fps = video.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and fps > 0):  # 0 or NaN for some streams
        fps = 30.0
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    writer, count = None, 0
    try:
        show = output is None and save is None
        frames = demo.predict_video(video, draw=output is not None or show)
        bar = tqdm.tqdm(frames, desc="frames", unit="frame", total=total if total > 0 else None)
        for predictions, frame in bar:
            if save is not None:
                save(count, predictions)
            count += 1
            if frame is None:
                continue
            if output is None:
                if not show_frame(frame, 1):
                    break
                continue
            if writer is None:
                # sized from the first frame: OpenCV may rotate frames by the video's metadata
                size = (frame.shape[1], frame.shape[0])
                writer, output, codec = open_video_writer(output, fps, size)
                logger.info(f"Writing {output} ({size[0]}x{size[1]}, {fps:g} fps, codec {codec})")
            writer.write(frame)
    finally:
        video.release()
        if writer is not None:
            writer.release()
    return count, output


# ----------------------------------------------------------------------------- saving
@contextlib.contextmanager
def saving_predictions(
    save_dir: Optional[str], demo: VisualizationDemo, name_and_id: Callable[[int], tuple]
) -> Iterator[Optional[SavePredictions]]:
    """The ``save`` function of a run (None without ``save_dir``); name_and_id(index) gives the
    file stem and image id of an input. The json files are written when the run ends."""
    if save_dir is None:
        yield None
        return
    writer = PredictionWriter(save_dir, demo.metadata)
    try:
        yield lambda i, predictions: writer.write(*name_and_id(i), predictions)
    finally:
        written = writer.close()
        listed = f": {', '.join(written)}" if written else ""
        logger.info(f"Saved predictions in {save_dir}{listed}")
