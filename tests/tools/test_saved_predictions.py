"""
demo.py --save-predictions: the saved files, scored by the official tools (panopticapi's
pq_compute, pycocotools' COCOeval) and by a confusion matrix, give the numbers of
train_net.py --eval-only on the same model and images; videos are saved per frame; an
unwritable folder is one message before the model is built.
"""
import contextlib
import io
import json
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from model_utils import REPO, make_synthetic_root

# demo.py imports `predictor` from its own folder, which `python demo/demo.py` puts on sys.path
if os.path.join(REPO, "demo") not in sys.path:
    sys.path.append(os.path.join(REPO, "demo"))
CONFIG = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
PREFIX = "_test_saved_predictions"
VAL = f"{PREFIX}_panoptic_val"
# a small model; no mask threshold so that random weights still predict segments
OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8",
    "MODEL.MASK_FORMER.DEC_LAYERS", "2",
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "10",
    "INPUT.MIN_SIZE_TEST", "64",
    "DATASETS.TEST", f"('{VAL}',)",
    "DATALOADER.NUM_WORKERS", "0",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_cli():
    from demo import demo as module

    return module


@pytest.fixture(scope="module")
def train_net():
    import train_net as module

    return module


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic_root(tmp_path_factory, PREFIX, num_train=16, num_val=4)


@pytest.fixture(scope="module")
def checkpoint(train_net, synthetic_root, tmp_path_factory):
    """
    A tiny model trained for 25 iterations (about 15 s): random weights score 0 PQ and AP,
    and metrics that are all 0 would compare nothing.
    """
    out = tmp_path_factory.mktemp("train")
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", CONFIG, *OPTS,
         "DATASETS.TRAIN", f"('{PREFIX}_panoptic_train',)", "DATASETS.TEST", "()",
         "INPUT.MIN_SIZE_TRAIN", "(64,)", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", "256",
         "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "25", "SOLVER.BASE_LR", "0.003",
         "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "0",
         "SEED", "3", "OUTPUT_DIR", str(out)]
    )
    train_net.main(args)
    return str(out / "model_final.pth")


@pytest.fixture(scope="module")
def eval_only(train_net, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", CONFIG, "--eval-only", *OPTS, "MODEL.WEIGHTS", checkpoint,
         "OUTPUT_DIR", str(out)]
    )
    return train_net.main(args)


@pytest.fixture(scope="module")
def saved(demo_cli, checkpoint, synthetic_root, tmp_path_factory):
    """The demo's predictions for the validation images, without drawings."""
    out = tmp_path_factory.mktemp("saved")
    image_root = MetadataCatalog.get(VAL).image_root
    argv = ["--config-file", CONFIG, "--input", image_root, "--save-predictions", str(out),
            "--opts", *OPTS, "MODEL.WEIGHTS", checkpoint]
    assert demo_cli.main(argv) == 0
    return out


def test_saved_files_layout(saved):
    records = DatasetCatalog.get(VAL)
    stems = sorted(os.path.splitext(os.path.basename(r["file_name"]))[0] for r in records)
    assert sorted(os.listdir(saved)) == ["instances.json", "panoptic", "panoptic.json", "sem_seg"]
    assert sorted(os.listdir(saved / "panoptic")) == [s + ".png" for s in stems]
    assert sorted(os.listdir(saved / "sem_seg")) == [s + ".png" for s in stems]
    with open(saved / "panoptic.json") as f:
        panoptic = json.load(f)
    # the dataset's image ids and category ids, not the file stems and contiguous ids
    assert sorted(a["image_id"] for a in panoptic["annotations"]) == sorted(
        r["image_id"] for r in records
    )
    dataset_ids = {c["id"] for c in panoptic["categories"]}
    assert dataset_ids == {1, 2, 4, 7, 9, 21, 22, 25}
    used = {s["category_id"] for a in panoptic["annotations"] for s in a["segments_info"]}
    assert used and used <= dataset_ids
    with open(saved / "instances.json") as f:
        instances = json.load(f)
    # at most TEST.DETECTIONS_PER_IMAGE, of which those of thing classes
    assert 0 < len(instances) <= 10 * len(records)
    assert {r["category_id"] for r in instances} <= {1, 2, 4, 7, 9}
    assert all(len(r["bbox"]) == 4 and isinstance(r["segmentation"]["counts"], str)
               for r in instances)


def test_pq_from_files_equals_eval_only(saved, eval_only):
    from panopticapi.evaluation import pq_compute

    metadata = MetadataCatalog.get(VAL)
    with contextlib.redirect_stdout(io.StringIO()):
        pq = pq_compute(
            metadata.panoptic_json, str(saved / "panoptic.json"),
            gt_folder=metadata.panoptic_root, pred_folder=str(saved / "panoptic"),
        )
    expected = eval_only["panoptic_seg"]
    assert expected["PQ"] > 0
    for name, key in (("All", "PQ"), ("Things", "PQ_th"), ("Stuff", "PQ_st")):
        assert 100 * pq[name]["pq"] == pytest.approx(expected[key], abs=1e-6)
        assert 100 * pq[name]["sq"] == pytest.approx(expected[key.replace("PQ", "SQ")], abs=1e-6)


def test_mask_ap_from_files_equals_eval_only(saved, eval_only):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(MetadataCatalog.get(VAL).json_file)
        with open(saved / "instances.json") as f:
            results = json.load(f)
        # the mask-AP protocol (detectron2's too): without boxes, areas are the masks' areas
        for r in results:
            r.pop("bbox")
        coco_eval = COCOeval(gt, gt.loadRes(results), "segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    expected = eval_only["segm"]
    stats = dict(zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], 100 * coco_eval.stats[:6]))
    assert max(stats.values()) > 0
    for key, value in stats.items():
        if not np.isnan(expected[key]):
            assert value == pytest.approx(expected[key], abs=1e-6), key


def test_miou_from_label_pngs_equals_eval_only(saved, eval_only):
    metadata = MetadataCatalog.get(VAL)
    to_contiguous = metadata.stuff_dataset_id_to_contiguous_id
    num_classes = len(metadata.stuff_classes)
    lookup = np.full(max(to_contiguous) + 1, -1)
    for dataset_id, contiguous_id in to_contiguous.items():
        lookup[dataset_id] = contiguous_id
    confusion = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for record in DatasetCatalog.get(VAL):
        stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
        saved_labels = np.asarray(Image.open(saved / "sem_seg" / f"{stem}.png"))
        assert saved_labels.dtype == np.uint8
        pred = lookup[saved_labels]
        assert (pred >= 0).all()  # only the dataset's ids
        gt = np.asarray(Image.open(record["sem_seg_file_name"])).astype(np.int64)
        gt[gt == metadata.ignore_label] = num_classes
        confusion += np.bincount(
            (num_classes + 1) * pred.ravel() + gt.ravel(), minlength=confusion.size
        ).reshape(confusion.shape)
    tp = np.diag(confusion)[:-1].astype(float)
    gt_pixels = confusion[:-1].sum(0)[:-1]  # columns: ground truth; rows: predictions
    pred_pixels = confusion[:-1, :-1].sum(1)
    valid = gt_pixels > 0
    iou = tp[valid] / (gt_pixels[valid] + pred_pixels[valid] - tp[valid])
    expected = eval_only["sem_seg"]["mIoU"]
    assert expected > 0
    assert 100 * iou.mean() == pytest.approx(expected, abs=1e-6)


def test_video_is_saved_per_frame(demo_cli, checkpoint, tmp_path):
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (80, 64))
    rng = np.random.default_rng(0)
    for _ in range(3):
        writer.write(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "saved"
    argv = ["--config-file", CONFIG, "--video-input", str(clip), "--save-predictions", str(out),
            "--opts", *OPTS, "MODEL.WEIGHTS", checkpoint]
    assert demo_cli.main(argv) == 0
    names = [f"clip_{i:06d}.png" for i in range(3)]
    assert sorted(os.listdir(out / "panoptic")) == names
    assert sorted(os.listdir(out / "sem_seg")) == names
    assert all(Image.open(out / "sem_seg" / n).size == (80, 64) for n in names)
    with open(out / "panoptic.json") as f:
        annotations = json.load(f)["annotations"]
    assert [(a["image_id"], a["file_name"]) for a in annotations] == list(enumerate(names))
    with open(out / "instances.json") as f:
        assert sorted({r["image_id"] for r in json.load(f)}) == [0, 1, 2]
    assert not (tmp_path / "clip").exists()  # nothing drawn without --output


def test_unwritable_folder_is_one_message_before_the_model(
    demo_cli, checkpoint, tmp_path, capsys, monkeypatch
):
    def fail(*args, **kwargs):
        raise AssertionError("the model was built")

    monkeypatch.setattr(demo_cli, "VisualizationDemo", fail)
    a_file = tmp_path / "file"
    a_file.write_text("")
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    drawings = tmp_path / "drawings"
    for folder in (a_file, a_file / "sub"):
        argv = ["--config-file", CONFIG, "--input", str(image), "--output", str(drawings),
                "--save-predictions", str(folder), "--opts", *OPTS, "MODEL.WEIGHTS", checkpoint]
        assert demo_cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "--save-predictions folder" in err and str(a_file) in err
        assert "Traceback" not in err and err.count("\n") == 1
    assert not drawings.exists()  # before any other work


# ----------------------------------------------------------------------------- conversions
class _Metadata(dict):
    """What the writers read of detectron2's Metadata: ``get(key, default)``."""


_METADATA = _Metadata(
    thing_classes=["a", "b"],
    stuff_classes=["a", "b", "sky"],
    thing_dataset_id_to_contiguous_id={3: 0, 8: 1},
    stuff_dataset_id_to_contiguous_id={3: 0, 8: 1, 300: 2},
)


def test_panoptic_to_coco_uses_dataset_ids_and_panopticapi_colors():
    from panopticapi.utils import rgb2id

    from mask2former.evaluation.prediction_writers import panoptic_to_coco

    ids = torch.tensor([[0, 1, 1], [2, 2, 70000]], dtype=torch.int32)
    info = [
        {"id": 1, "category_id": 1, "isthing": True},
        {"id": 2, "category_id": 2, "isthing": False},
        {"id": 70000, "category_id": 0, "isthing": True},
    ]
    rgb, segments = panoptic_to_coco(ids, info, _METADATA)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert np.array_equal(rgb2id(rgb), ids.numpy())  # ids above 255 too
    assert [(s["id"], s["category_id"]) for s in segments] == [(1, 8), (2, 300), (70000, 3)]
    with pytest.raises(ValueError, match=r"thing class 5 has no dataset id"):
        panoptic_to_coco(ids, [{"id": 1, "category_id": 5, "isthing": True}], _METADATA)


def test_sem_seg_labels_in_dataset_ids_and_16_bit():
    from mask2former.evaluation.prediction_writers import sem_seg_to_label_image

    scores = torch.zeros(3, 2, 2)
    scores[0, 0, 0] = scores[1, 0, 1] = scores[2, 1] = 1.0
    labels = sem_seg_to_label_image(scores, _METADATA)
    assert labels.dtype == np.uint16 and labels.tolist() == [[3, 8], [300, 300]]
    plain = sem_seg_to_label_image(scores, _Metadata())  # no id map: contiguous ids
    assert plain.dtype == np.uint8 and plain.tolist() == [[0, 1], [2, 2]]


def test_semantic_labels_save_and_draw_as_the_scores(demo_cli, train_net, checkpoint, synthetic_root, tmp_path):
    """MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT labels: the demo's semantic drawings and saved
    files, and the web demo's segment rows, are those of the default scores."""
    from app import segment_rows
    from predictor import VisualizationDemo

    image_root = MetadataCatalog.get(VAL).image_root
    files, rows = {}, {}
    for form in ("scores", "labels"):
        opts = [*OPTS, "MODEL.WEIGHTS", checkpoint, "MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT", form]
        argv = ["--config-file", CONFIG, "--input", image_root, "--task", "semantic",
                "--output", str(tmp_path / form / "drawn"), "--save-predictions", str(tmp_path / form / "saved"),
                "--opts", *opts]
        assert demo_cli.main(argv) == 0
        files[form] = {
            os.path.relpath(os.path.join(d, f), tmp_path / form): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(tmp_path / form) for f in names
        }
        args = train_net.default_argument_parser().parse_args(["--config-file", CONFIG, *opts])
        demo = VisualizationDemo(train_net.build_config(args)[0], task="semantic")
        image = cv2.imread(os.path.join(image_root, sorted(os.listdir(image_root))[0]))
        predictions = demo.predictor(image)
        assert ("sem_seg_labels" in predictions) == (form == "labels")
        rows[form] = segment_rows(predictions, "semantic", demo.metadata)
    assert sum(name.startswith("saved/sem_seg/") for name in files["scores"]) == 4
    assert files["labels"] == files["scores"]
    assert rows["labels"] == rows["scores"] and len(rows["scores"]) > 1
