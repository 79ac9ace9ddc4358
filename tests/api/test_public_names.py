"""Every public name of the original ``mask2former`` and ``mask2former_video`` packages
(tests/reference/public_names.txt and video_public_names.txt, ``module.path:name``) imports from this package and is the same kind of thing: a module where the
reference lists names under ``module.path.name``, a class where the name is capitalised, a
function otherwise. The registered components are found in detectron2's registries."""
import importlib
import inspect
import os

import pytest

from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY

from model_utils import REFERENCE


def _public_names(file_name: str):
    with open(os.path.join(REFERENCE, file_name)) as f:
        return [tuple(line.strip().split(":")) for line in f if line.strip() and not line.startswith("#")]


IMAGE_NAMES = _public_names("public_names.txt")
VIDEO_NAMES = _public_names("video_public_names.txt")
NAMES = IMAGE_NAMES + VIDEO_NAMES
MODULE_PATHS = {module for module, _ in NAMES}


def _expected_kind(module: str, name: str) -> str:
    if f"{module}.{name}" in MODULE_PATHS or any(m.startswith(f"{module}.{name}.") for m in MODULE_PATHS):
        return "module"
    return "class" if name[0].isupper() else "function"


def test_reference_files_are_complete():
    assert len(IMAGE_NAMES) == 105
    assert len(VIDEO_NAMES) == 47
    assert len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize("module,name", NAMES, ids=[f"{m}:{n}" for m, n in NAMES])
def test_public_name_imports_as_the_same_kind(module, name):
    obj = getattr(importlib.import_module(module), name)
    kind = _expected_kind(module, name)
    if kind == "module":
        assert inspect.ismodule(obj), f"{module}:{name} is {type(obj)}, expected a module"
    elif kind == "class":
        assert inspect.isclass(obj), f"{module}:{name} is {type(obj)}, expected a class"
    else:
        assert inspect.isfunction(obj), f"{module}:{name} is {type(obj)}, expected a function"


def test_same_name_is_the_same_object_everywhere():
    """A name exported at several paths (package re-exports) is one object, never a copy."""
    by_name = {}
    for module, name in NAMES:
        if _expected_kind(module, name) == "module":
            continue
        by_name.setdefault(name, []).append(getattr(importlib.import_module(module), name))
    # names the original defines twice on purpose (two different objects there too)
    distinct = {"MLP", "build_transform_gen", "get_metadata"}
    for name, objs in by_name.items():
        if name not in distinct:
            assert all(o is objs[0] for o in objs), name


@pytest.mark.parametrize(
    "registry,name",
    [
        (META_ARCH_REGISTRY, "MaskFormer"),
        (META_ARCH_REGISTRY, "VideoMaskFormer"),
        (BACKBONE_REGISTRY, "D2SwinTransformer"),
        (SEM_SEG_HEADS_REGISTRY, "MaskFormerHead"),
        (SEM_SEG_HEADS_REGISTRY, "PerPixelBaselineHead"),
        (SEM_SEG_HEADS_REGISTRY, "PerPixelBaselinePlusHead"),
        (SEM_SEG_HEADS_REGISTRY, "BasePixelDecoder"),
        (SEM_SEG_HEADS_REGISTRY, "TransformerEncoderPixelDecoder"),
        (SEM_SEG_HEADS_REGISTRY, "MSDeformAttnPixelDecoder"),
    ],
)
def test_components_are_registered_where_the_original_registers_them(registry, name):
    import mask2former  # noqa: F401
    import mask2former_video  # noqa: F401

    assert name in registry, f"{name} is not in detectron2's {registry._name} registry"


def test_transformer_decoders_are_registered():
    from mask2former.modeling.transformer_decoder.maskformer_transformer_decoder import (
        TRANSFORMER_DECODER_REGISTRY,
    )

    import mask2former_video  # noqa: F401

    names = (
        "MultiScaleMaskedTransformerDecoder",
        "StandardTransformerDecoder",
        "VideoMultiScaleMaskedTransformerDecoder",
    )
    for name in names:
        assert name in TRANSFORMER_DECODER_REGISTRY
