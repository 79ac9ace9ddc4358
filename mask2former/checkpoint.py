"""
Checkpoints that are never half written, and weight loading that says what did not fit.

Saving: :class:`Mask2FormerCheckpointer` writes every checkpoint, and the ``last_checkpoint``
tag, to a temporary file in the same directory, fsyncs it and renames it into place
(:mod:`.utils.atomic_io`). A run killed at any moment therefore leaves either the previous
checkpoint or the new one, and ``last_checkpoint`` only ever names a complete file. Leftover
temporary files (``*.partial``) of a killed run are removed by
:meth:`Mask2FormerCheckpointer.remove_stale_temp_files`.

Loading follows one of three rules (``match``):

- ``"exact"`` (evaluation, demo, resuming): every key of the model must be in the checkpoint
  with the same shape, and the checkpoint must have no other key.
- ``"init"`` (``MODEL.WEIGHTS`` at the start of a training):

  * a *backbone-only* checkpoint -- all keys under ``backbone.``, or a pretrained file loaded
    with detectron2's name-matching heuristics (ImageNet ``.pkl`` / ``.pyth``) -- leaves the
    head missing, as expected, and may miss or add backbone keys (e.g. Swin's output norms, a
    classifier's ``fc``): these are logged. It fails if a key has the wrong shape (the
    heuristics skip such keys themselves: they show as missing) or if no key is loaded at all.
  * any other checkpoint is a *full model*: missing, unexpected and wrong-shape keys fail,
    except the classifier (``sem_seg_head.predictor.class_embed.*``, ``criterion.empty_weight``)
    whose shape follows the number of classes: fine-tuning on another dataset re-initialises
    it, with a warning.
- ``"report"``: never fails; the comparison is kept in ``last_report`` (used by
  ``tools/inspect_checkpoint.py``).

Failures raise :class:`CheckpointMismatchError`, whose message names the file and lists the
missing, unexpected and wrong-shape keys with counts (:mod:`.checkpoint_keys` compares them).

A Hugging Face ``save_pretrained`` directory is loaded like a file: converted to our names by
:func:`..hf_conversion.load_hf_checkpoint`, then checked by the same rules; given the model's
config, a mismatch also names the config keys whose values differ from the checkpoint's.

Both go through the public API of fvcore's ``Checkpointer``: it writes through its
``path_manager``, here an :class:`AtomicWritePathManager`; it reads files only, so a converted
Hugging Face state dict is loaded from a temporary ``.pth``; the keys that did not load come
from a ``load_state_dict`` post-hook on the model, and since fvcore drops wrong-shape keys
before loading (they come back as missing), the file is read a second time, without loading
it, only when some key is missing.
"""

import contextlib
import glob
import os
import tempfile
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

from .checkpoint_keys import KeyReport, checkpoint_weights, key_report, recorded_load
from .hf_conversion import HFCheckpointInfo, config_differences, load_hf_checkpoint
from .utils.atomic_io import TEMP_SUFFIX, AtomicWritePathManager

__all__ = [
    "CheckpointMismatchError",
    "CheckpointReadError",
    "AtomicWritePathManager",
    "KeyReport",
    "Mask2FormerCheckpointer",
    "load_model_weights",
    "inspect_model_weights",
    "TEMP_SUFFIX",
]

LAST_CHECKPOINT = "last_checkpoint"
MATCH_RULES = ("exact", "init", "report")


class CheckpointMismatchError(ValueError):
    """The keys or shapes of a checkpoint do not fit the model (the message lists them)."""


class CheckpointReadError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, not a checkpoint, ...)."""


# ----------------------------------------------------------------------------- checkpointer
class Mask2FormerCheckpointer(DetectionCheckpointer):
    """
    detectron2's :class:`DetectionCheckpointer` (same formats: detectron2 / Caffe2 ``.pkl``,
    ``.pth`` with a ``model`` dict or a bare state dict, ``.pyth``) whose saves are atomic and
    whose loads check the keys with a ``match`` rule (see the module doc).
    """

    def __init__(
        self, model: nn.Module, save_dir: str = "", *, cfg: Optional[CfgNode] = None, **kwargs: Any
    ):
        """``cfg``, the model's config, if given, lets a mismatch with a Hugging Face checkpoint
        name the config keys whose values differ from those the checkpoint implies."""
        super().__init__(model, save_dir, **kwargs)
        self.cfg = cfg
        self.path_manager = AtomicWritePathManager(self.path_manager)
        self.last_report: Optional[KeyReport] = None
        self._saving_disabled: Optional[str] = None

    # ---------------------------------------------------------------- saving
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return  # fvcore's rule: nothing to write (e.g. not the main process)
        if self._saving_disabled is not None:
            self.logger.warning("Not saving %s.pth: %s", name, self._saving_disabled)
            return
        os.makedirs(self.save_dir, exist_ok=True)
        super().save(name, **kwargs)

    def disable_saving(self, reason: str) -> None:
        """Make every later :meth:`save` a logged no-op, e.g. once training has failed."""
        self._saving_disabled = reason

    def remove_stale_temp_files(self) -> List[str]:
        """Delete the temporary files that a killed save left in ``save_dir``; returns them."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return []
        stale = sorted(
            glob.glob(os.path.join(glob.escape(self.save_dir), f"*.pth.*{TEMP_SUFFIX}"))
            + glob.glob(
                os.path.join(glob.escape(self.save_dir), f"{LAST_CHECKPOINT}.*{TEMP_SUFFIX}")
            )
        )
        for path in stale:
            self.logger.warning("Removing the incomplete checkpoint file %s", path)
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        return stale

    # ---------------------------------------------------------------- loading
    def load(
        self, path: str, checkpointables: Optional[List[str]] = None, *, match: str = "exact"
    ) -> Dict[str, Any]:
        """
        detectron2's ``load``, checking the model's keys with the rule ``match``
        ("exact", "init" or "report"; see the module doc).

        ``path`` may also be a Hugging Face ``save_pretrained`` directory of a
        ``Mask2FormerForUniversalSegmentation``: it is converted (:mod:`..hf_conversion`) and
        checked in the same way.

        Raises:
            FileNotFoundError: ``path`` is a local path that does not exist.
            CheckpointReadError: the file cannot be read as a checkpoint.
            HFConversionError: the directory is not a Hugging Face Mask2Former checkpoint.
            CheckpointMismatchError: the keys do not fit the model under ``match``.
        """
        if match not in MATCH_RULES:
            raise ValueError(f"match must be one of {MATCH_RULES}, got {match!r}")
        if path and "://" not in path and not os.path.exists(path):
            raise FileNotFoundError(f"Checkpoint file {path!r} does not exist")
        if not path:
            return super().load(path, checkpointables)
        # a checkpointer of its own for each load: detectron2's keeps state of a load that
        # failed midway, and would refuse the next one
        loader = DetectionCheckpointer(self.model, save_to_disk=False, **self.checkpointables)
        hf_info: Optional[HFCheckpointInfo] = None
        with recorded_load(self.model) as record:
            if os.path.isdir(path):
                state, hf_info = load_hf_checkpoint(path)
                checkpoint = _load_converted(loader, state, checkpointables, record)
                read_weights: Callable[[], Mapping[str, Any]] = partial(dict, state)
            else:
                checkpoint = _read_checkpoint(loader, path, checkpointables, record)
                read_weights = partial(checkpoint_weights, path)
        report = key_report(
            self.model, path, record, checkpoint.get("matching_heuristics", False), read_weights
        )
        self.last_report = report
        problems = report.problems(match)
        if not problems.is_exact():
            hint = (
                " (a backbone-only checkpoint can only initialise a training)"
                if report.backbone_only and match == "exact"
                else ""
            )
            differences = (
                config_differences(hf_info.overrides, self.cfg)
                if hf_info is not None and self.cfg is not None
                else []
            )
            raise CheckpointMismatchError(
                f"Checkpoint does not fit the model{hint}: {problems.describe()}"
                + "".join(f"\n  {line}" for line in differences)
            )
        return checkpoint


def _load_converted(
    loader: DetectionCheckpointer,
    state: Mapping[str, Any],
    checkpointables: Optional[List[str]],
    record: Dict[str, List[str]],
) -> Dict[str, Any]:
    """A converted state dict loaded through fvcore's public ``load``, which reads files only:
    from a temporary ``.pth``, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "converted.pth")
        torch.save({"model": dict(state)}, file)
        return _read_checkpoint(loader, file, checkpointables, record)


def _read_checkpoint(
    loader: DetectionCheckpointer,
    path: str,
    checkpointables: Optional[List[str]],
    record: Dict[str, List[str]],
) -> Dict[str, Any]:
    """``loader.load(path)``, whose errors before the weights are loaded are reading errors."""
    try:
        return loader.load(path, checkpointables)
    except Exception as e:  # unpickling fails with many exception types
        if record:  # the weights were read: not a reading error
            raise
        raise CheckpointReadError(
            f"Cannot read checkpoint {path!r} ({type(e).__name__}: {e}); "
            "is it a complete .pth / .pkl file?"
        ) from e


def load_model_weights(
    model: nn.Module, path: str, *, match: str = "exact", cfg: Optional[CfgNode] = None
) -> None:
    """
    Load the weights of checkpoint ``path`` into ``model`` (optimizer and other state in the
    file are ignored). With the default ``match="exact"`` the checkpoint must hold exactly the
    model's keys and shapes, as evaluation and inference need; ``match="init"`` is the rule for
    ``MODEL.WEIGHTS`` at the start of a training (see the module doc). ``path`` may be a Hugging
    Face ``save_pretrained`` directory; ``cfg`` (the model's config) lets a mismatch with one
    name the differing config keys.

    Raises:
        FileNotFoundError, CheckpointReadError, HFConversionError, CheckpointMismatchError
    """
    if not path:
        raise ValueError("load_model_weights: no checkpoint path given (MODEL.WEIGHTS is empty)")
    Mask2FormerCheckpointer(model, cfg=cfg).load(path, checkpointables=[], match=match)


def inspect_model_weights(model: nn.Module, path: str) -> KeyReport:
    """
    Load ``path`` into ``model`` without any check and return how their keys compare.
    ``model`` gets every weight that fits: pass a throw-away model.
    """
    checkpointer = Mask2FormerCheckpointer(model)
    checkpointer.load(path, checkpointables=[], match="report")
    assert checkpointer.last_report is not None
    return checkpointer.last_report
