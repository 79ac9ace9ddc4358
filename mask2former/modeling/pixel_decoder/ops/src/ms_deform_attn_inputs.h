// The op's inputs, the checks every device shares, and the device entry points' declarations
// (defined in cpu/ms_deform_attn_cpu.cpp and, built WITH_CUDA, cuda/ms_deform_attn_cuda.cu).
#pragma once
#include <torch/extension.h>

#include <cstdint>
#include <vector>

namespace mask2former {

// value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64,
// sampling_loc (N, Lq, M, L, P, 2) normalised (x, y), attn_weight (N, Lq, M, L, P); contiguous.
// value, sampling_loc and attn_weight are on one device; spatial_shapes and level_start_index on
// that device or on the CPU, where the checks read them without waiting for the GPU.
struct Inputs {
  at::Tensor value, spatial_shapes, level_start_index, sampling_loc, attn_weight;
};

// The dtype of sampling_loc and attn_weight for a value of dtype `value_type`, on every device:
// float64 for float64, else float32 (reduced-precision values keep float32 locations, which
// address pixels of large maps exactly; the kernels accumulate in float32 anyway).
inline at::ScalarType location_dtype(at::ScalarType value_type) {
  return value_type == at::kDouble ? at::kDouble : at::kFloat;
}

struct Dims {
  int64_t N, S, M, D, Lq, L, P;
};

// Every level (H, W, start) lies inside the S positions of value, so the kernels cannot index
// out of bounds. Reads the level tables on the host (a copy from the GPU waits for it).
inline void check_levels(const Inputs& in, const int64_t S, const char* op) {
  const at::Tensor shapes = in.spatial_shapes.cpu();
  const at::Tensor starts = in.level_start_index.cpu();
  const int64_t* shp = shapes.data_ptr<int64_t>();
  const int64_t* start = starts.data_ptr<int64_t>();
  for (int64_t l = 0; l < starts.numel(); ++l) {
    TORCH_CHECK(
        shp[2 * l] >= 0 && shp[2 * l + 1] >= 0 && start[l] >= 0 &&
            start[l] + shp[2 * l] * shp[2 * l + 1] <= S,
        op, ": level ", l, " (H=", shp[2 * l], ", W=", shp[2 * l + 1], ", start=", start[l],
        ") does not fit in S=", S);
  }
}

// Ranks, contiguity, devices, dtypes (int64 shapes/starts, location_dtype for sampling_loc and
// attn_weight), agreeing sizes and levels inside value; `op` starts each message. Returns the
// sizes. Which value dtypes a device supports is the device's own check.
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
  }
  TORCH_CHECK(
      loc.device() == value.device() && attn.device() == value.device(), op,
      ": value, sampling_loc and attn_weight must be on one device");
  for (const at::Tensor* t : {&in.spatial_shapes, &in.level_start_index}) {
    TORCH_CHECK(
        t->device() == value.device() || t->device().is_cpu(), op,
        ": spatial_shapes and level_start_index must be on the CPU or on value's device");
  }
  TORCH_CHECK(
      in.spatial_shapes.scalar_type() == at::kLong && in.level_start_index.scalar_type() == at::kLong,
      op, ": spatial_shapes and level_start_index must be int64");
  const at::ScalarType loc_type = location_dtype(value.scalar_type());
  TORCH_CHECK(
      loc.scalar_type() == loc_type && attn.scalar_type() == loc_type, op,
      ": sampling_loc and attn_weight must be ", loc_type, " for a ", value.scalar_type(),
      " value, got ", loc.scalar_type(), " and ", attn.scalar_type());
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
  check_levels(in, d.S, op);
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

// CPU: value float32 or float64 -> (N, Lq, M*D).
at::Tensor ms_deform_attn_cpu_forward(const Inputs& in);
// Returns {grad_value, grad_sampling_loc, grad_attn_weight}.
std::vector<at::Tensor> ms_deform_attn_cpu_backward(const Inputs& in, const at::Tensor& grad_output);
// Whether the AVX2 + FMA build of the CPU kernels is used (else the portable one).
bool ms_deform_attn_cpu_uses_avx2();

#ifdef WITH_CUDA
// CUDA: value float32/float16/bfloat16 -> (N, Lq, M*D) in value's dtype; backward:
// {grad_value (value's dtype), grad_sampling_loc, grad_attn_weight (float32)}.
at::Tensor ms_deform_attn_cuda_forward(const Inputs& in);
std::vector<at::Tensor> ms_deform_attn_cuda_backward(const Inputs& in, const at::Tensor& grad_output);
#endif

}  // namespace mask2former
