"""
Hugging Face ``Mask2FormerForUniversalSegmentation`` checkpoints <-> this project's.

A Hugging Face (HF) checkpoint is a directory written by ``save_pretrained``: ``config.json``
plus ``model.safetensors`` or ``pytorch_model.bin`` (or their sharded ``*.index.json`` form).
Only Swin backbones exist on the HF side; both models compute the same function, so the
conversion is a renaming of parameters plus two fusions:

- Swin window attention: HF ``attention.self.{query,key,value}`` = our ``attn.qkv`` split in
  three along the output dimension;
- masked-attention decoder self-attention: HF ``self_attn.{q,k,v}_proj`` = our
  ``nn.MultiheadAttention.in_proj_*`` split in three.

Everything else is a one-to-one rename. Parameter names and config fields of both sides are
data, in ``hf_key_map.json``; settings that one side cannot express are errors.
``transformers`` is needed only to read an HF config (for its defaults).
"""

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache, partial, reduce
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch

__all__ = [
    "HFConversionError",
    "HFCheckpointInfo",
    "hf_to_d2_state_dict",
    "d2_to_hf_state_dict",
    "hf_config_to_d2_overrides",
    "config_differences",
    "d2_config_to_hf_config",
    "read_hf_config",
    "read_hf_weights",
    "load_hf_checkpoint",
    "read_class_names",
    "register_class_names",
]


class HFConversionError(ValueError):
    """A Hugging Face directory, key or config value this converter cannot map."""


KEY_MAP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_key_map.json")


class _Rule(NamedTuple):
    """One mapping of :data:`KEY_MAP_FILE`: ``parts`` is empty for a plain rename."""

    hf: str
    ours: str
    parts: Tuple[str, ...]

    def source(self, to_d2: bool) -> "re.Pattern[str]":
        return _template_regex(self.hf if to_d2 else self.ours, self.parts)


@lru_cache(maxsize=None)
def _key_map() -> Dict[str, Any]:
    try:
        with open(KEY_MAP_FILE) as f:
            table = json.load(f)
        table["rules"] = tuple(
            [_Rule(hf, ours, ()) for hf, ours in table["renames"]]
            + [_Rule(r["hf"], r["ours"], tuple(r["parts"])) for r in table["fusions"]]
        )
        table["config_fields"] = {
            k: [tuple(p) for p in v] for k, v in table["config_fields"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HFConversionError(f"{KEY_MAP_FILE}: unreadable ({type(e).__name__}: {e})") from e
    return table


def key_map_rules() -> Tuple[_Rule, ...]:
    """The renames and fusions of :data:`KEY_MAP_FILE`, fusions last."""
    return _key_map()["rules"]


def config_fields(part: str) -> List[Tuple[str, str]]:
    """(our config key, HF attribute) pairs of :data:`KEY_MAP_FILE`: ``part`` "head" for
    ``Mask2FormerConfig``, "swin" for its ``backbone_config``."""
    return _key_map()["config_fields"][part]


def _template_regex(template: str, parts: Sequence[str] = ()) -> "re.Pattern[str]":
    """``a.{x}.b`` -> a regex with a group ``x`` for one name component (``{part}``: ``parts``)."""
    pieces = re.split(r"\{(\w+)\}", template)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            out.append(re.escape(piece))
        elif piece == "part":
            out.append("(?P<part>" + "|".join(map(re.escape, parts)) + ")")
        else:
            out.append(f"(?P<{piece}>[^.]+)")
    return re.compile("".join(out) + r"\Z")


def _convert(
    state: Mapping[str, torch.Tensor], to_d2: bool, source: str
) -> Dict[str, torch.Tensor]:
    """Rename (and fuse or split) every key of ``state``; ``source`` names it in errors."""
    rules = [(rule, rule.source(to_d2)) for rule in key_map_rules()]
    out: Dict[str, torch.Tensor] = {}
    fused: Dict[str, Dict[str, Optional[torch.Tensor]]] = {}  # our name -> {part: HF tensor}
    unknown = []
    for key, value in state.items():
        matches = [(rule, m.groupdict()) for rule, regex in rules for m in [regex.match(key)] if m]
        if not matches:
            unknown.append(key)
            continue
        rule, names = matches[0]
        if not rule.parts:
            out[(rule.ours if to_d2 else rule.hf).format(**names)] = value
        elif to_d2:
            parts = fused.setdefault(rule.ours.format(**names), dict.fromkeys(rule.parts))
            parts[names["part"]] = value
        else:
            if value.shape[0] % len(rule.parts):
                raise HFConversionError(
                    f"{source}: {key} {tuple(value.shape)} does not split in {len(rule.parts)}"
                )
            for part, chunk in zip(rule.parts, value.chunk(len(rule.parts), dim=0)):
                out[rule.hf.format(part=part, **names)] = chunk.clone()
    if unknown:
        raise HFConversionError(
            f"{source}: {len(unknown)} key(s) have no counterpart in the other format, e.g. "
            f"{unknown[:5]} (is this a Mask2FormerForUniversalSegmentation with a Swin backbone?)"
        )
    for name, parts in fused.items():
        missing = [p for p, tensor in parts.items() if tensor is None]
        if missing:
            raise HFConversionError(f"{source}: no {', '.join(missing)} part(s) of {name}")
        out[name] = torch.cat(list(parts.values()), dim=0)
    return out


def hf_to_d2_state_dict(
    hf_state: Mapping[str, torch.Tensor], source: str = "HF state dict"
) -> Dict[str, torch.Tensor]:
    """HF ``Mask2FormerForUniversalSegmentation`` state dict -> our model's names."""
    return _convert(hf_state, True, source)


def d2_to_hf_state_dict(
    state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> Dict[str, torch.Tensor]:
    """Our Swin model's state dict -> HF ``Mask2FormerForUniversalSegmentation`` names."""
    if not any(k.startswith("backbone.layers.") for k in state):
        raise HFConversionError(
            f"{source}: not a Swin model (no backbone.layers.* keys); Hugging Face's "
            "Mask2Former supports Swin backbones only, so a ResNet model cannot be converted"
        )
    return _convert(state, False, source)


STAGES = ["stage1", "stage2", "stage3", "stage4"]
# what our model hard-wires, as HF attributes; HF configs with other values cannot be mapped
HF_FIXED = {
    "activation_function": "relu",
    "encoder_feedforward_dim": 1024,
    "feature_strides": [4, 8, 16, 32],
}
SWIN_FIXED = {
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
    "out_features": STAGES,
}
# what HF hard-wires, as our config keys; our configs with other values cannot be mapped
D2_FIXED = {
    "MODEL.META_ARCHITECTURE": "MaskFormer",
    "MODEL.SEM_SEG_HEAD.NAME": "MaskFormerHead",
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "MSDeformAttnPixelDecoder",
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "multi_scale_pixel_decoder",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
    "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SWIN.PATCH_NORM": True,
    "MODEL.SWIN.QK_SCALE": None,
}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_fixed(
    get: Callable[[str], Any], fixed: Mapping[str, Any], where: str, other: str
) -> None:
    for key, want in fixed.items():
        got = _plain(get(key))
        if got != want:
            raise HFConversionError(
                f"{where}: {key} = {got!r} is not supported by {other} (needs {want!r})"
            )


def hf_config_to_d2_overrides(hf_config: Any, source: str = "config.json") -> Dict[str, Any]:
    """
    A ``transformers.Mask2FormerConfig`` -> our config keys and values (``{"MODEL.SWIN.DEPTHS":
    [2, 2, 6, 2], ...}``), everything that defines the model; the class count comes from
    ``id2label``.
    """
    swin = hf_config.backbone_config
    if swin is None or swin.model_type != "swin":
        kind = getattr(swin, "model_type", hf_config.backbone)
        raise HFConversionError(f"{source}: backbone {kind!r} is not supported; only Swin is")
    _check_fixed(partial(getattr, hf_config), HF_FIXED, source, "this project's Mask2Former")
    _check_fixed(
        partial(getattr, swin), SWIN_FIXED, source + " backbone_config", "this project's Swin"
    )
    overrides: Dict[str, Any] = {"MODEL.BACKBONE.NAME": "D2SwinTransformer"}
    overrides.update({ours: _plain(getattr(swin, hf)) for ours, hf in config_fields("swin")})
    overrides.update({ours: _plain(getattr(hf_config, hf)) for ours, hf in config_fields("head")})
    overrides["MODEL.SEM_SEG_HEAD.NUM_CLASSES"] = len(hf_config.id2label)
    return overrides


def _cfg_value(cfg: Any, key: str) -> Any:
    """``cfg.MODEL.SWIN.DEPTHS`` for ``key`` "MODEL.SWIN.DEPTHS", tuples as lists."""
    return _plain(reduce(getattr, key.split("."), cfg))


def config_differences(overrides: Mapping[str, Any], cfg: Any) -> List[str]:
    """One line for each key of ``overrides`` (:attr:`HFCheckpointInfo.overrides`) whose value
    in our config ``cfg`` differs."""
    return [
        f"{key} = {_cfg_value(cfg, key)!r} in the config, {want!r} in the Hugging Face checkpoint"
        for key, want in overrides.items()
        if _cfg_value(cfg, key) != want
    ]


def d2_config_to_hf_config(cfg: Any, class_names: Sequence[str]) -> Dict[str, Any]:
    """Our config -> the dict of an HF ``config.json`` (``Mask2FormerConfig.from_dict`` reads it)."""
    get = partial(_cfg_value, cfg)
    if get("MODEL.BACKBONE.NAME") != "D2SwinTransformer":
        raise HFConversionError(
            f"MODEL.BACKBONE.NAME = {get('MODEL.BACKBONE.NAME')!r}: Hugging Face's Mask2Former "
            "supports Swin backbones only (D2SwinTransformer)"
        )
    _check_fixed(get, D2_FIXED, "config", "Hugging Face's Mask2Former")
    num_classes = get("MODEL.SEM_SEG_HEAD.NUM_CLASSES")
    if len(class_names) != num_classes:
        raise HFConversionError(
            f"{len(class_names)} class names for MODEL.SEM_SEG_HEAD.NUM_CLASSES = {num_classes}"
        )
    backbone = {hf: get(ours) for ours, hf in config_fields("swin")}
    backbone.update(model_type="swin", out_indices=[1, 2, 3, 4], **SWIN_FIXED)
    config = {hf: get(ours) for ours, hf in config_fields("head")}
    config.update(HF_FIXED)
    config.update(
        model_type="mask2former",
        architectures=["Mask2FormerForUniversalSegmentation"],
        backbone_config=backbone,
        id2label={str(i): name for i, name in enumerate(class_names)},
        label2id={name: i for i, name in enumerate(class_names)},
    )
    return config


def read_hf_config(directory: str) -> Any:
    """``directory/config.json`` as a ``transformers.Mask2FormerConfig``, checked to be one."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise HFConversionError(f"{directory}: no config.json (not a save_pretrained directory?)")
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise HFConversionError(f"{path}: unreadable ({e})") from e
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != "mask2former":
        raise HFConversionError(
            f"{path}: model_type {model_type!r} (architectures {raw.get('architectures')}) is not "
            "Mask2Former; this converter reads Mask2FormerForUniversalSegmentation checkpoints"
        )
    from transformers import Mask2FormerConfig

    return Mask2FormerConfig.from_dict(raw)


def read_hf_weights(directory: str) -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights of an HF directory (safetensors preferred), and the file they came from."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = os.path.join(directory, index_name)
        if os.path.isfile(index):
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            state: Dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_weight_file(os.path.join(directory, shard)))
            return state, index
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return _read_weight_file(path), path
    found = sorted(os.listdir(directory))
    raise HFConversionError(
        f"{directory}: no weights (model.safetensors, pytorch_model.bin or a sharded *.index.json); "
        f"the directory holds {found}"
    )


def _read_weight_file(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise HFConversionError(f"{path}: weight file listed in the index does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any reader error: name the file
        raise HFConversionError(f"{path}: unreadable weight file ({type(e).__name__}: {e})") from e


@dataclass
class HFCheckpointInfo:
    """What an HF directory says about the model besides its weights."""

    directory: str
    weights_file: str
    overrides: Dict[str, Any]  # our config keys -> values
    class_names: List[str] = field(default_factory=list)


def load_hf_checkpoint(directory: str) -> Tuple[Dict[str, torch.Tensor], HFCheckpointInfo]:
    """
    An HF ``save_pretrained`` directory -> (state dict in our names, :class:`HFCheckpointInfo`).
    The state dict loads into the model of a config with ``info.overrides`` applied.
    """
    if not os.path.isdir(directory):
        raise HFConversionError(f"{directory}: not a directory")
    hf_config = read_hf_config(directory)
    config_path = os.path.join(directory, "config.json")
    overrides = hf_config_to_d2_overrides(hf_config, config_path)
    hf_state, weights_file = read_hf_weights(directory)
    state = hf_to_d2_state_dict(hf_state, weights_file)
    _add_missing_position_indices(state, overrides["MODEL.SWIN.WINDOW_SIZE"])
    ids = sorted(hf_config.id2label)
    if ids != list(range(len(ids))):
        raise HFConversionError(
            f"{config_path}: id2label ids {ids[:10]}... are not 0..{len(ids) - 1}"
        )
    names = [hf_config.id2label[i] for i in ids]
    return state, HFCheckpointInfo(directory, weights_file, overrides, names)


def _add_missing_position_indices(state: Dict[str, torch.Tensor], window_size: int) -> None:
    """Files that leave out the Swin blocks' ``relative_position_index`` buffers (a function of
    the window size only) get them back, as our checkpoints and model have them."""
    from .modeling.backbone.swin_blocks import relative_position_index

    suffix = "relative_position_bias_table"
    for key in [k for k in state if k.endswith(suffix)]:
        state.setdefault(
            key[: -len(suffix)] + "relative_position_index", relative_position_index(window_size)
        )


def read_class_names(metadata_json: str) -> List[str]:
    """The ``class_names`` list of a ``metadata.json`` written by ``tools/convert_hf_to_d2.py``."""
    try:
        with open(metadata_json) as f:
            names = json.load(f)["class_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("class_names is not a list of strings")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HFConversionError(
            f"{metadata_json}: no class_names list ({type(e).__name__}: {e})"
        ) from e
    return names


def register_class_names(dataset_name: str, metadata_json: str) -> str:
    """
    Register the class names of :func:`read_class_names` as detectron2 metadata
    ``dataset_name`` (``thing_classes`` and ``stuff_classes``, both in class-id order), so that
    drawings name the classes: set ``DATASETS.TEST`` to ``(dataset_name,)``. Returns
    ``dataset_name``.
    """
    from detectron2.data import MetadataCatalog

    names = read_class_names(metadata_json)
    MetadataCatalog.get(dataset_name).set(thing_classes=names, stuff_classes=list(names))
    return dataset_name
