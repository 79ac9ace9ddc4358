"""
Tensors that autograd need not keep for backward because they are cheap to remake there.

A layer norm's output is kept by the linear layer that reads it, although the norm itself already
keeps its input; ``src + pos`` is kept by the projections that read it, although ``src`` and ``pos``
are alive anyway. :class:`CheapRecompute` makes such tensors with a recipe and, while it is open,
has autograd keep the recipe instead of the tensor (``torch.autograd.graph.saved_tensors_hooks``);
the backward that needs the tensor remakes it. The remade tensor is bitwise the one the forward
made (the same op on the same, unmodified operands), so losses and gradients do not change; the
cost is one more elementwise pass per use in backward.
"""
import contextlib
import weakref
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class _Recipe:
    """How to remake one tensor: ``fn(*args)``, where an argument may itself be a recipe."""

    __slots__ = ("fn", "args", "versions", "meta", "autocast")

    def __init__(self, fn: Callable[..., Tensor], args: Sequence, out: Tensor):
        self.fn = fn
        self.args = tuple(args)
        # autograd raises when a kept tensor was modified in place; so does the remake
        self.versions = [(a, a._version) for a in self.args if isinstance(a, Tensor)]
        self.meta = _layout(out)
        # backward runs outside the forward's autocast region: remake under the same one
        self.autocast = [(device, dtype) for device, on, dtype in _autocast_states() if on]

    def make(self) -> Tensor:
        for tensor, version in self.versions:
            if tensor._version != version:
                raise RuntimeError(
                    "a tensor needed to recompute a kept activation was modified in place after "
                    f"the forward (version {version} -> {tensor._version}, shape {tuple(tensor.shape)})"
                )
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            for device, dtype in self.autocast:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            out = self.fn(*(a.make() if isinstance(a, _Recipe) else a for a in self.args))
        if _layout(out) != self.meta:
            raise RuntimeError(f"recomputed activation {tuple(out.shape)} differs in layout from the forward's")
        return out


def _autocast_states() -> Sequence[Tuple[str, bool, torch.dtype]]:
    """(device type, enabled, dtype) of autocast on CUDA and on the CPU."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4, where the older functions are deprecated
        return [(d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cuda", "cpu")]
    return [
        ("cuda", torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()),
        ("cpu", torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()),
    ]


class _Packed:
    """What autograd keeps instead of a view of a recipe's tensor: the recipe and the view."""

    __slots__ = ("recipe", "view")

    def __init__(self, recipe: _Recipe, view: Tuple):
        self.recipe = recipe
        self.view = view

    def unpack(self) -> Tensor:
        if torch.is_grad_enabled():
            # a remade tensor has no autograd history: a second-order backward through it
            # would silently miss terms
            raise RuntimeError("double backward (create_graph=True) through recomputed activations is not supported")
        return self.recipe.make().as_strided(*self.view)


class CheapRecompute:
    """
    A context for one forward pass. ``add``, ``layer_norm`` and ``made_by`` compute as usual;
    while the context is open (and ``enabled``), autograd keeps their recipe, not their output,
    wherever it saves the output or a view of it for backward. Disabled (no autograd, activation
    checkpointing, tracing) they are plain calls of the op.

    Made tensors are recognised by the address of their memory, which is forgotten when that
    memory is freed (a later tensor at the same address is not mistaken for one); nothing made
    is held by the context.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        # address of a made tensor's memory -> (its recipe, the tensor's version when made)
        self._made: Dict[int, Tuple[_Recipe, int]] = {}
        self._hooks: Optional[torch.autograd.graph.saved_tensors_hooks] = None

    def __enter__(self) -> "CheapRecompute":
        if self.enabled:
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(*exc)
            self._hooks = None
        self._made.clear()

    def made_by(self, fn: Callable[..., Tensor], *args) -> Tensor:
        """``fn(*args)``, remade as ``fn(*args)`` in backward: for a deterministic ``fn`` that is
        cheap next to what keeping its output costs; tensor arguments are held until backward."""
        out = fn(*args)
        if self._hooks is not None:
            self._register(out, fn, args)
        return out

    def add(self, a: Tensor, b: Tensor) -> Tensor:
        """``a + b``."""
        return self.made_by(torch.add, a, b)

    def layer_norm(self, norm: nn.LayerNorm, x: Tensor) -> Tensor:
        """``norm(x)``; remade with ``F.layer_norm`` and the module's parameters (module hooks
        do not run again in backward)."""
        out = norm(x)
        if self._hooks is not None:
            self._register(out, _LayerNormOf(norm), (x, norm.weight, norm.bias))
        return out

    def _register(self, out: Tensor, fn: Callable[..., Tensor], args: Sequence) -> None:
        address = _memory_address(out)
        if address is None or torch.compiler.is_compiling():
            # inside a frame that torch.compile traces (an outer frame opened the context):
            # the compiled graph plans its own saved tensors
            return
        # an argument that is itself a made tensor enters the recipe as its own recipe, so
        # that the recipe does not hold its memory
        args = [self._recipe_of(a) or a for a in args]
        entry = (_Recipe(fn, args, out), out._version)
        self._made[address] = entry
        weakref.finalize(out.untyped_storage(), self._forget, address, entry)

    def _forget(self, address: int, entry: Tuple[_Recipe, int]) -> None:
        if self._made.get(address) is entry:
            del self._made[address]

    def _recipe_of(self, t) -> Optional[_Recipe]:
        """The recipe of ``t`` if it is a made tensor itself (not a view), unmodified."""
        entry = self._made.get(_memory_address(t)) if isinstance(t, Tensor) else None
        if entry is None or t._version != entry[1] or t.storage_offset() != 0:
            return None
        recipe = entry[0]
        return recipe if _layout(t) == recipe.meta else None

    def _pack(self, t: Tensor):
        entry = self._made.get(_memory_address(t))
        # views share their base's version: a made tensor modified in place since, or another
        # dtype's view of its memory, is kept as it is
        if entry is None or t._version != entry[1] or t.dtype != entry[0].meta[2]:
            return t
        return _Packed(entry[0], (t.shape, t.stride(), t.storage_offset()))

    @staticmethod
    def _unpack(packed) -> Tensor:
        return packed.unpack() if isinstance(packed, _Packed) else packed


def _layout(t: Tensor) -> Tuple:
    """What a remade tensor must share with the forward's: shape, strides, dtype, device."""
    return t.shape, t.stride(), t.dtype, t.device


def _memory_address(t: Tensor) -> Optional[int]:
    """Address of a strided tensor's memory; None for a tensor without real memory (sparse, or
    torch.compile's fake tensors while it traces a graph)."""
    if t.layout != torch.strided:
        return None
    try:
        return t.untyped_storage().data_ptr()
    except RuntimeError:
        return None


class _LayerNormOf:
    """``F.layer_norm`` with a LayerNorm module's settings; the weight and bias come as arguments
    so that the recipe checks them for in-place changes."""

    __slots__ = ("shape", "eps")

    def __init__(self, norm: nn.LayerNorm):
        self.shape = norm.normalized_shape
        self.eps = norm.eps

    def __call__(self, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        return F.layer_norm(x, self.shape, weight, bias, self.eps)
