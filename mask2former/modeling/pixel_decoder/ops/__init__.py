"""Multi-scale deformable attention (MSDeformAttn): C++/CUDA kernels with a PyTorch fallback.

Public API:
- :class:`modules.MSDeformAttn` — the attention layer used by the pixel decoder.
- :func:`functions.ms_deform_attn` — the op itself, dispatching to the compiled kernel when it
  supports the device/dtype and to :func:`functions.ms_deform_attn_core_pytorch` otherwise.
"""
from .functions import (
    MSDeformAttnFunction,
    extension_available,
    ms_deform_attn,
    ms_deform_attn_core_pytorch,
)
from .modules import MSDeformAttn

__all__ = [
    "MSDeformAttn",
    "MSDeformAttnFunction",
    "extension_available",
    "ms_deform_attn",
    "ms_deform_attn_core_pytorch",
]
