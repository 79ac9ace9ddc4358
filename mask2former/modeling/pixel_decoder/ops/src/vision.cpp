// Python bindings of the extension `mask2former._C`.
#include "ms_deform_attn.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("ms_deform_attn_forward", &mask2former::ms_deform_attn_forward,
        "Multi-scale deformable attention forward: (value, spatial_shapes, level_start_index, "
        "sampling_loc, attn_weight) -> output (N, Lq, M*D)");
  m.def("ms_deform_attn_backward", &mask2former::ms_deform_attn_backward,
        "Multi-scale deformable attention backward: (value, spatial_shapes, level_start_index, "
        "sampling_loc, attn_weight, grad_output) -> [grad_value, grad_sampling_loc, grad_attn_weight]");
  m.def("cpu_uses_avx2", &mask2former::ms_deform_attn_cpu_uses_avx2,
        "Whether the CPU kernels run their AVX2 + FMA build (ATEN_CPU_CAPABILITY=default disables it)");
  m.def("with_cuda", &mask2former::with_cuda, "Whether the extension was compiled with CUDA kernels");
}
