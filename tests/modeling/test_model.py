"""The MaskFormer meta-architecture: checkpoint layout, configs, inference outputs, training."""
import os

import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Instances

import mask2former  # noqa: F401  (registers the components)
from model_utils import (
    REPO,
    load_cfg,
    official_state_dicts,
    random_image,
    reference_image_config_paths,
    tiny_opts,
)

OFFICIAL = official_state_dicts()
IMAGE_CONFIGS = reference_image_config_paths()

PANOPTIC_R50 = "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"


def _shape_str(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape)


@pytest.mark.parametrize("config_path", sorted(OFFICIAL))
def test_state_dict_matches_reference(config_path):
    model = build_model(load_cfg(config_path))
    ours = {k: _shape_str(v) for k, v in model.state_dict().items()}
    reference = OFFICIAL[config_path]
    assert sorted(set(reference) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(reference)) == [], "unexpected keys"
    wrong = {k: (ours[k], reference[k]) for k in reference if ours[k] != reference[k]}
    assert wrong == {}


def test_reference_checkpoint_loads_without_missing_or_unexpected_keys(tmp_path):
    """A checkpoint with the reference layout, saved as detectron2 does, loads as it is."""
    cfg = load_cfg(PANOPTIC_R50, tiny_opts())
    model = build_model(cfg)
    torch.manual_seed(1)
    state = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in model.state_dict().items()}
    path = tmp_path / "model_final.pth"
    torch.save({"model": state}, path)
    fresh = build_model(cfg)
    checkpointer = DetectionCheckpointer(fresh)
    captured = []
    load_model = checkpointer._load_model
    checkpointer._load_model = lambda ckpt: captured.append(load_model(ckpt)) or captured[-1]
    checkpointer.load(str(path))
    assert captured[0].missing_keys == [] and captured[0].unexpected_keys == []
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k


MODEL_CONFIGS = [p for p in IMAGE_CONFIGS if not os.path.basename(p).startswith("Base-")]


@pytest.mark.parametrize("config_path", MODEL_CONFIGS)
def test_model_builds_from_every_config(config_path):
    assert os.path.exists(os.path.join(REPO, config_path))
    cfg = load_cfg(config_path)
    # Built on the meta device: the structure is checked without paying for weight init.
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    assert type(model).__name__ == "MaskFormer"
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    assert model.sem_seg_head.predictor.class_embed.out_features == num_classes + 1
    assert model.sem_seg_head.predictor.query_feat.num_embeddings == cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES


def test_original_module_path_is_the_registered_model():
    from mask2former.maskformer_model import MaskFormer

    assert META_ARCH_REGISTRY.get("MaskFormer") is MaskFormer


def _tiny_model(task_opts=(), num_classes=133):
    cfg = load_cfg(PANOPTIC_R50, tiny_opts(num_classes) + list(task_opts))
    model = build_model(cfg)
    model.eval()
    return cfg, model


@pytest.mark.parametrize("size,out_size", [((97, 131), (97, 131)), ((64, 50), (120, 95)), ((33, 65), (33, 65))])
def test_all_three_outputs_for_odd_sizes(size, out_size):
    torch.manual_seed(0)
    _, model = _tiny_model()
    inputs = [{"image": random_image(*size), "height": out_size[0], "width": out_size[1]}]
    with torch.no_grad():
        (out,) = model(inputs)
    assert out["sem_seg"].shape == (133, *out_size)
    assert torch.isfinite(out["sem_seg"]).all()
    panoptic, segments = out["panoptic_seg"]
    assert panoptic.shape == out_size and panoptic.dtype == torch.int32
    ids = set(torch.unique(panoptic).tolist()) - {0}
    assert ids == {s["id"] for s in segments}
    for s in segments:
        assert s["isthing"] == (s["category_id"] < 80)  # COCO panoptic: things first
    inst = out["instances"]
    assert isinstance(inst, Instances) and inst.image_size == out_size
    assert inst.pred_masks.shape[1:] == out_size and len(inst) <= 10
    assert (inst.pred_classes < 80).all(), "panoptic-on instance inference keeps thing classes only"
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()


def test_batch_of_two_images_of_different_sizes():
    _, model = _tiny_model(["MODEL.MASK_FORMER.TEST.PANOPTIC_ON", "False", "MODEL.MASK_FORMER.TEST.INSTANCE_ON", "False"])
    inputs = [{"image": random_image(70, 90)}, {"image": random_image(45, 33, seed=1)}]
    with torch.no_grad():
        outs = model(inputs)
    assert [tuple(o["sem_seg"].shape[1:]) for o in outs] == [(70, 90), (45, 33)]
    assert set(outs[0]) == {"sem_seg"}


def test_image_smaller_than_size_divisibility_is_padded():
    _, model = _tiny_model()
    with torch.no_grad():
        (out,) = model([{"image": random_image(7, 5)}])
    assert out["sem_seg"].shape[1:] == (7, 5)
    assert out["panoptic_seg"][0].shape == (7, 5)


def test_bad_image_shape_names_the_input():
    _, model = _tiny_model()
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['image'\]"):
        model([{"image": torch.zeros(1, 32, 32)}])


def test_unknown_config_key_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_BASE_: {os.path.join(REPO, PANOPTIC_R50)}\nMODEL:\n  MASK_FORMER:\n    NUM_QUERIES_TYPO: 3\n")
    from detectron2.config import get_cfg
    from detectron2.projects.deeplab import add_deeplab_config
    from mask2former.config import add_maskformer2_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    with pytest.raises(KeyError, match="NUM_QUERIES_TYPO"):
        cfg.merge_from_file(str(bad))


def test_wrong_backbone_name_is_a_clear_error():
    cfg = load_cfg(PANOPTIC_R50, ["MODEL.BACKBONE.NAME", "D2SwinTransformerTypo"])
    with pytest.raises(KeyError, match="MODEL.BACKBONE.NAME.*D2SwinTransformerTypo"):
        build_model(cfg)


def test_panoptic_needs_thing_metadata():
    cfg = load_cfg(PANOPTIC_R50, tiny_opts() + ["DATASETS.TRAIN", "('no_such_dataset',)"])
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match="thing_dataset_id_to_contiguous_id"):
        with torch.no_grad():
            model([{"image": random_image(32, 32)}])


def _two_object_sample(h=64, w=64):
    image = torch.zeros(3, h, w)
    image[:, :, :] = torch.tensor([30.0, 90.0, 30.0]).view(3, 1, 1)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 8:30, 6:40] = True
    masks[1, 36:60, 30:58] = True
    image[:, masks[0]] = torch.tensor([220.0, 40.0, 40.0]).view(3, 1)
    image[:, masks[1]] = torch.tensor([40.0, 40.0, 220.0]).view(3, 1)
    inst = Instances((h, w))
    inst.gt_classes = torch.tensor([1, 3])
    inst.gt_masks = masks
    return {"image": image, "instances": inst}


def test_losses_finite_and_decreasing_when_overfitting_one_image():
    torch.manual_seed(0)
    cfg = load_cfg(PANOPTIC_R50, tiny_opts(num_classes=5))
    model = build_model(cfg)
    model.train()
    sample = _two_object_sample()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(40):
        losses = model([sample])
        expected = {"loss_ce", "loss_mask", "loss_dice"} | {
            f"{k}_{i}" for k in ("loss_ce", "loss_mask", "loss_dice") for i in range(3)
        }
        assert set(losses) == expected
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last < 0.6 * first, history


def test_default_predictor_runs_on_a_bgr_numpy_image():
    cfg = load_cfg(PANOPTIC_R50, tiny_opts() + ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96"])
    predictor = DefaultPredictor(cfg)
    image = random_image(50, 70).permute(1, 2, 0).numpy().astype("uint8")
    out = predictor(image)
    assert out["sem_seg"].shape[1:] == (50, 70)
    assert out["panoptic_seg"][0].shape == (50, 70)
