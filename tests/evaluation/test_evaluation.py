"""Our evaluators: InstanceSegEvaluator gives pycocotools' numbers in panoptic-style id spaces,
and build_evaluator picks the evaluators of each dataset type and task."""
import os

import pytest

from detectron2.config import get_cfg
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    SemSegEvaluator,
)
from detectron2.projects.deeplab import add_deeplab_config

from evaluation_cases import (
    pycocotools_segm_stats,
    rect,
    register,
    run_instance_evaluator,
    write_instance_case,
)
from mask2former.config import add_maskformer2_config
from mask2former.evaluation import (
    InstanceSegEvaluator,
    LabelMapCityscapesSemSegEvaluator,
    LabelMapSemSegEvaluator,
    build_evaluator,
)


@pytest.fixture(scope="module")
def instance_case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("instance")
    return (*write_instance_case(tmp), tmp)


def test_instance_seg_evaluator_with_gapped_thing_ids(instance_case):
    # panoptic-style id space: contiguous ids cover stuff too, so things are {1, 4}
    _, preds, gt_json, tmp = instance_case
    id_map = {3: 1, 7: 4}
    name = register(
        "ade_inst",
        json_file=gt_json,
        thing_dataset_id_to_contiguous_id=id_map,
        thing_classes=["wall", "cat", "sky", "floor", "dog"],
        evaluator_type="ade20k_panoptic_seg",
    )
    evaluator = InstanceSegEvaluator(name, tasks=("segm",), output_dir=str(tmp / "ade_out"))
    res = run_instance_evaluator(evaluator, preds, id_map)["segm"]
    expected = pycocotools_segm_stats(gt_json, preds)
    assert res["AP"] == pytest.approx(expected[0], abs=1e-6)
    assert res["AP50"] == pytest.approx(expected[1], abs=1e-6)
    # per-category AP named from the gt json's categories
    assert "AP-cat" in res and "AP-dog" in res
    # detectron2's own COCOEvaluator refuses this id space
    with pytest.raises(AssertionError):
        run_instance_evaluator(
            COCOEvaluator(name, tasks=("segm",), output_dir=str(tmp / "ade_out2")), preds, id_map
        )


def test_instance_seg_evaluator_rejects_stuff_class(instance_case):
    _, _, gt_json, tmp = instance_case
    name = register(
        "ade_inst_bad", json_file=gt_json, thing_dataset_id_to_contiguous_id={3: 1, 7: 4}
    )
    evaluator = InstanceSegEvaluator(name, tasks=("segm",), output_dir=str(tmp / "bad_out"))
    with pytest.raises(ValueError, match="class 2"):
        run_instance_evaluator(evaluator, {1: [(0, rect(0, 0, 5, 5), 0.5)]}, {0: 2})


# ---------------------------------------------------------------- build_evaluator
def _cfg(semantic=False, instance=False, panoptic=False, output_dir="."):
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    cfg.OUTPUT_DIR = output_dir
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = semantic
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = instance
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = panoptic
    return cfg


def _types(evaluators):
    return [type(e) for e in evaluators._evaluators]


@pytest.fixture(scope="module")
def typed_datasets(instance_case):
    _, _, gt_json, _ = instance_case
    common = dict(
        json_file=gt_json,
        panoptic_json="unused.json",
        panoptic_root="unused",
        thing_dataset_id_to_contiguous_id={3: 1, 7: 4},
        stuff_dataset_id_to_contiguous_id={1: 0, 3: 1, 5: 2, 6: 3, 7: 4},
        stuff_classes=list("abcde"),
        ignore_label=255,
    )
    dicts = [{"file_name": "a.jpg", "sem_seg_file_name": "a.png"}]
    names = {}
    for t in (
        "sem_seg",
        "coco",
        "coco_panoptic_seg",
        "ade20k_panoptic_seg",
        "mapillary_vistas_panoptic_seg",
        "cityscapes_panoptic_seg",
        "cityscapes_sem_seg",
        "cityscapes_instance",
        "something_else",
    ):
        names[t] = register("typed_" + t, dicts, evaluator_type=t, **common)
    return names


@pytest.mark.parametrize(
    "evaluator_type, flags, expected",
    [
        ("sem_seg", {}, [LabelMapSemSegEvaluator]),
        ("coco", {}, [COCOEvaluator]),
        (
            "coco_panoptic_seg",
            dict(semantic=True, instance=True, panoptic=True),
            [LabelMapSemSegEvaluator, COCOPanopticEvaluator, COCOEvaluator],
        ),
        ("coco_panoptic_seg", dict(panoptic=True), [COCOPanopticEvaluator]),
        (
            "ade20k_panoptic_seg",
            dict(semantic=True, instance=True, panoptic=True),
            [LabelMapSemSegEvaluator, COCOPanopticEvaluator, InstanceSegEvaluator],
        ),
        ("mapillary_vistas_panoptic_seg", dict(instance=True), [InstanceSegEvaluator]),
        (
            "mapillary_vistas_panoptic_seg",
            dict(semantic=True, panoptic=True),
            [LabelMapSemSegEvaluator, COCOPanopticEvaluator],
        ),
        (
            "cityscapes_panoptic_seg",
            dict(semantic=True, instance=True, panoptic=True),
            [COCOPanopticEvaluator, LabelMapCityscapesSemSegEvaluator, CityscapesInstanceEvaluator],
        ),
        ("cityscapes_sem_seg", {}, [LabelMapCityscapesSemSegEvaluator]),
        ("cityscapes_instance", {}, [CityscapesInstanceEvaluator]),
    ],
)
def test_build_evaluator_choice(typed_datasets, tmp_path, evaluator_type, flags, expected):
    cfg = _cfg(output_dir=str(tmp_path), **flags)
    evaluators = build_evaluator(cfg, typed_datasets[evaluator_type])
    assert _types(evaluators) == expected
    for e in evaluators._evaluators:
        if isinstance(e, COCOEvaluator):  # box AP (the masks' tight boxes) beside mask AP
            assert e._tasks == ("bbox", "segm")


def test_build_evaluator_default_output_folder(typed_datasets, tmp_path):
    cfg = _cfg(panoptic=True, output_dir=str(tmp_path))
    (pan,) = build_evaluator(cfg, typed_datasets["coco_panoptic_seg"])._evaluators
    assert pan._output_dir == os.path.join(str(tmp_path), "inference")


def test_build_evaluator_unknown_type_names_dataset(typed_datasets, tmp_path):
    name = typed_datasets["something_else"]
    with pytest.raises(NotImplementedError, match=f"{name}.*something_else"):
        build_evaluator(_cfg(output_dir=str(tmp_path)), name)
    # a known type whose outputs are all switched off gets the same clear error
    with pytest.raises(NotImplementedError, match="ade20k_panoptic_seg"):
        build_evaluator(_cfg(output_dir=str(tmp_path)), typed_datasets["ade20k_panoptic_seg"])


@pytest.mark.parametrize("form", ["scores", "labels"])
def test_semantic_evaluators_take_either_form(typed_datasets, tmp_path, form):
    cfg = _cfg(semantic=True, output_dir=str(tmp_path))
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT = form
    assert _types(build_evaluator(cfg, typed_datasets["sem_seg"])) == [LabelMapSemSegEvaluator]
    cityscapes = build_evaluator(cfg, typed_datasets["cityscapes_panoptic_seg"])
    assert _types(cityscapes) == [LabelMapCityscapesSemSegEvaluator]
    assert issubclass(LabelMapSemSegEvaluator, SemSegEvaluator)
    assert issubclass(LabelMapCityscapesSemSegEvaluator, CityscapesSemSegEvaluator)


@pytest.mark.parametrize("with_nan", [False, True])
def test_label_map_evaluator_gives_the_scores_mious(tmp_path, with_nan):
    """The same predictions as (K, H, W) scores to detectron2's SemSegEvaluator, and as scores
    and as their argmax (H, W) to LabelMapSemSegEvaluator: the same mIoU and per-class IoUs,
    and the same predictions json."""
    import json

    import numpy as np
    import torch
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 4, (2, 20, 24), generator=g).numpy().astype(np.uint8)
    gt[:, :3] = 255  # ignored pixels
    dicts = []
    for i in range(2):
        path = str(tmp_path / f"gt{i}.png")
        Image.fromarray(gt[i]).save(path)
        dicts.append({"file_name": f"img{i}.jpg", "sem_seg_file_name": path})
    name = register(
        "labels_vs_scores_sem_seg", dicts, evaluator_type="sem_seg", stuff_classes=list("abcd"), ignore_label=255
    )
    inputs = [{"file_name": d["file_name"]} for d in dicts]
    scores = torch.rand(2, 4, 20, 24, generator=g)
    scores[:, 1] = scores[:, 3]  # ties: the first class wins, as with torch.argmax
    if with_nan:  # torch.argmax picks a NaN: the label map evaluator leaves such scores to it
        scores[0, 2, 5, 5] = float("nan")
    metrics = {}
    for run, (evaluator_cls, outputs) in enumerate((
        (SemSegEvaluator, [{"sem_seg": s} for s in scores]),
        (LabelMapSemSegEvaluator, [{"sem_seg": s} for s in scores]),
        (LabelMapSemSegEvaluator, [{"sem_seg_labels": s.argmax(0), "sem_seg_label_scores": s.amax(0)} for s in scores]),
    )):
        out_dir = tmp_path / str(run)
        evaluator = evaluator_cls(name, distributed=False, output_dir=str(out_dir))
        evaluator.reset()
        evaluator.process(inputs, outputs)
        metrics[run] = (evaluator.evaluate(), json.loads((out_dir / "sem_seg_predictions.json").read_text()))
    assert metrics[0] == metrics[1] == metrics[2]
    assert 0 < metrics[0][0]["sem_seg"]["mIoU"] < 100
