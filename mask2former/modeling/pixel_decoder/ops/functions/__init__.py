from .ms_deform_attn_func import (
    MSDeformAttnFunction,
    extension_available,
    host_levels,
    kernel_supports,
    location_dtype,
    ms_deform_attn,
    ms_deform_attn_core_pytorch,
)

__all__ = [
    "MSDeformAttnFunction",
    "extension_available",
    "host_levels",
    "kernel_supports",
    "location_dtype",
    "ms_deform_attn",
    "ms_deform_attn_core_pytorch",
]
