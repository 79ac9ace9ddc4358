// Multi-scale deformable attention, CUDA kernels (float32 / float16 / bfloat16 values).
// Only included when the extension is compiled with -DWITH_CUDA.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace mask2former {

// value (N, S, M, D) float32/float16/bfloat16, spatial_shapes (L, 2) int64,
// level_start_index (L,) int64, sampling_loc (N, Lq, M, L, P, 2) float32,
// attn_weight (N, Lq, M, L, P) float32 -> output (N, Lq, M*D) in value's dtype.
at::Tensor ms_deform_attn_cuda_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight);

// Returns {grad_value (value's dtype), grad_sampling_loc (float32), grad_attn_weight (float32)}.
std::vector<at::Tensor> ms_deform_attn_cuda_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output);

}  // namespace mask2former
