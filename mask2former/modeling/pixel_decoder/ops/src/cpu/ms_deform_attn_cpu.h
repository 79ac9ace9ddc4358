// Multi-scale deformable attention, CPU kernels (float32 / float64).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace mask2former {

// value (N, S, M, D), spatial_shapes (L, 2) int64, level_start_index (L,) int64,
// sampling_loc (N, Lq, M, L, P, 2), attn_weight (N, Lq, M, L, P) -> output (N, Lq, M*D).
at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight);

// Returns {grad_value, grad_sampling_loc, grad_attn_weight}; grad_output is (N, Lq, M*D).
std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output);

// Whether the AVX2 + FMA build of the kernels is used (else the portable one).
bool ms_deform_attn_cpu_uses_avx2();

}  // namespace mask2former
