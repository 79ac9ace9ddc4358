"""`add_maskformer2_config` adds exactly the reference keys, with the reference defaults, plus
this project's own keys listed in PROJECT_KEYS (which the reference configs never set)."""
import os

from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from mask2former import add_maskformer2_config
from model_utils import REFERENCE

CONFIG_KEYS = os.path.join(REFERENCE, "config_keys.txt")

# Keys of this project that the reference lacks -> their default (repr); each is opt-in, so the
# reference configs behave as in the reference.
PROJECT_KEYS = {
    "DATALOADER.SKIP_BAD_SAMPLES": "False",
    "TEST.IMS_PER_BATCH": "1",
    "TEST.EVALUATOR_THREADS": "0",
    "MODEL.MASK_FORMER.TEST.SEMANTIC_OUTPUT": "'scores'",
    "MODEL.MASK_FORMER.ACTIVATION_CHECKPOINTING": "False",
}


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        name = prefix + key
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _reference_keys() -> dict:
    keys = {}
    with open(CONFIG_KEYS) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, value = line.split(": ", 1)
                keys[key] = value
    return keys


def test_added_keys_and_defaults_equal_the_reference():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    before = _flatten(cfg)
    add_maskformer2_config(cfg)
    after = _flatten(cfg)
    added = {k: v for k, v in after.items() if k not in before or before[k] != v}
    reference = _reference_keys()
    assert not set(PROJECT_KEYS) & set(reference), "a project key became a reference key"
    expected = {**reference, **PROJECT_KEYS}
    assert set(added) <= set(expected), sorted(set(added) - set(expected))
    missing = set(expected) - set(after)
    assert not missing, sorted(missing)
    for key, text in expected.items():
        assert repr(after[key]) == text, (key, after[key], text)
