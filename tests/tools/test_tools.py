"""tools/: analyze_model, the torchvision and Swin checkpoint converters, and semantic PQ."""

import importlib
import json
import os
import pickle
import re
import subprocess
import sys
from typing import Dict, List, Set, Tuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.evaluation import SemSegEvaluator
from detectron2.modeling import build_backbone, build_model

from mask2former.modeling.pixel_decoder.ops.functions import extension_available
from model_utils import REPO, make_synthetic_root

SYNTHETIC_PANOPTIC = os.path.join(REPO, "configs", "synthetic", "panoptic.yaml")
R50_PANOPTIC = os.path.join(
    REPO, "configs", "coco", "panoptic-segmentation", "maskformer2_R50_bs16_50ep.yaml"
)
SWIN_T_PANOPTIC = os.path.join(
    REPO, "configs", "coco", "panoptic-segmentation", "swin", "maskformer2_swin_tiny_bs16_50ep.yaml"
)
PREFIX = "_test_tools_synthetic"
TINY_DATASET = "_test_tools_tiny_sem_seg"


# the tools are scripts: `python tools/x.py` puts tools/ on sys.path, and so do the tests, to
# import them by name (some names have dashes, as the reference's: hence importlib)
if os.path.join(REPO, "tools") not in sys.path:
    sys.path.append(os.path.join(REPO, "tools"))
analyze = importlib.import_module("analyze_model")
tv_converter = importlib.import_module("convert-torchvision-to-d2")
swin_converter = importlib.import_module("convert-pretrained-swin-model-to-d2")
pq_tool = importlib.import_module("evaluate_pq_for_semantic_segmentation")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic_root(tmp_path_factory, PREFIX, num_train=1, num_val=3)


def _cfg(config_file: str, *opts: str):
    from mask2former.config import build_config

    args = default_argument_parser().parse_args(
        ["--config-file", config_file, "MODEL.DEVICE", "cpu", *opts]
    )
    return build_config(args)[0]


def _number_after(label: str, text: str) -> float:
    match = re.search(re.escape(label) + r"\s*([-+0-9.e]+)", text)
    assert match, f"{label!r} not in output:\n{text}"
    return float(match.group(1))


def _run_tool_error(main, argv, capsys) -> str:
    """The one-line error a tool exits with (argparse's ``parser.error``)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Traceback" not in message
    return message


# ---------------------------------------------------------------- analyze_model.py
def test_analyze_synthetic_panoptic_counts(capsys):
    torch.set_num_threads(1)
    argv = [
        "--config-file", SYNTHETIC_PANOPTIC, "--tasks", "parameter", "flop", "activation",
        "--num-inputs", "2", "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()",
    ]  # fmt: skip
    assert analyze.main(argv) == 0
    out = capsys.readouterr().out
    model = build_model(_cfg(SYNTHETIC_PANOPTIC))
    assert _number_after("Parameters:", out) == sum(p.numel() for p in model.parameters())
    assert "2 random 128x171 images" in out
    assert "outputs on: semantic, instance, panoptic" in out
    assert _number_after("GFLOPs:", out) > 0
    assert _number_after("Activations (M):", out) > 0
    # the ops of Mask2Former that fvcore does not know are counted, not reported as skipped
    not_counted = re.search(r"Not counted.*", out).group(0)
    assert "MSDeformAttnFunction" not in not_counted and "baddbmm" not in not_counted
    if extension_available():  # else the op is traced as its PyTorch reference (grid_sample)
        assert _number_after("PythonOp.MSDeformAttnFunction", out) > 0
    assert _number_after("baddbmm", out) > 0


def test_analyze_flops_by_operator_match_a_hand_count():
    # conv: 2 * 8 * 3*3*3 per output pixel of a 16x16 output; baddbmm: 4 x (5x6 @ 6x7)
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)

        def forward(self, batched_inputs):
            x = self.conv(batched_inputs[0]["image"][None])
            a = x.new_ones(4, 5, 6) * x.mean()
            return [{"sem_seg": torch.baddbmm(x.new_zeros(4, 5, 7), a, x.new_ones(4, 6, 7))}]

    stats = analyze.flop_stats(Net(), [{"image": torch.rand(3, 16, 16)}] * 2)
    assert stats["by_operator"]["conv"] == pytest.approx(8 * 27 * 16 * 16 / 1e9)
    assert stats["by_operator"]["baddbmm"] == pytest.approx(4 * 5 * 6 * 7 / 1e9)
    assert stats["gflops"] == [pytest.approx((8 * 27 * 256 + 4 * 5 * 6 * 7) / 1e9)] * 2


def test_analyze_ms_deform_attn_flops():
    from mask2former.modeling.pixel_decoder.ops.functions import MSDeformAttnFunction

    if not extension_available():
        pytest.skip("mask2former._C is not built: the op is traced as its PyTorch reference")
    n, m, d, lq, n_levels, n_points = 1, 2, 4, 10, 2, 3
    shapes = torch.tensor([[4, 4], [2, 2]])
    starts = torch.tensor([0, 16])

    class Net(nn.Module):
        def forward(self, batched_inputs):
            value = batched_inputs[0]["image"].reshape(n, 20, m, d)
            loc = torch.full((n, lq, m, n_levels, n_points, 2), 0.5)
            weights = torch.full((n, lq, m, n_levels, n_points), 1.0 / 6)
            out = MSDeformAttnFunction.apply(value, shapes, starts, loc, weights, 64)
            return [{"sem_seg": out}]

    stats = analyze.flop_stats(Net(), [{"image": torch.rand(n * 20 * m * d)}])
    # a bilinear sample (4 multiply-adds) and its weight (1) per query/head/level/point/channel
    expected = 5 * n * lq * m * n_levels * n_points * d
    assert stats["by_operator"]["PythonOp.MSDeformAttnFunction"] == pytest.approx(expected / 1e9)
    assert not stats["unsupported"]


def test_analyze_inputs_from_test_dataset_or_random(synthetic_root):
    cfg = _cfg(SYNTHETIC_PANOPTIC, "DATASETS.TEST", f"('{PREFIX}_panoptic_val',)")
    inputs, source = analyze.build_inputs(cfg, 2)
    assert f"2 images of dataset '{PREFIX}_panoptic_val'" in source
    assert [tuple(x["image"].shape) for x in inputs] == [(3, 128, 128)] * 2
    expected = np.array(Image.open(DatasetCatalog.get(f"{PREFIX}_panoptic_val")[0]["file_name"]))
    assert torch.equal(inputs[0]["image"], torch.from_numpy(expected).permute(2, 0, 1))

    cfg = _cfg(
        SYNTHETIC_PANOPTIC, "DATASETS.TEST", "('no_such_dataset',)", "INPUT.MIN_SIZE_TEST", "96"
    )
    inputs, source = analyze.build_inputs(cfg, 3)
    assert "3 random 96x128 images" in source and "'no_such_dataset' is not available" in source
    assert [tuple(x["image"].shape) for x in inputs] == [(3, 96, 128)] * 3


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_analyze_task_turns_one_output_on(task, capsys):
    argv = ["--config-file", SYNTHETIC_PANOPTIC, "--tasks", "parameter", "--task", task]
    assert analyze.main(argv + ["MODEL.DEVICE", "cpu"]) == 0
    assert re.search(f"outputs on: {task}$", capsys.readouterr().out, re.M)


def test_analyze_r50_panoptic_parameter_count(capsys):
    argv = ["--config-file", R50_PANOPTIC, "--tasks", "parameter", "--opts", "MODEL.DEVICE", "cpu"]
    assert analyze.main(argv) == 0
    reported = _number_after("Parameters:", capsys.readouterr().out)
    model = build_model(_cfg(R50_PANOPTIC))
    expected = sum(p.numel() for p in model.parameters())
    assert reported == expected
    assert 43e6 < expected < 46e6  # Mask2Former R50 panoptic: ~44M


def test_analyze_bad_config_key_is_one_line_error(capsys):
    argv = ["--config-file", SYNTHETIC_PANOPTIC, "--tasks", "parameter", "--opts"]
    assert "MODEL.NO_SUCH_KEY" in _run_tool_error(
        analyze.main, argv + ["MODEL.NO_SUCH_KEY", "1"], capsys
    )


# ---------------------------------------------------------------- convert-torchvision-to-d2.py
def _randomize_batch_norms(model: nn.Module, seed: int = 0) -> None:
    # torchvision initializes BN to the identity: random statistics expose any mix-up
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


def _convert(tool, checkpoint, tmp_path, author: str) -> Tuple[str, Dict[str, np.ndarray]]:
    """Run a converter on ``checkpoint`` saved as a .pth; returns (output path, its weights)."""
    torch.save(checkpoint, tmp_path / "in.pth")
    out = str(tmp_path / "out.pkl")
    assert tool.main([str(tmp_path / "in.pth"), out]) == 0
    with open(out, "rb") as f:
        ckpt = pickle.load(f)
    assert ckpt["__author__"] == author and ckpt["matching_heuristics"] is True
    assert all(isinstance(v, np.ndarray) for v in ckpt["model"].values())
    return out, ckpt["model"]


def _load_backbone_weights(model: nn.Module, path: str, weights: Dict[str, np.ndarray]) -> Set[str]:
    """
    Load ``path`` with DetectionCheckpointer (name-suffix matching) and check that each of
    ``weights`` landed, bit for bit, on ``backbone.<its name>`` and that nothing else changed.
    Returns the names of the model's tensors that were not loaded.
    """
    before = {k: v.clone() for k, v in model.state_dict().items()}
    DetectionCheckpointer(model).load(path)
    after = model.state_dict()
    for name, value in weights.items():
        assert torch.equal(after["backbone." + name], torch.from_numpy(value)), name
    not_loaded = {k for k in after if k[len("backbone.") :] not in weights}
    for k in not_loaded:
        assert torch.equal(after[k], before[k]), k
    return not_loaded


def test_convert_torchvision_resnet50_loads_every_weight(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None).eval()
    _randomize_batch_norms(tv)
    out, weights = _convert(tv_converter, tv.state_dict(), tmp_path, "torchvision")
    assert not [k for k in weights if k.startswith("fc.") or "num_batches_tracked" in k]
    assert weights["res5.2.conv3.norm.running_var"].shape == (2048,)

    model = build_model(_cfg(R50_PANOPTIC, "MODEL.WEIGHTS", ""))
    not_loaded = _load_backbone_weights(model, out, weights)
    # every backbone tensor came from the file
    assert not [k for k in not_loaded if k.startswith("backbone.")]

    # the config normalizes as torchvision does: RGB, ImageNet mean and std (on 0..255 values)
    assert _cfg(R50_PANOPTIC).INPUT.FORMAT == "RGB"
    torch.testing.assert_close(
        model.pixel_mean.flatten(), 255 * torch.tensor([0.485, 0.456, 0.406])
    )
    torch.testing.assert_close(model.pixel_std.flatten(), 255 * torch.tensor([0.229, 0.224, 0.225]))
    # and the backbone computes torchvision's function (stride in the 3x3 convolutions ...);
    # in float64, so that any difference is a mix-up rather than rounding
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        ref = nn.Sequential(*list(tv.children())[:-2]).double()(x)
        res5 = model.backbone.double()(x)["res5"]
    torch.testing.assert_close(res5, ref, rtol=1e-9, atol=1e-9 * ref.abs().max().item())


def test_convert_torchvision_rejects_other_models(tmp_path, capsys):
    torch.save(
        {"conv1.weight": torch.zeros(1), "encoder.block.weight": torch.zeros(1)}, tmp_path / "x.pth"
    )
    message = _run_tool_error(
        tv_converter.main, [str(tmp_path / "x.pth"), str(tmp_path / "x.pkl")], capsys
    )
    assert "encoder.block.weight" in message and "torchvision ResNet" in message
    assert not (tmp_path / "x.pkl").exists()


@pytest.mark.parametrize(
    "torchvision_name, d2_name",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_mean", "stem.conv1.norm.running_mean"),
        ("layer1.0.conv2.weight", "res2.0.conv2.weight"),
        ("layer4.2.bn3.bias", "res5.2.conv3.norm.bias"),
        ("layer3.0.downsample.0.weight", "res4.0.shortcut.weight"),
        ("layer2.0.downsample.1.weight", "res3.0.shortcut.norm.weight"),
    ],
)
def test_convert_torchvision_names(torchvision_name, d2_name):
    assert tv_converter.convert_name(torchvision_name) == d2_name


# ---------------------------------------------------------------- convert-pretrained-swin-model-to-d2.py
def _official_swin_checkpoint(backbone: nn.Module) -> Dict[str, torch.Tensor]:
    """The layout of the Swin release: the backbone's names without its per-stage norm0..3,
    plus the classifier (head.*), the final norm (norm.*) and the shifted blocks' attn_mask."""
    state = {k: v.clone() for k, v in backbone.state_dict().items() if not re.match(r"norm\d", k)}
    width = backbone.num_features[-1]
    state["norm.weight"], state["norm.bias"] = torch.rand(width), torch.rand(width)
    state["head.weight"], state["head.bias"] = torch.rand(1000, width), torch.rand(1000)
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    return state


def test_convert_swin_loads_every_backbone_weight(tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(SWIN_T_PANOPTIC, "MODEL.WEIGHTS", "")
    official = _official_swin_checkpoint(build_backbone(cfg))
    out, weights = _convert(swin_converter, {"model": official}, tmp_path, "third_party")
    dropped = {k for k in official if k.startswith(("head.", "norm.")) or k.endswith("attn_mask")}
    assert set(weights) == set(official) - dropped and len(dropped) == 5

    not_loaded = _load_backbone_weights(build_model(cfg), out, weights)
    # the backbone's per-stage norms are not in the release: they keep their initialization
    assert {k for k in not_loaded if k.startswith("backbone.")} == {
        f"backbone.norm{i}.{p}" for i in range(4) for p in ("weight", "bias")
    }


def test_convert_swin_rejects_a_resnet(tmp_path, capsys):
    torch.save(
        {"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1)},
        tmp_path / "r.pth",
    )
    message = _run_tool_error(
        swin_converter.main, [str(tmp_path / "r.pth"), str(tmp_path / "r.pkl")], capsys
    )
    assert "not a Swin Transformer checkpoint" in message and "conv1.weight" in message


# ---------------------------------------------------------------- evaluate_pq_for_semantic_segmentation.py
def _encode(dataset_name: str, file_name: str, label: np.ndarray) -> List[Dict]:
    """The json entries detectron2's SemSegEvaluator writes for a (H, W) predicted label map."""
    evaluator = SemSegEvaluator(dataset_name, distributed=False)
    return evaluator.encode_json_sem_seg(label, file_name)


def _ground_truths(name: str):
    return [
        (r["file_name"], np.asarray(Image.open(r["sem_seg_file_name"])).astype(np.int64))
        for r in DatasetCatalog.get(name)
    ]


def test_pq_of_perfect_predictions_is_100(synthetic_root, tmp_path, capsys):
    name = f"{PREFIX}_sem_seg_val"
    predictions = []
    for file_name, gt in _ground_truths(name):
        predictions += _encode(name, file_name, gt)
    json_file = tmp_path / "sem_seg_predictions.json"
    json_file.write_text(json.dumps(predictions))

    assert pq_tool.main(["--dataset-name", name, "--json-file", str(json_file), "--per-class"]) == 0
    out = capsys.readouterr().out
    assert "PQ 100.00  SQ 100.00  RQ 100.00" in out
    assert "3 of 3 images predicted" in out
    res = pq_tool.evaluate_semantic_pq(name, predictions)
    present = set().union(*(np.unique(gt).tolist() for _, gt in _ground_truths(name)))
    assert res["num_classes"] == len(present)
    classes = MetadataCatalog.get(name).stuff_classes
    assert set(res["per_class"]) == {classes[c] for c in present}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Three hand-drawn ground truths (classes a, b, c = dataset ids 10, 20, 30; 255 ignored)."""
    root = tmp_path_factory.mktemp("tiny")
    a, b, x = 0, 1, 255
    gts = {
        "img1.jpg": [[a, a, a, a, a], [a, a, a, a, a], [b, b, b, b, x], [b, b, b, b, x]],
        "img2.jpg": [[a, a, x, x], [a, a, b, b]],
        "img3.jpg": [[b, b, b, x]],
    }
    records = []
    for file_name, gt in gts.items():
        path = str(root / file_name.replace(".jpg", ".png"))
        Image.fromarray(np.array(gt, dtype=np.uint8)).save(path)
        records.append({"file_name": str(root / file_name), "sem_seg_file_name": path})
    if TINY_DATASET not in DatasetCatalog.list():
        DatasetCatalog.register(TINY_DATASET, lambda: [dict(r) for r in records])
        MetadataCatalog.get(TINY_DATASET).set(
            stuff_classes=["a", "b", "c"],
            stuff_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2},
            ignore_label=255,
        )
    return {os.path.basename(r["file_name"]): r["file_name"] for r in records}


def test_pq_by_hand(tiny_dataset, tmp_path, capsys):
    a, b, c = 0, 1, 2
    # img1: a predicted on half its area (IoU 5/10, not > 0.5: a FN and a FP); b takes the
    # rest: IoU 8/13, a match; c lies only on ignored pixels: not a FP
    pred1 = np.array([[a, a, a, a, a], [b, b, b, b, b], [b, b, b, b, c], [b, b, b, b, c]])
    # img2: a also covers an ignored pixel, left out of the union: IoU 4/4; b is missed (FN);
    # c has 1 of its 3 pixels on ignored ones (<= half): a FP
    pred2 = np.array([[a, a, a, c], [a, a, c, c]])
    # img3: b matches with IoU 2/3; c has exactly half of its pixels on ignored ones: a FP
    pred3 = np.array([[b, b, c, c]])
    predictions = []
    for name, pred in (("img1.jpg", pred1), ("img2.jpg", pred2), ("img3.jpg", pred3)):
        predictions += _encode(TINY_DATASET, tiny_dataset[name], pred)
    res = pq_tool.evaluate_semantic_pq(TINY_DATASET, predictions)
    assert {k: (v["TP"], v["FP"], v["FN"]) for k, v in res["per_class"].items()} == {
        "a": (1, 1, 1), "b": (2, 0, 1), "c": (0, 2, 0),
    }  # fmt: skip
    # a: IoU sum 1 over TP + FP/2 + FN/2 = 2; b: (8/13 + 2/3) / 2.5; c: 0
    assert res["per_class"]["a"]["PQ"] == pytest.approx(100 * 1 / 2)
    assert res["per_class"]["b"]["PQ"] == pytest.approx(100 * (8 / 13 + 2 / 3) / 2.5)
    assert res["per_class"]["b"]["SQ"] == pytest.approx(100 * (8 / 13 + 2 / 3) / 2)
    assert res["PQ"] == pytest.approx(100 * 79 / 234)  # (1/2 + 20/39 + 0) / 3 = 33.76
    assert res["SQ"] == pytest.approx(100 * 64 / 117)  # (1 + 25/39 + 0) / 3 = 54.70
    assert res["RQ"] == pytest.approx(100 * 13 / 30)  # (1/2 + 4/5 + 0) / 3 = 43.33

    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps(predictions))
    assert pq_tool.main(["--dataset-name", TINY_DATASET, "--json-file", str(json_file)]) == 0
    assert "PQ 33.76  SQ 54.70  RQ 43.33" in capsys.readouterr().out


def _panopticapi_pq(pairs, num_classes: int, tmp_path) -> Dict[str, float]:
    """panopticapi's own PQ ("All") of (gt, pred) label maps (255 = void), written as panoptic
    PNGs in which each class present in an image is one segment."""
    from panopticapi.evaluation import pq_compute
    from panopticapi.utils import id2rgb

    def write(kind, i, label):
        ids = np.where(label == 255, 0, label + 1)  # segment id = class + 1; 0 = void
        os.makedirs(tmp_path / kind, exist_ok=True)
        Image.fromarray(id2rgb(ids)).save(tmp_path / kind / f"{i}.png")
        segments = [
            {"id": int(k), "category_id": int(k) - 1, "iscrowd": 0, "area": int((ids == k).sum())}
            for k in np.unique(ids) if k != 0
        ]  # fmt: skip
        return {"image_id": i, "file_name": f"{i}.png", "segments_info": segments}

    gt_json = {
        "images": [{"id": i, "file_name": f"{i}.png"} for i in range(len(pairs))],
        # panopticapi's "Things" / "Stuff" split needs a segment of each ("All" ignores it)
        "categories": [
            {"id": k, "isthing": int(k == pairs[0][1][-1, -1])} for k in range(num_classes)
        ],
        "annotations": [write("gt", i, gt) for i, (gt, _) in enumerate(pairs)],
    }
    pred_json = {"annotations": [write("pred", i, pred) for i, (_, pred) in enumerate(pairs)]}
    for name, content in (("gt.json", gt_json), ("pred.json", pred_json)):
        (tmp_path / name).write_text(json.dumps(content))
    res = pq_compute(
        str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), str(tmp_path / "gt"),
        str(tmp_path / "pred"),
    )  # fmt: skip
    return {k.upper(): 100 * res["All"][k] for k in ("pq", "sq", "rq")}


def test_pq_agrees_with_panopticapi(synthetic_root, tmp_path):
    name = f"{PREFIX}_sem_seg_val"
    meta = MetadataCatalog.get(name)
    rng = np.random.default_rng(0)
    pairs, predictions, records = [], [], []
    for file_name, gt in _ground_truths(name):
        gt[:10] = 255  # an ignored band, predicted as some class
        # right on a random half of the classes, shifted sideways on the others
        right = rng.random(256)[gt] < 0.5
        pred = np.where(right, gt, np.roll(gt, 20, axis=1))
        pred[pred == 255] = rng.integers(0, len(meta.stuff_classes))
        pairs.append((gt, pred))
        predictions += _encode(name, file_name, pred)
        gt_file = str(tmp_path / os.path.basename(file_name).replace(".jpg", ".png"))
        Image.fromarray(gt.astype(np.uint8)).save(gt_file)
        records.append({"file_name": file_name, "sem_seg_file_name": gt_file})
    masked = f"{PREFIX}_sem_seg_val_masked"
    if masked not in DatasetCatalog.list():
        DatasetCatalog.register(masked, lambda: records)
        keys = ("stuff_classes", "stuff_dataset_id_to_contiguous_id", "ignore_label")
        MetadataCatalog.get(masked).set(**{k: meta.get(k) for k in keys})

    ours = pq_tool.evaluate_semantic_pq(masked, predictions)
    reference = _panopticapi_pq(pairs, len(meta.stuff_classes), tmp_path / "panopticapi")
    assert 0 < ours["PQ"] < 100
    for k in ("PQ", "SQ", "RQ"):
        assert ours[k] == pytest.approx(reference[k]), k


def test_pq_bad_predictions_are_one_line_errors(tiny_dataset, tmp_path, capsys):
    img1 = tiny_dataset["img1.jpg"]
    (good,) = _encode(TINY_DATASET, img1, np.zeros((4, 5), dtype=np.uint8))
    (small,) = _encode(TINY_DATASET, img1, np.zeros((2, 5), dtype=np.uint8))
    cases = {
        "not in dataset": [dict(good, file_name="/elsewhere/img9.jpg")],
        "category_id 99": [dict(good, category_id=99)],
        "size": [small],
        "overlap": [good, dict(good, category_id=20)],
    }
    for expected, predictions in cases.items():
        json_file = tmp_path / "predictions.json"
        json_file.write_text(json.dumps(predictions))
        argv = ["--dataset-name", TINY_DATASET, "--json-file", str(json_file)]
        assert expected in _run_tool_error(pq_tool.main, argv, capsys)
    argv = ["--dataset-name", "no_such_dataset", "--json-file", str(json_file)]
    assert "not registered" in _run_tool_error(pq_tool.main, argv, capsys)


TOOLS = [
    "analyze_model.py",
    "convert-torchvision-to-d2.py",
    "convert-pretrained-swin-model-to-d2.py",
    "evaluate_pq_for_semantic_segmentation.py",
]


@pytest.mark.parametrize("tool", TOOLS)
def test_help_has_an_example(tool, capsys):
    with pytest.raises(SystemExit) as e:
        importlib.import_module(tool[: -len(".py")]).main(["--help"])
    assert e.value.code == 0
    assert "e.g. python tools/" + tool in capsys.readouterr().out


def test_tools_run_as_scripts_from_another_folder(tmp_path):
    """As a user runs them: `python tools/x.py`, no path set up, the package imported as
    installed (here: through PYTHONPATH) and sibling scripts found next to the script."""
    for script in ("convert-pretrained-swin-model-to-d2.py", "inspect_checkpoint.py"):
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, "tools", script), "--help"],
            cwd=str(tmp_path), capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "usage:" in proc.stdout
