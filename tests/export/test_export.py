"""ONNX (onnxruntime) and TorchScript exports of the five reference image configs, shrunk to
tiny models with random weights: one exported file per config and format, run at two input
sizes that are not multiples of 32, against the PyTorch model."""
import onnx
import onnxruntime
import pytest
import torch

from detectron2.modeling import build_model
from mask2former.export.exporter import export
from mask2former.export.model import ExportableMaskFormer, check_exportable
from model_utils import load_cfg, official_state_dicts, tiny_opts

SIZES = ((96, 128), (100, 140))
LOGIT_TOLERANCE = 1e-3
FORMATS = ("onnx", "torchscript")
# Swin shrunk like the ResNets: every stage keeps a shifted-window block.
TINY_SWIN = ["MODEL.SWIN.EMBED_DIM", "32", "MODEL.SWIN.DEPTHS", "[2, 2, 2, 2]",
             "MODEL.SWIN.NUM_HEADS", "[1, 2, 4, 8]"]


def tiny_model(config_path: str, opts=()):
    """(model, cfg): the config shrunk (tiny_opts, then ``opts``), random weights (seed 0)."""
    cfg = load_cfg(config_path, tiny_opts() + (TINY_SWIN if "swin" in config_path else []) + list(opts))
    check_exportable(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        # confident classes, so that panoptic and instance inference keep some queries
        model.sem_seg_head.predictor.class_embed.weight.mul_(20.0)
    return model, cfg


def normalised_images(model):
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, h, w), generator=g).float() for h, w in SIZES]
    return [((x - model.pixel_mean) / model.pixel_std)[None] for x in images]


def _runner(fmt: str, path: str):
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda x: [torch.from_numpy(y) for y in session.run(None, {"image": x.numpy()})]
    module = torch.jit.load(path)

    def run(x):
        # with grad enabled, as a user calls it; the profiling executor's optimisation runs
        # cost more than these two calls
        with torch.enable_grad(), torch.jit.optimized_execution(False):
            return [y.detach() for y in module(x)]

    return run


@pytest.fixture(scope="module", params=list(official_state_dicts()))
def outputs(request, tmp_path_factory):
    """(model, images, {"pytorch"|format: per image (class logits, mask logits)}, ONNX file) of
    one config."""
    model, _ = tiny_model(request.param)
    exportable = ExportableMaskFormer(model)
    images = normalised_images(model)
    paths = {}
    with torch.no_grad():
        results = {"pytorch": [list(exportable(x)) for x in images]}
        for fmt in FORMATS:
            paths[fmt] = export(exportable, images[0], fmt, str(tmp_path_factory.mktemp(fmt)))
            run = _runner(fmt, paths[fmt])
            results[fmt] = [run(x) for x in images]
    return model, images, results, paths["onnx"]


def test_onnx_graph_has_standard_operators_only(outputs):
    graph = onnx.load(outputs[3]).graph
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    # the deformable attention as Gather + MatMul: onnxruntime's GridSample is slow
    assert "GridSample" not in {node.op_type for node in graph.node}
    # in whole chunks: the padded image has 21 * (H / 32) * (W / 32) encoder queries
    sampling = [node.op_type for node in graph.node if "GatherWeightedSum" in node.name]
    assert "Scan" in sampling and "Pad" not in sampling


def test_encoder_query_multiple_follows_padding_and_strides():
    model, _ = tiny_model(next(iter(official_state_dicts())))
    exportable = ExportableMaskFormer(model)
    assert exportable.encoder_query_multiple() == 16 + 4 + 1  # strides 8, 16, 32 of a multiple of 32
    exportable.size_divisibility = 64
    assert exportable.encoder_query_multiple() == 64 + 16 + 4
    exportable.size_divisibility = 16  # the stride-32 level's size is not H / 32
    assert exportable.encoder_query_multiple() == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_logits_equal_pytorch_at_two_sizes(outputs, fmt):
    _, images, results, _ = outputs
    for image, expected, got in zip(images, results["pytorch"], results[fmt]):
        for name, e, g in zip(("class", "mask"), expected, got):
            assert g.shape == e.shape, (fmt, name, tuple(image.shape))
            diff = (g - e).abs().max().item()
            assert diff <= LOGIT_TOLERANCE, (fmt, name, tuple(image.shape), diff)


def _postprocess(model, logits, image):
    """The model's own post-processing of one image's (class, mask) logits."""
    size = tuple(image.shape[-2:])
    div = model.size_divisibility
    padded = tuple((s + div - 1) // div * div for s in size)
    is_thing = model._thing_classes_mask(logits[0].shape[-1] - 1) if model.panoptic_on else None
    return model.postprocessor(logits[0][0], logits[1][0], padded, size, size, is_thing)


def assert_same_results(expected, got):
    """Semantic argmax on >= 99.9 % of pixels, the same panoptic segments, instance scores
    within 1e-3: the outputs of two sets of logits within LOGIT_TOLERANCE of each other."""
    if "sem_seg" in expected:
        agree = (expected["sem_seg"].argmax(0) == got["sem_seg"].argmax(0)).float().mean().item()
        assert agree >= 0.999, agree
    if "panoptic_seg" in expected:
        (e_ids, e_segments), (g_ids, g_segments) = expected["panoptic_seg"], got["panoptic_seg"]
        assert g_segments == e_segments
        assert (e_ids == g_ids).float().mean().item() >= 0.999
    if "instances" in expected:
        e, g = expected["instances"], got["instances"]
        assert torch.equal(e.pred_classes, g.pred_classes)
        assert torch.allclose(e.scores, g.scores, rtol=0, atol=1e-3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_outputs_postprocess_like_pytorch(outputs, fmt):
    model, images, results, _ = outputs
    for image, expected, got in zip(images, results["pytorch"], results[fmt]):
        with torch.no_grad():
            assert_same_results(_postprocess(model, expected, image), _postprocess(model, got, image))


@pytest.mark.parametrize(
    "opts, named",
    [
        (["MODEL.META_ARCHITECTURE", "VideoMaskFormer"], "MODEL.META_ARCHITECTURE = 'VideoMaskFormer'"),
        (["MODEL.META_ARCHITECTURE", "SemanticSegmentor"], "MODEL.META_ARCHITECTURE = 'SemanticSegmentor'"),
        (["MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "StandardTransformerDecoder"],
         "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = 'StandardTransformerDecoder'"),
    ],
)
def test_unexportable_config_names_what_is_not_exportable(opts, named):
    cfg = load_cfg("configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml", opts)
    with pytest.raises(ValueError, match="cannot be exported") as e:
        check_exportable(cfg)
    assert named in str(e.value)
