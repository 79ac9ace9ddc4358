#!/usr/bin/env python
r"""
A web page for a Mask2Former model (Gradio), served on 127.0.0.1 only:

    python demo/app.py --config-file CONFIG [--port 7860] [--examples DIR] [KEY VALUE ...]
    make web-demo WEB_CONFIG=CONFIG WEIGHTS=model_final.pth PORT=7860

Upload an image (or pick an example), choose the task (panoptic, instance or semantic) and the
confidence threshold; the page shows the drawing (as demo/demo.py draws it), a table of the drawn
segments (class, score, area in % of the image) and the predictions as files in the formats of
``demo.py --save-predictions`` (every output the config turns on, unfiltered), also as one zip.

The page makes no outbound connection: no share link, no analytics, no Hugging Face hub look-up,
the theme's fonts are served by the page itself. The logic (prediction, drawing, rows, files)
is in :class:`WebDemo` and :func:`segment_rows`, usable without a browser.

Exit status: 2 for bad settings (config, checkpoint, examples folder), before the server starts.
"""

import os

# before gradio and huggingface_hub are imported: they read these at import time
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
os.environ.update(OFFLINE_ENV)

import argparse  # noqa: E402
import copy  # noqa: E402
import html  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from typing import Any, Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import UnidentifiedImageError  # noqa: E402

from detectron2.data.detection_utils import read_image  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from mask2former.config import build_config  # noqa: E402
from mask2former.evaluation.prediction_writers import PredictionWriter  # noqa: E402
from mask2former.hf_conversion import HFConversionError  # noqa: E402
from mask2former.modeling.postprocessing import semantic_labels  # noqa: E402
from mask2former.utils.config_merge import ConfigError  # noqa: E402
from mask2former.utils.cpu_allocator import keep_freed_memory_on_cpu  # noqa: E402

# the module next to this script: `python demo/app.py` puts demo/ first on sys.path
from predictor import (  # noqa: E402
    DemoError,
    VisualizationDemo,
    choose_task,
    demo_metadata,
    enabled_tasks,
)

logger = logging.getLogger("demo")

HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "examples")
EXAMPLE_EXTENSIONS = (".jpg", ".jpeg", ".png")
COLUMNS = ("class", "score", "area %")
# one table row: class name, score ("" where the task gives none), area in % of the image
SegmentRow = Tuple[str, str, str]


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Mask2Former web demo (Gradio) on http://127.0.0.1:PORT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", DEFAULT_PORT)),
        help=f"port on {HOST} (default: $PORT, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--examples",
        default=DEFAULT_EXAMPLES,
        metavar="DIR",
        help="folder of example images offered on the page (default: demo/examples)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE ..., e.g. MODEL.WEIGHTS model_final.pth",
    )
    return parser


# ----------------------------------------------------------------------------- rows
def _fraction_text(pixels: int, total: int) -> str:
    return f"{100.0 * pixels / total:.2f}"


def segment_rows(
    predictions: Dict[str, Any], task: str, metadata: Any, confidence_threshold: float = 0.5
) -> List[SegmentRow]:
    """
    The rows of the segments table: one per segment that the drawing of ``task`` shows.

    - panoptic: each segment of ``predictions["panoptic_seg"]``, by id; no score (the panoptic
      merge gives none);
    - instance: each instance scoring above ``confidence_threshold`` (as the drawing), in the
      model's order (by score);
    - semantic: each class of the argmax of ``predictions["sem_seg"]`` (K, H, W) (or of its
      label form, "sem_seg_labels"), by decreasing area; score = the mean of its score over
      its pixels.

    Scores have 3 decimals, areas (in % of the image) 2.
    """
    if task == "panoptic":
        panoptic_seg, segments_info = predictions["panoptic_seg"]
        ids, counts = torch.unique(panoptic_seg.cpu(), return_counts=True)
        area = dict(zip(ids.tolist(), counts.tolist()))
        rows = []
        for info in sorted(segments_info, key=lambda s: s["id"]):
            classes = metadata.thing_classes if info["isthing"] else metadata.stuff_classes
            pixels = _fraction_text(area.get(info["id"], 0), panoptic_seg.numel())
            rows.append((classes[info["category_id"]], "", pixels))
        return rows
    if task == "instance":
        instances = predictions["instances"].to("cpu")
        instances = instances[instances.scores > confidence_threshold]
        total = instances.image_size[0] * instances.image_size[1]
        pixels = instances.pred_masks.flatten(1).sum(1).tolist()
        return [
            (metadata.thing_classes[c], f"{s:.3f}", _fraction_text(p, total))
            for c, s, p in zip(instances.pred_classes.tolist(), instances.scores.tolist(), pixels)
        ]
    if task == "semantic":
        labels, scores = (t.cpu() for t in semantic_labels(predictions, with_scores=True))
        classes, counts = torch.unique(labels, return_counts=True)
        order = sorted(zip(counts.tolist(), classes.tolist()), key=lambda t: (-t[0], t[1]))
        return [
            (
                metadata.stuff_classes[c],
                f"{scores[labels == c].mean().item():.3f}",
                _fraction_text(n, labels.numel()),
            )
            for n, c in order
        ]
    raise DemoError(f"Unknown task {task!r}")


def rows_html(rows: List[SegmentRow]) -> str:
    """The segments table as HTML: gradio's Dataframe (a virtual list) kept showing one row
    after a result of one row was replaced by one of three."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    caption = f"Segments: {len(rows)}" if rows else "Segments: none"
    return (
        f"<table><caption>{caption}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


# ----------------------------------------------------------------------------- files
def save_prediction_files(
    predictions: Dict[str, Any], metadata: Any, folder: str, name: str
) -> List[str]:
    """
    Writes ``predictions`` into ``folder`` as ``demo.py --save-predictions`` does (image id and
    file stem ``name``) and returns the files to download: ``folder``.zip first, then each file,
    its sub-folder in its name (``panoptic_NAME.png``, ``sem_seg_NAME.png``, the json files).
    """
    saved = os.path.join(folder, "predictions")
    os.makedirs(saved)
    with PredictionWriter(saved, metadata) as writer:
        writer.write(name, name, predictions)
    archive = shutil.make_archive(os.path.join(folder, f"{name}_predictions"), "zip", saved)
    files = [archive]
    for root, _, names in sorted(os.walk(saved)):
        sub = os.path.relpath(root, saved)
        for file_name in sorted(names):
            flat = file_name if sub == "." else f"{sub.replace(os.sep, '_')}_{file_name}"
            files.append(shutil.copyfile(os.path.join(root, file_name), os.path.join(folder, flat)))
    return files


# ----------------------------------------------------------------------------- app logic
def read_upload(path: str, name: Optional[str] = None) -> np.ndarray:
    """The image file ``path`` as BGR (H, W, 3) uint8, read as demo.py reads it; a file that is
    not a readable image raises :class:`DemoError` naming it (``name``: its uploaded name)."""
    shown = name or os.path.basename(path)
    try:
        return read_image(path, format="BGR")
    except UnidentifiedImageError:
        reason = "not an image format this page can decode (JPEG, PNG, BMP, TIFF, WebP, ...)"
    except Exception as e:  # truncated file, unsupported mode ...
        reason = str(e).replace(path, shown)
    raise DemoError(f"Cannot read {shown!r} as an image: {reason}")


class WebDemo:
    """The model behind the page: predict one image, draw a task, list its segments, save files."""

    def __init__(self, cfg, work_dir: str):
        """
        Args:
            cfg: the model's config; MODEL.WEIGHTS is loaded and checked (:class:`DemoError`).
            work_dir: folder for the prediction files of each request.
        """
        self.cfg = cfg
        self.tasks = enabled_tasks(cfg)
        try:
            self.demo = VisualizationDemo(cfg, task=choose_task(cfg))
        except HFConversionError as e:  # MODEL.WEIGHTS names a directory that is no HF Mask2Former
            raise DemoError(f"MODEL.WEIGHTS: {e}") from None
        self.work_dir = work_dir
        self._requests = 0

    def view(self, task: str, confidence_threshold: float) -> VisualizationDemo:
        """The demo drawing ``task`` with ``confidence_threshold``, sharing the loaded model."""
        if not 0.0 <= confidence_threshold <= 1.0:
            raise DemoError(f"Confidence threshold {confidence_threshold}: must be in [0, 1]")
        view = copy.copy(self.demo)
        view.task = choose_task(self.cfg, task)
        view.metadata = demo_metadata(self.cfg, view.task)
        view.confidence_threshold = confidence_threshold
        return view

    def run(
        self, image_path: str, name: Optional[str], task: str, confidence_threshold: float
    ) -> Tuple[np.ndarray, List[SegmentRow], List[str]]:
        """
        Args:
            image_path: the image file; name: its name for messages and saved files.
        Returns:
            the drawing RGB (H, W, 3) uint8, the table rows and the files to download.
        """
        view = self.view(task, confidence_threshold)
        image = read_upload(image_path, name)
        predictions, vis = view.run_on_image(image)
        logger.info(
            f"{name or image_path}: {view.summary(predictions)} ({view.task}, confidence "
            f"threshold {confidence_threshold:g})"
        )
        rows = segment_rows(predictions, view.task, view.metadata, confidence_threshold)
        self._requests += 1
        folder = os.path.join(self.work_dir, f"request_{self._requests:06d}")
        stem = os.path.splitext(os.path.basename(name or image_path))[0] or "image"
        files = save_prediction_files(predictions, view.metadata, folder, stem)
        return vis.get_image(), rows, files


def example_images(folder: str) -> List[str]:
    """The images of ``folder`` the page offers as examples, sorted; raises :class:`DemoError`
    if it is not a folder."""
    if not os.path.isdir(folder):
        raise DemoError(f"--examples {folder!r} is not a folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(EXAMPLE_EXTENSIONS))
    return [os.path.join(folder, n) for n in names]


def build_page(web: WebDemo, examples: List[str], title: str):
    """The Gradio page (``gradio.Blocks``) of ``web``."""
    import gradio as gr

    def handle(upload: Optional[Dict[str, Any]], task: str, threshold: float):
        # the image arrives unprocessed (preprocess=False): this app decodes it, so that an
        # undecodable file gets this app's message instead of gradio's generic error
        if not upload or not upload.get("path"):
            raise gr.Error("Upload an image or pick an example first")
        try:
            drawing, rows, files = web.run(
                upload["path"], upload.get("orig_name"), task, float(threshold)
            )
        except DemoError as e:
            raise gr.Error(str(e)) from None
        return drawing, rows_html(rows), files

    with gr.Blocks(title="Mask2Former", analytics_enabled=False) as page:
        gr.Markdown(f"## Mask2Former\n{title}")
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Image", type="filepath", sources=["upload"], elem_id="image"
                )
                task = gr.Radio(list(web.tasks), value=web.demo.task, label="Task", elem_id="task")
                threshold = gr.Slider(
                    0.0, 1.0, value=web.demo.confidence_threshold, step=0.05,
                    label="Confidence threshold (instances scoring at most this are not shown)",
                    elem_id="threshold",
                )
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
                if examples:
                    gr.Examples(
                        examples=[[p] for p in examples], inputs=[image], label="Examples",
                        elem_id="examples",
                    )
            with gr.Column():
                drawing = gr.Image(
                    label="Drawing", interactive=False, format="png", elem_id="drawing"
                )
                table = gr.HTML(rows_html([]), label="Segments", elem_id="segments")
                files = gr.File(
                    label="Predictions (zip, or each file: demo.py --save-predictions formats)",
                    file_count="multiple", interactive=False, elem_id="files",
                )
        submit.click(
            handle, [image, task, threshold], [drawing, table, files], preprocess=False
        )
    return page


def main(argv: Optional[List[str]] = None) -> int:
    """Serve the page until interrupted; returns the exit status (see the module doc)."""
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        cfg, notes = build_config(args)
        for note in notes:
            logger.warning(note)
        examples = example_images(args.examples)
        keep_freed_memory_on_cpu(cfg.MODEL.DEVICE)
        with tempfile.TemporaryDirectory(prefix="mask2former_web_") as work_dir:
            web = WebDemo(cfg, work_dir)
            title = f"`{args.config_file}`, weights `{cfg.MODEL.WEIGHTS or 'random'}`"
            page = build_page(web, examples, title)
            logger.info(f"Serving on http://{HOST}:{args.port}")
            try:
                page.launch(
                    server_name=HOST,
                    server_port=args.port,
                    share=False,
                    show_error=True,
                    ssr_mode=False,
                    allowed_paths=[os.path.abspath(args.examples)],
                )
            except OSError as e:  # the port is taken
                where = f"{HOST}:{args.port} (--port / $PORT)"
                raise DemoError(f"Cannot serve on {where}: {e}") from None
    except (DemoError, ConfigError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    setup_logger(name="demo", abbrev_name="demo")
    sys.exit(main())


if __name__ == "__main__":
    cli()
