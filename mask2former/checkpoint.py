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
missing, unexpected and wrong-shape keys with counts.

A Hugging Face ``save_pretrained`` directory is loaded like a file: converted to our names by
:func:`..hf_conversion.load_hf_checkpoint`, then checked by the same rules; given the model's
config, a mismatch also names the config keys whose values differ from the checkpoint's.

Both go through fvcore's ``Checkpointer`` (its public API, but for a converted Hugging Face
state dict, given to ``_load_model`` as ``load`` does after reading a file): it writes through
its ``path_manager``, here an :class:`AtomicWritePathManager`; the keys that did not load
come from a ``load_state_dict`` post-hook on the model, and since fvcore drops wrong-shape keys
before loading (they come back as missing), the file is read a second time, without loading it,
only when some key is missing.
"""

import contextlib
import dataclasses
import glob
import os
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

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
# parameters whose shape depends on the number of classes
CLASS_DEPENDENT_KEYS = ("sem_seg_head.predictor.class_embed.", "criterion.empty_weight")

Shape = Tuple[int, ...]


class CheckpointMismatchError(ValueError):
    """The keys or shapes of a checkpoint do not fit the model (the message lists them)."""


class CheckpointReadError(ValueError):
    """A checkpoint file exists but cannot be read (truncated, not a checkpoint, ...)."""


# ----------------------------------------------------------------------------- key comparison
@dataclasses.dataclass
class KeyReport:
    """How the keys of a checkpoint compare with those of a model."""

    path: str
    # for a file matched by name heuristics: its keys that matched a model key
    num_checkpoint_keys: int
    num_model_keys: int
    missing: List[str]  # in the model, not in the checkpoint
    unexpected: List[str]  # in the checkpoint, not in the model
    wrong_shapes: List[Tuple[str, Shape, Shape]]  # (key, checkpoint shape, model shape)
    backbone_only: bool  # a pretrained backbone rather than a full model
    num_loaded: int  # model keys that got a value from the checkpoint

    def is_exact(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shapes)

    def problems(self, match: str) -> "KeyReport":
        """The part of this report that ``match`` (see the module doc) does not accept."""
        if match == "report":
            return dataclasses.replace(self, missing=[], unexpected=[], wrong_shapes=[])
        if match == "exact":
            return self
        if self.backbone_only:
            nothing_loaded = self.num_loaded == 0
            return dataclasses.replace(
                self,
                missing=self.missing if nothing_loaded else [],
                unexpected=self.unexpected if nothing_loaded else [],
            )
        return dataclasses.replace(
            self,
            wrong_shapes=[
                w for w in self.wrong_shapes if not w[0].startswith(CLASS_DEPENDENT_KEYS)
            ],
        )

    def describe(self, limit: Optional[int] = 10) -> str:
        """Counts, then the keys of each kind (at most ``limit`` of each; None: all)."""

        def listed(title: str, items: Sequence[str]) -> List[str]:
            if not items:
                return []
            shown = list(items) if limit is None else list(items[:limit])
            more = len(items) - len(shown)
            lines = [f"  {title} ({len(items)}):"] + [f"    {s}" for s in shown]
            return lines + ([f"    ... and {more} more"] if more else [])

        kind = "backbone-only" if self.backbone_only else "full-model"
        lines = [
            f"{self.path} ({kind} checkpoint, {self.num_checkpoint_keys} keys; model "
            f"{self.num_model_keys} keys): {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.wrong_shapes)} wrong-shape"
        ]
        lines += listed("missing in the checkpoint", sorted(self.missing))
        lines += listed("unexpected in the checkpoint", sorted(self.unexpected))
        shapes = [
            f"{k}: checkpoint {tuple(c)} vs model {tuple(m)}"
            for k, c, m in sorted(self.wrong_shapes)
        ]
        lines += listed("wrong shape", shapes)
        return "\n".join(lines)


class _StateDictProbe(nn.Module):
    """
    Stands in for the model in a :class:`DetectionCheckpointer` to get a checkpoint's weights
    as detectron2 reads them (file formats, ``module.`` prefix, numpy arrays) without loading
    them: with no state of its own, nothing is dropped for a wrong shape.
    """

    def __init__(self):
        super().__init__()
        self.received: Dict[str, Any] = {}

    def state_dict(self, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, **kwargs: Any):
        self.received = dict(state_dict)
        return super().load_state_dict({}, strict=False)  # nothing missing, nothing unexpected


def _checkpoint_weights(path: str) -> Dict[str, Any]:
    probe = _StateDictProbe()
    DetectionCheckpointer(probe, save_to_disk=False).load(path, checkpointables=[])
    return probe.received


@contextlib.contextmanager
def _recorded_load(model: nn.Module) -> Iterator[Dict[str, List[str]]]:
    """Records the missing and unexpected keys of the ``model.load_state_dict`` calls inside."""
    record: Dict[str, List[str]] = {}

    def hook(module: nn.Module, incompatible: Any) -> None:
        record["missing"] = list(incompatible.missing_keys)
        record["unexpected"] = list(incompatible.unexpected_keys)

    handle = model.register_load_state_dict_post_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


def _key_report(
    model: nn.Module,
    path: str,
    record: Dict[str, List[str]],
    matching_heuristics: bool,
    read_weights: Callable[[], Mapping[str, Any]],
) -> KeyReport:
    """How the checkpoint ``path``, just loaded into ``model`` with ``record``, fits it;
    ``read_weights()`` gives its weights again (only called when some key is missing)."""
    model_state = model.state_dict()
    missing, unexpected = record["missing"], record["unexpected"]
    wrong_shapes: List[Tuple[str, Shape, Shape]] = []
    if matching_heuristics:
        # the heuristics match names by suffix and skip wrong shapes themselves: no key list
        # of the file's own fits the model's names
        checkpoint_keys = [k for k in model_state if k not in missing]
    elif missing:
        # fvcore drops wrong-shape keys before loading, so they come back as missing: their
        # shapes are only in the file
        weights = read_weights()
        checkpoint_keys = list(weights)
        wrong_shapes = [
            (k, tuple(weights[k].shape), tuple(model_state[k].shape))
            for k in missing
            if k in weights
        ]
        missing = [k for k in missing if k not in weights]
    else:
        checkpoint_keys = [k for k in model_state if k not in missing] + unexpected
    not_loaded = set(missing).union(k for k, _, _ in wrong_shapes)
    return KeyReport(
        path=path,
        num_checkpoint_keys=len(checkpoint_keys),
        num_model_keys=len(model_state),
        missing=missing,
        unexpected=unexpected,
        wrong_shapes=wrong_shapes,
        backbone_only=matching_heuristics
        or (len(checkpoint_keys) > 0 and all(k.startswith("backbone.") for k in checkpoint_keys)),
        # BatchNorm fills in an absent num_batches_tracked by itself: not a loaded weight
        num_loaded=sum(
            k not in not_loaded and not k.endswith("num_batches_tracked") for k in model_state
        ),
    )


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
        with _recorded_load(self.model) as record:
            if os.path.isdir(path):
                state, hf_info = load_hf_checkpoint(path)
                # fvcore's load only takes files; its _load_model is the step after reading
                # (it drops wrong-shape keys from the dict it gets: give it a copy)
                loader._log_incompatible_keys(loader._load_model({"model": dict(state)}))
                checkpoint: Dict[str, Any] = {}
                read_weights: Callable[[], Mapping[str, Any]] = partial(dict, state)
            else:
                checkpoint = _read_checkpoint(loader, path, checkpointables, record)
                read_weights = partial(_checkpoint_weights, path)
        report = _key_report(
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
