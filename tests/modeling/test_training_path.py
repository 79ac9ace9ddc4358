"""The training path's shortcuts compute exactly what the literal computation does."""
import pytest
import torch

from mask2former.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", [(2, 12, 12), (1, 25, 17), (3, 1, 7)])
def test_unpadded_position_encoding_is_the_all_valid_mask_encoding(normalize, shape):
    batch, h, w = shape
    pe = PositionEmbeddingSine(16, normalize=normalize)
    out = pe(torch.zeros(batch, 3, h, w))
    literal = pe(torch.zeros(batch, 3, h, w), torch.zeros(shape, dtype=torch.bool))
    assert out.is_contiguous() and out.shape == (batch, 32, h, w)
    assert torch.equal(out, literal)


def _kept_bytes(fn, *args) -> int:
    """Bytes of the storages that ``fn(*args)`` creates and its graph still holds for backward
    when it returns, its outputs not counted. (Counted by storage, not with saved-tensor hooks,
    which the model's own hooks would hide: see mask2former/modeling/recompute.py.)"""
    from torch.utils._pytree import tree_leaves

    from benchmarks.common import PeakTensorMemory

    with PeakTensorMemory() as memory:
        out = fn(*args)
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in outputs}
        return memory.held - sum(storages.values())


def test_activation_checkpointing_keeps_less_for_backward(one_thread):
    from detectron2.modeling import build_model

    from benchmarks.training import synthetic_batch
    from model_utils import load_cfg
    from training_step_reference import CONFIG, OPTS

    saved = {}
    for on in (False, True):
        cfg = load_cfg(CONFIG, [*OPTS, "MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING", str(on)])
        torch.manual_seed(0)
        model = build_model(cfg).train()
        with torch.no_grad():
            features = model.backbone(model.preprocess_image(synthetic_batch(2, 96, 7, seed=0)).tensor)
        saved[on] = _kept_bytes(model.sem_seg_head, features)
    # the head's encoder and decoder layers keep their inputs only
    assert saved[True] < 0.7 * saved[False], saved


def test_activation_checkpointing_of_the_backbone_blocks(one_thread):
    """A ResNet with frozen batch norm recomputes its blocks in backward (less kept, same
    parameter names); one whose batch norm updates running statistics is left as it is."""
    from detectron2.modeling import build_model

    from benchmarks.training import synthetic_batch
    from mask2former.modeling.backbone.checkpointing import CheckpointedSequential
    from model_utils import load_cfg
    from training_step_reference import CONFIG, OPTS

    images = None
    saved, keys = {}, {}
    for on in (False, True):
        cfg = load_cfg(CONFIG, [*OPTS, "MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING", str(on)])
        model = build_model(cfg).train()
        if images is None:
            images = model.preprocess_image(synthetic_batch(2, 96, 7, seed=0)).tensor
        assert all(isinstance(s, CheckpointedSequential) == on for s in model.backbone.stages)
        with torch.no_grad():
            stem = model.backbone.stem(images)
        # the stages only: the stem (not checkpointed) keeps most at this small size
        saved[on] = _kept_bytes(lambda x: [x := stage(x) for stage in model.backbone.stages], stem.requires_grad_())
        keys[on] = list(model.state_dict())
    assert keys[True] == keys[False]
    assert saved[True] < 0.5 * saved[False], saved

    cfg = load_cfg(CONFIG, [*OPTS, "MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING", "True", "MODEL.RESNETS.NORM", "BN"])
    model = build_model(cfg)
    assert not any(isinstance(s, CheckpointedSequential) for s in model.backbone.stages)
