"""
Run a Mask2Former model on images or video frames and draw its predictions with detectron2's
``Visualizer`` / ``VideoVisualizer``.

:class:`VisualizationDemo` runs the model in this process (detectron2's ``DefaultPredictor``)
or, with ``parallel=True`` on a machine with GPUs, in one worker process per GPU
(:class:`AsyncPredictor`).
"""

import atexit
import logging
import multiprocessing as mp
import queue
from collections import deque
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.engine.defaults import DefaultPredictor
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, VisImage, Visualizer

import mask2former  # noqa: F401  (registers the model components and the built-in datasets)
from mask2former.checkpoint import CheckpointMismatchError, CheckpointReadError, load_model_weights
from mask2former.modeling.postprocessing import semantic_labels

__all__ = [
    "TASKS",
    "DemoError",
    "enabled_tasks",
    "choose_task",
    "demo_metadata",
    "build_predictor",
    "AsyncPredictor",
    "VisualizationDemo",
]

logger = logging.getLogger("demo")

# richest first: the default task is the first one the config turns on
TASKS = ("panoptic", "instance", "semantic")
_TASK_FLAGS = {"panoptic": "PANOPTIC_ON", "instance": "INSTANCE_ON", "semantic": "SEMANTIC_ON"}
# metadata fields the Visualizer reads to name and color each task's classes
_TASK_METADATA = {
    "panoptic": ("thing_classes", "stuff_classes"),
    "instance": ("thing_classes",),
    "semantic": ("stuff_classes",),
}


class DemoError(RuntimeError):
    """Bad input or settings, described for the user in a message (shown without traceback)."""


# ----------------------------------------------------------------------------- config
def enabled_tasks(cfg: CfgNode) -> List[str]:
    """The tasks (of :data:`TASKS`, in that order) that ``MODEL.MASK_FORMER.TEST`` turns on."""
    test = cfg.MODEL.MASK_FORMER.TEST
    return [task for task in TASKS if test.get(_TASK_FLAGS[task])]


def choose_task(cfg: CfgNode, task: Optional[str] = None) -> str:
    """
    ``task`` if the config turns it on, else raise :class:`DemoError`; with ``task=None``, the
    richest task the config turns on (panoptic > instance > semantic).
    """
    enabled = enabled_tasks(cfg)
    if task is None:
        if not enabled:
            raise DemoError(
                "MODEL.MASK_FORMER.TEST turns on none of PANOPTIC_ON, INSTANCE_ON, SEMANTIC_ON"
            )
        return enabled[0]
    if task not in TASKS:
        raise DemoError(f"Unknown task {task!r}; choose among {list(TASKS)}")
    if task not in enabled:
        raise DemoError(
            f"--task {task}: MODEL.MASK_FORMER.TEST.{_TASK_FLAGS[task]} is False in the config "
            f"(it turns on: {', '.join(enabled) or 'nothing'}); choose one of those or set "
            f"MODEL.MASK_FORMER.TEST.{_TASK_FLAGS[task]} True"
        )
    return task


def demo_metadata(cfg: CfgNode, task: str):
    """
    The metadata (class names and colors) of ``DATASETS.TEST[0]``, or ``DATASETS.TRAIN[0]``
    when there is no test set; raises :class:`DemoError` if it lacks the fields ``task`` needs.
    """
    for key in ("TEST", "TRAIN"):
        names = cfg.DATASETS.get(key)
        if names:
            source, name = f"DATASETS.{key}[0]", names[0]
            break
    else:
        raise DemoError("DATASETS.TEST and DATASETS.TRAIN are empty: no metadata to name classes")
    metadata = MetadataCatalog.get(name)
    missing = [k for k in _TASK_METADATA[task] if metadata.get(k) is None]
    if missing:
        raise DemoError(
            f"Dataset {name!r} ({source}) has no metadata {missing} to draw {task} predictions; "
            f"register it (or use another dataset name in the config)"
        )
    return metadata


# ----------------------------------------------------------------------------- model
def build_predictor(cfg: CfgNode, predictor_class=DefaultPredictor) -> DefaultPredictor:
    """detectron2's ``DefaultPredictor`` (or ``predictor_class``, a subclass) for ``cfg``, with
    the checked weights of MODEL.WEIGHTS."""
    unloaded = cfg.clone()
    unloaded.defrost()
    # DefaultPredictor loads without checking: it only logs parameters that do not fit
    unloaded.MODEL.WEIGHTS = ""
    unloaded.freeze()
    try:
        predictor = predictor_class(unloaded)
    except (KeyError, ValueError) as e:  # the model's builders name the config key at fault
        raise DemoError(f"Cannot build the model of the config: {e}") from None
    if cfg.MODEL.WEIGHTS:
        try:
            load_model_weights(predictor.model, cfg.MODEL.WEIGHTS)  # every key must fit
        except (FileNotFoundError, CheckpointReadError, CheckpointMismatchError) as e:
            raise DemoError(f"MODEL.WEIGHTS: {e}") from None
        logger.info(f"Loaded MODEL.WEIGHTS {cfg.MODEL.WEIGHTS}")
    else:
        logger.warning("MODEL.WEIGHTS is empty: the model has random weights")
    return predictor


# ----------------------------------------------------------------------------- parallel
def _metadata_snapshot(cfg: CfgNode) -> Dict[str, dict]:
    """The metadata of the config's datasets, for worker processes where they are unregistered."""
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    return {n: MetadataCatalog.get(n).as_dict() for n in names if n in MetadataCatalog.list()}


class _PredictorWorker(mp.Process):
    """Builds a predictor on its device and answers ``(index, BGR image)`` tasks."""

    def __init__(self, cfg: CfgNode, metadata: Dict[str, dict], tasks, results):
        super().__init__(daemon=True)
        self.cfg, self.metadata, self.tasks, self.results = cfg, metadata, tasks, results

    def run(self) -> None:
        for name, fields in self.metadata.items():
            if name not in MetadataCatalog.list():
                MetadataCatalog.get(name).set(**{k: v for k, v in fields.items() if k != "name"})
        try:
            predictor = build_predictor(self.cfg)
        except Exception as e:
            self.results.put(("error", f"{type(e).__name__}: {e}"))
            return
        self.results.put(("ready", None))
        while True:
            task = self.tasks.get()
            if task is None:
                break
            index, image = task
            self.results.put((index, predictor(image)))


class AsyncPredictor:
    """
    Runs the model in worker processes, one per GPU (one on the CPU when ``num_gpus`` is 0),
    and returns predictions in the order the images were put. ``put`` several images before
    ``get`` to keep every worker busy (:attr:`default_buffer_size` of them).
    """

    # seconds between checks that the workers are still alive while waiting for a result
    _POLL_S = 5.0

    def __init__(self, cfg: CfgNode, num_gpus: int = 1):
        num_workers = max(num_gpus, 1)
        # "spawn": CUDA cannot be used in forked children
        ctx = mp.get_context("spawn")
        # bounded tasks hold back a fast producer; unbounded results never block a worker, so
        # any number of `put` before `get` cannot deadlock
        self._tasks = ctx.Queue(maxsize=num_workers * 3)
        self._results = ctx.Queue()
        metadata = _metadata_snapshot(cfg)
        self._workers = []
        for gpu in range(num_workers):
            worker_cfg = cfg.clone()
            worker_cfg.defrost()
            worker_cfg.MODEL.DEVICE = f"cuda:{gpu}" if num_gpus > 0 else "cpu"
            worker_cfg.freeze()
            self._workers.append(_PredictorWorker(worker_cfg, metadata, self._tasks, self._results))
        for worker in self._workers:
            worker.start()
        atexit.register(self.shutdown)
        for _ in self._workers:
            status, message = self._next_result()
            if status == "error":
                self.shutdown()
                raise DemoError(f"A predictor worker process failed to start: {message}")
        self._put_count = 0
        self._get_count = 0
        # results that arrived before their turn (another worker was faster), by index
        self._arrived: Dict[int, Dict] = {}

    def _next_result(self):
        while True:
            try:
                return self._results.get(timeout=self._POLL_S)
            except queue.Empty:
                dead = [w for w in self._workers if not w.is_alive()]
                if dead:
                    raise DemoError(
                        f"A predictor worker process died (exit code {dead[0].exitcode})"
                    ) from None

    def put(self, image: np.ndarray) -> None:
        """Queue a BGR image (H, W, 3) uint8."""
        self._put_count += 1
        self._tasks.put((self._put_count, image))

    def get(self) -> Dict:
        """The predictions for the oldest image put and not yet returned."""
        self._get_count += 1
        while self._get_count not in self._arrived:
            index, result = self._next_result()
            self._arrived[index] = result
        return self._arrived.pop(self._get_count)

    def __len__(self) -> int:
        return self._put_count - self._get_count

    def __call__(self, image: np.ndarray) -> Dict:
        self.put(image)
        return self.get()

    def shutdown(self) -> None:
        for worker in self._workers:
            if worker.is_alive():
                self._tasks.put(None)
        for worker in self._workers:
            worker.join(timeout=10)
        self._workers = []

    @property
    def default_buffer_size(self) -> int:
        return len(self._workers) * 5


# ----------------------------------------------------------------------------- drawing
class VisualizationDemo:
    """
    Predict and draw one task (panoptic, instance or semantic segmentation) with the metadata of
    the config's dataset.
    """

    def __init__(
        self,
        cfg: CfgNode,
        task: Optional[str] = None,
        instance_mode: ColorMode = ColorMode.IMAGE,
        parallel: bool = False,
        confidence_threshold: float = 0.5,
    ):
        """
        Args:
            cfg: the model's config; MODEL.WEIGHTS is loaded and must fit the model.
            task: "panoptic", "instance" or "semantic"; by default the richest the config
                turns on (see :func:`choose_task`).
            instance_mode: how the Visualizer colors instances.
            parallel: one worker process per GPU; without GPUs, a warning and one process.
            confidence_threshold: instances scoring at most this are not drawn.
        """
        self.task = choose_task(cfg, task)
        self.metadata = demo_metadata(cfg, self.task)
        self.instance_mode = instance_mode
        self.confidence_threshold = confidence_threshold
        self.cpu_device = torch.device("cpu")
        num_gpus = torch.cuda.device_count()
        if parallel and num_gpus == 0:
            logger.warning("--parallel needs GPUs and none is available: running in one process")
        self.parallel = parallel and num_gpus > 0
        self.predictor = AsyncPredictor(cfg, num_gpus) if self.parallel else build_predictor(cfg)

    def _task_output(self, predictions: Dict) -> tuple:
        """The chosen task's output on the CPU, as the visualizers' drawing functions take it."""
        if self.task == "panoptic":
            panoptic_seg, segments_info = predictions["panoptic_seg"]
            return panoptic_seg.to(self.cpu_device), segments_info
        if self.task == "instance":
            instances = predictions["instances"].to(self.cpu_device)
            instances = instances[instances.scores > self.confidence_threshold]
            return (instances,)  # drawn with their pred_boxes, the masks' tight boxes
        return (semantic_labels(predictions).to(self.cpu_device),)  # either form of the output

    def summary(self, predictions: Dict) -> str:
        """What is drawn of ``predictions``, e.g. "3 instances"."""
        output = self._task_output(predictions)
        if self.task == "panoptic":
            count, noun = len(output[1]), "segment"
        elif self.task == "instance":
            count, noun = len(output[0]), "instance"
        else:
            count, noun = len(output[0].unique()), "class"
        return f"{count} {noun}" + ("" if count == 1 else "es" if noun == "class" else "s")

    def _draw(self, visualizer, *args) -> VisImage:
        # Visualizer and VideoVisualizer name their panoptic functions differently; the
        # VideoVisualizer's take the frame first (in `args`)
        if self.task == "panoptic":
            if isinstance(visualizer, VideoVisualizer):
                return visualizer.draw_panoptic_seg_predictions(*args)
            return visualizer.draw_panoptic_seg(*args)
        if self.task == "instance":
            return visualizer.draw_instance_predictions(*args)
        return visualizer.draw_sem_seg(*args)

    def run_on_image(self, image: np.ndarray) -> Tuple[Dict, VisImage]:
        """
        Args:
            image: a BGR image (H, W, 3) uint8, as cv2 reads it.

        Returns:
            the model's predictions (all the outputs the config turns on) and the drawing of
            the chosen task, of the image's size.
        """
        predictions = self.predictor(image)
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        return predictions, self._draw(visualizer, *self._task_output(predictions))

    def _frames(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        while video.isOpened():
            ok, frame = video.read()
            if not ok:
                break
            yield frame

    def predict_video(
        self, video: cv2.VideoCapture, draw: bool = True
    ) -> Iterator[Tuple[Dict, Optional[np.ndarray]]]:
        """
        Args:
            video: an opened capture; every frame is read.
            draw: False to skip the drawings (None is yielded instead).

        Yields:
            per frame, in the frames' order: the model's predictions and the drawing of the
            chosen task, BGR (H, W, 3) uint8.
        """
        video_visualizer = VideoVisualizer(self.metadata, self.instance_mode)

        def result(frame: np.ndarray, predictions: Dict) -> Tuple[Dict, Optional[np.ndarray]]:
            if not draw:
                return predictions, None
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            vis = self._draw(video_visualizer, rgb, *self._task_output(predictions))
            return predictions, cv2.cvtColor(vis.get_image(), cv2.COLOR_RGB2BGR)

        if not self.parallel:
            for frame in self._frames(video):
                yield result(frame, self.predictor(frame))
            return
        # keep the workers busy: up to `buffer_size` frames in flight
        pending = deque()
        buffer_size = self.predictor.default_buffer_size
        for frame in self._frames(video):
            pending.append(frame)
            self.predictor.put(frame)
            if len(pending) >= buffer_size:
                yield result(pending.popleft(), self.predictor.get())
        while pending:
            yield result(pending.popleft(), self.predictor.get())

    def run_on_video(self, video: cv2.VideoCapture) -> Iterator[np.ndarray]:
        """
        Args:
            video: an opened capture; every frame is read.

        Yields:
            one drawing per frame, BGR (H, W, 3) uint8, in the frames' order.
        """
        for _, drawing in self.predict_video(video):
            yield drawing
