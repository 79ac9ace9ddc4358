// Multi-scale deformable attention: dispatch to the CPU or CUDA kernels by device.
#pragma once
#include <torch/extension.h>

#include <vector>

#include "ms_deform_attn_inputs.h"

namespace mask2former {

inline bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Whether `in` goes to the CUDA kernels. Without them (a CPU-only build) this is false or
// throws, so the CUDA branches below compile to nothing.
inline bool on_cuda(const Inputs& in) {
  TORCH_CHECK(!in.value.is_cuda() || with_cuda(), "mask2former._C was built without CUDA support");
  return in.value.is_cuda();
}

// The tensors of `Inputs` -> (N, Lq, M*D).
inline at::Tensor ms_deform_attn_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  const Inputs in{value, spatial_shapes, level_start_index, sampling_loc, attn_weight};
  if (on_cuda(in)) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_forward(in);
#endif
  }
  return ms_deform_attn_cpu_forward(in);
}

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}; grad_output is (N, Lq, M*D).
inline std::vector<at::Tensor> ms_deform_attn_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output) {
  const Inputs in{value, spatial_shapes, level_start_index, sampling_loc, attn_weight};
  if (on_cuda(in)) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_backward(in, grad_output);
#endif
  }
  return ms_deform_attn_cpu_backward(in, grad_output);
}

}  // namespace mask2former
