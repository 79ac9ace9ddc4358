"""The evaluation throughput settings (TEST.IMS_PER_BATCH > 1, DATALOADER.NUM_WORKERS,
TEST.EVALUATOR_THREADS) give the metrics of the plain ones, through train_net's Trainer.test:
exactly for a model that predicts each image alone, up to float rounding for the network run on
batches."""
import json
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from panopticapi.utils import rgb2id

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from mask2former.data.build import build_test_loader
from mask2former.data.dataset_mappers import MaskFormerTestDatasetMapper
from mask2former.evaluation import ThreadedEvaluators, build_evaluator
from model_utils import REPO, load_cfg, make_synthetic_root

PREFIX = "_test_eval_throughput"
PANOPTIC_CONFIG = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
PLAIN = {"TEST.IMS_PER_BATCH": 1, "DATALOADER.NUM_WORKERS": 0, "TEST.EVALUATOR_THREADS": 0}
FAST = {"TEST.IMS_PER_BATCH": 3, "DATALOADER.NUM_WORKERS": 1, "TEST.EVALUATOR_THREADS": 2}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic_root(tmp_path_factory, PREFIX, num_train=1, num_val=5)


@pytest.fixture(scope="module")
def train_net():
    import train_net as module

    return module


def _cfg(output_dir, settings):
    opts = ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(output_dir), "DATASETS.TEST", f"('{PREFIX}_panoptic_val',)"]
    for key, value in settings.items():
        opts += [key, str(value)]
    return load_cfg(PANOPTIC_CONFIG, opts)


class ShiftedGroundTruth(torch.nn.Module):
    """Predicts each image's ground truth shifted by 1 to 3 pixels, with one thing segment of
    two dropped: all three outputs, scoring well below 100 and differently per image."""

    def __init__(self, dataset: str):
        super().__init__()
        self.records = {d["file_name"]: d for d in DatasetCatalog.get(dataset)}

    def forward(self, batched_inputs):
        return [self._predict(self.records[x["file_name"]]) for x in batched_inputs]

    def _predict(self, record):
        shift = 1 + record["image_id"] % 3
        pan = np.roll(rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]))), shift, axis=1)
        segments = record["segments_info"]
        things = [s for s in segments if s["isthing"]][::2]
        # copies: COCOPanopticEvaluator edits the segments it is given
        kept = [dict(s) for s in segments if not s["isthing"]] + [dict(s) for s in things]
        ids = torch.from_numpy(np.where(np.isin(pan, [s["id"] for s in kept]), pan, 0).astype(np.int32))
        labels = torch.zeros(ids.shape, dtype=torch.long)
        for s in segments:
            labels[torch.from_numpy(pan == s["id"])] = s["category_id"]
        instances = Instances(ids.shape)
        instances.pred_masks = torch.stack([ids == s["id"] for s in things]).reshape(-1, *ids.shape)
        instances.pred_boxes = BitMasks(instances.pred_masks).get_bounding_boxes()
        instances.pred_classes = torch.tensor([s["category_id"] for s in things], dtype=torch.long)
        instances.scores = torch.linspace(0.9, 0.5, len(things))
        sem_seg = torch.nn.functional.one_hot(labels, 8).permute(2, 0, 1).float()
        return {"sem_seg": sem_seg, "panoptic_seg": (ids, kept), "instances": instances}


def _same_metrics(a, b) -> bool:
    """Equal, NaN included (the AP of a class without ground truth)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_fast_settings_give_the_plain_metrics(train_net, synthetic_root, tmp_path):
    model = ShiftedGroundTruth(f"{PREFIX}_panoptic_val")
    results = {}
    for name, settings in (("plain", PLAIN), ("fast", FAST)):
        cfg = _cfg(tmp_path / name, settings)
        results[name] = train_net.Trainer.test(cfg, model)
    assert set(results["plain"]) == {"sem_seg", "panoptic_seg", "bbox", "segm"}
    assert 20 < results["plain"]["panoptic_seg"]["PQ"] < 95 and 20 < results["plain"]["segm"]["AP"] < 95
    assert _same_metrics(results["fast"], results["plain"])


def _flat(metrics):
    return {(task, k): v for task, values in metrics.items() for k, v in values.items()}


def test_batched_model_gives_the_plain_metrics_up_to_rounding(train_net, synthetic_root, tmp_path):
    """The model itself, 3 images per batch (the synthetic images share one size, so nothing is
    padded): batched matrix products round differently, which may flip a pixel whose class
    scores tie to float rounding, so the metrics (in %) agree to 0.01 rather than exactly."""
    # a smaller model at half the size (outputs still at 128x128), for time
    small = {"MODEL.MASK_FORMER.DEC_LAYERS": 3, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 8, "INPUT.MIN_SIZE_TEST": 64}
    cfg = _cfg(tmp_path / "plain", {**PLAIN, **small})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    plain = train_net.Trainer.test(cfg, model)
    fast = train_net.Trainer.test(_cfg(tmp_path / "fast", {**FAST, **small}), model)
    got, want = _flat(fast), _flat(plain)
    assert got.keys() == want.keys()
    differ = {k: (got[k], want[k]) for k in want if not (np.isnan(want[k]) and np.isnan(got[k])) and got[k] != pytest.approx(want[k], abs=1e-2)}
    assert not differ
    assert plain["sem_seg"]["mIoU"] > 0


def test_test_loader_batches(synthetic_root):
    cfg = _cfg(".", {"TEST.IMS_PER_BATCH": 2})
    loader = build_test_loader(cfg, f"{PREFIX}_panoptic_val", MaskFormerTestDatasetMapper(cfg))
    assert [len(batch) for batch in loader] == [2, 2, 1]


@pytest.mark.parametrize("key,value", [("TEST.IMS_PER_BATCH", 0), ("TEST.EVALUATOR_THREADS", -1)])
def test_bad_settings_name_the_key(synthetic_root, key, value):
    cfg = _cfg(".", {key: value})
    name = f"{PREFIX}_panoptic_val"
    with pytest.raises(ValueError, match=f"cfg.{key} must be"):
        if key == "TEST.IMS_PER_BATCH":
            build_test_loader(cfg, name, MaskFormerTestDatasetMapper(cfg))
        else:
            build_evaluator(cfg, name)


class _Recorder(DatasetEvaluator):
    def __init__(self, fail_on=None):
        self.seen, self.threads, self.fail_on = [], set(), fail_on

    def reset(self):
        self.seen = []

    def process(self, inputs, outputs):
        if inputs[0] == self.fail_on:
            raise OSError(f"cannot write {inputs[0]}")
        self.threads.add(threading.current_thread().name)
        self.seen += inputs

    def evaluate(self):
        return {id(self): {"seen": list(self.seen)}}


def test_threaded_evaluators_keep_each_evaluators_order_off_the_main_thread():
    recorders = [_Recorder() for _ in range(3)]
    evaluators = ThreadedEvaluators(recorders, num_threads=2, max_pending=1)
    evaluators.reset()
    for i in range(20):
        evaluators.process([i], [None])
    results = evaluators.evaluate()
    assert [r["seen"] for r in results.values()] == [list(range(20))] * 3
    assert all(r.threads and threading.main_thread().name not in r.threads for r in recorders)
    evaluators.close()


def test_threaded_evaluators_raise_a_failed_call():
    evaluators = ThreadedEvaluators([_Recorder(fail_on=3)], num_threads=1)
    evaluators.reset()
    with pytest.raises(OSError, match="cannot write 3"):
        for i in range(6):
            evaluators.process([i], [None])
        evaluators.evaluate()


def test_semantic_labels_give_the_metrics_of_the_scores(train_net, synthetic_root, tmp_path):
    """MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT "labels": the same model's label maps, evaluated
    by the evaluators build_evaluator picks for them, give exactly the scores' metrics (mIoU,
    PQ, AP), with the evaluator threads too."""
    small = {"MODEL.MASK_FORMER.DEC_LAYERS": 3, "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 8, "INPUT.MIN_SIZE_TEST": 64}
    results = {}
    for form in ("scores", "labels"):
        cfg = _cfg(tmp_path / form, {**PLAIN, **small, "TEST.EVALUATOR_THREADS": 1, "MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT": form})
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        assert model.semantic_output == form
        results[form] = train_net.Trainer.test(cfg, model)
    assert results["scores"]["sem_seg"]["mIoU"] > 0
    assert _same_metrics(results["labels"], results["scores"])
