// Multi-scale deformable attention: dispatch to the CPU or CUDA kernels by device.
#pragma once
#include <torch/extension.h>

#include <vector>

#include "cpu/ms_deform_attn_cpu.h"
#ifdef WITH_CUDA
#include "cuda/ms_deform_attn_cuda.h"
#endif

namespace mask2former {

// value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64,
// sampling_loc (N, Lq, M, L, P, 2) normalised (x, y), attn_weight (N, Lq, M, L, P)
// -> (N, Lq, M*D). All tensors contiguous and on one device.
inline at::Tensor ms_deform_attn_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
#else
    TORCH_CHECK(false, "mask2former._C was built without CUDA support");
#endif
  }
  return ms_deform_attn_cpu_forward(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
}

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}.
inline std::vector<at::Tensor> ms_deform_attn_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output) {
  if (value.is_cuda()) {
#ifdef WITH_CUDA
    return ms_deform_attn_cuda_backward(
        value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output);
#else
    TORCH_CHECK(false, "mask2former._C was built without CUDA support");
#endif
  }
  return ms_deform_attn_cpu_backward(
      value, spatial_shapes, level_start_index, sampling_loc, attn_weight, grad_output);
}

inline bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace mask2former
