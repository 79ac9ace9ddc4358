// The op's inputs, the checks every device shares, and the device entry points' declarations
// (defined in cpu/ms_deform_attn_cpu.cpp and, built WITH_CUDA, cuda/ms_deform_attn_cuda.cu).
#pragma once
#include <torch/extension.h>

#include <cstdint>
#include <vector>

namespace mask2former {

// value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64,
// sampling_loc (N, Lq, M, L, P, 2) normalised (x, y), attn_weight (N, Lq, M, L, P);
// contiguous and on one device. Dtypes are the device's own rules.
struct Inputs {
  at::Tensor value, spatial_shapes, level_start_index, sampling_loc, attn_weight;
};

struct Dims {
  int64_t N, S, M, D, Lq, L, P;
};

// Ranks, contiguity, one device, int64 shapes/starts and agreeing sizes; `op` starts each
// message. Returns the sizes.
inline Dims check_inputs(const Inputs& in, const char* op) {
  const at::Tensor& value = in.value;
  const at::Tensor& loc = in.sampling_loc;
  const at::Tensor& attn = in.attn_weight;
  TORCH_CHECK(value.dim() == 4, op, ": value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(
      loc.dim() == 6 && loc.size(5) == 2, op, ": sampling_loc must be (N, Lq, M, L, P, 2), got ",
      loc.sizes());
  TORCH_CHECK(attn.dim() == 5, op, ": attn_weight must be (N, Lq, M, L, P), got ", attn.sizes());
  TORCH_CHECK(
      in.spatial_shapes.dim() == 2 && in.spatial_shapes.size(1) == 2, op,
      ": spatial_shapes must be (L, 2), got ", in.spatial_shapes.sizes());
  for (const at::Tensor* t : {&value, &loc, &attn, &in.spatial_shapes, &in.level_start_index}) {
    TORCH_CHECK(t->is_contiguous(), op, ": inputs must be contiguous");
    TORCH_CHECK(t->device() == value.device(), op, ": inputs must be on one device");
  }
  TORCH_CHECK(
      in.spatial_shapes.scalar_type() == at::kLong && in.level_start_index.scalar_type() == at::kLong,
      op, ": spatial_shapes and level_start_index must be int64");
  const Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
               loc.size(1),   loc.size(3),   loc.size(4)};
  TORCH_CHECK(
      loc.size(0) == d.N && loc.size(2) == d.M, op, ": sampling_loc ", loc.sizes(),
      " does not match value ", value.sizes());
  TORCH_CHECK(
      attn.size(0) == d.N && attn.size(1) == d.Lq && attn.size(2) == d.M && attn.size(3) == d.L &&
          attn.size(4) == d.P,
      op, ": attn_weight ", attn.sizes(), " does not match sampling_loc ", loc.sizes());
  TORCH_CHECK(
      in.spatial_shapes.size(0) == d.L && in.level_start_index.numel() == d.L, op,
      ": spatial_shapes/level_start_index must have L=", d.L, " levels");
  return d;
}

// grad_output: (N, Lq, M*D), contiguous, of value's device and dtype.
inline void check_grad_output(
    const at::Tensor& grad_output, const Inputs& in, const Dims& d, const char* op) {
  TORCH_CHECK(
      grad_output.is_contiguous() && grad_output.device() == in.value.device() &&
          grad_output.scalar_type() == in.value.scalar_type(),
      op, ": grad_output must be contiguous, of value's device and dtype");
  TORCH_CHECK(
      grad_output.dim() == 3 && grad_output.size(0) == d.N && grad_output.size(1) == d.Lq &&
          grad_output.size(2) == d.M * d.D,
      op, ": grad_output must be (N, Lq, M*D) = (", d.N, ", ", d.Lq, ", ", d.M * d.D, "), got ",
      grad_output.sizes());
}

// CPU: value, sampling_loc and attn_weight float32 or float64, one dtype -> (N, Lq, M*D).
at::Tensor ms_deform_attn_cpu_forward(const Inputs& in);
// Returns {grad_value, grad_sampling_loc, grad_attn_weight}.
std::vector<at::Tensor> ms_deform_attn_cpu_backward(const Inputs& in, const at::Tensor& grad_output);
// Whether the AVX2 + FMA build of the CPU kernels is used (else the portable one).
bool ms_deform_attn_cpu_uses_avx2();

#ifdef WITH_CUDA
// CUDA: value float32/float16/bfloat16, sampling_loc and attn_weight float32 -> (N, Lq, M*D) in
// value's dtype; backward: {grad_value (value's dtype), grad_sampling_loc, grad_attn_weight}.
at::Tensor ms_deform_attn_cuda_forward(const Inputs& in);
std::vector<at::Tensor> ms_deform_attn_cuda_backward(const Inputs& in, const at::Tensor& grad_output);
#endif

}  // namespace mask2former
