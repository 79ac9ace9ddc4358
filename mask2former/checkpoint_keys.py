"""
How a checkpoint's keys fit a model: what is missing, unexpected or of the wrong shape
(:class:`KeyReport`), recorded while fvcore's ``Checkpointer`` loads it
(:func:`recorded_load`, a ``load_state_dict`` post-hook) and completed from the file's own
shapes where fvcore dropped wrong-shape keys (:func:`checkpoint_weights`). The match rules that
judge a report are described in :mod:`mask2former.checkpoint`.
"""
import contextlib
import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["KeyReport", "checkpoint_weights", "key_report", "recorded_load", "CLASS_DEPENDENT_KEYS"]

# parameters whose shape depends on the number of classes
CLASS_DEPENDENT_KEYS = ("sem_seg_head.predictor.class_embed.", "criterion.empty_weight")

Shape = Tuple[int, ...]


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


def checkpoint_weights(path: str) -> Dict[str, Any]:
    probe = _StateDictProbe()
    DetectionCheckpointer(probe, save_to_disk=False).load(path, checkpointables=[])
    return probe.received


@contextlib.contextmanager
def recorded_load(model: nn.Module) -> Iterator[Dict[str, List[str]]]:
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


def key_report(
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
