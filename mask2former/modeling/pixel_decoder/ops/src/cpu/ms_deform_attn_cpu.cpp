// Multi-scale deformable attention, CPU entry points: input checks, the backward work split,
// and the choice between the generic and the AVX2 + FMA build of the kernels
// (ms_deform_attn_cpu_kernels.h).
#include "cpu/ms_deform_attn_cpu.h"
#include "cpu/ms_deform_attn_cpu_impl.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace mask2former {
namespace {

using cpu_impl::BackwardSplit;
using cpu_impl::Dims;

Dims check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_cpu: value must be a CPU tensor");
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn_cpu: value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(
      sampling_loc.dim() == 6 && sampling_loc.size(5) == 2,
      "ms_deform_attn_cpu: sampling_loc must be (N, Lq, M, L, P, 2), got ", sampling_loc.sizes());
  TORCH_CHECK(
      attn_weight.dim() == 5, "ms_deform_attn_cpu: attn_weight must be (N, Lq, M, L, P), got ",
      attn_weight.sizes());
  TORCH_CHECK(
      spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
      "ms_deform_attn_cpu: spatial_shapes must be (L, 2), got ", spatial_shapes.sizes());
  for (const at::Tensor* t : {&value, &sampling_loc, &attn_weight, &spatial_shapes, &level_start_index}) {
    TORCH_CHECK(t->is_contiguous(), "ms_deform_attn_cpu: inputs must be contiguous");
    TORCH_CHECK(t->device().is_cpu(), "ms_deform_attn_cpu: inputs must all be CPU tensors");
  }
  TORCH_CHECK(
      spatial_shapes.scalar_type() == at::kLong && level_start_index.scalar_type() == at::kLong,
      "ms_deform_attn_cpu: spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(
      sampling_loc.scalar_type() == value.scalar_type() && attn_weight.scalar_type() == value.scalar_type(),
      "ms_deform_attn_cpu: value, sampling_loc and attn_weight must share a dtype, got ",
      value.scalar_type(), ", ", sampling_loc.scalar_type(), ", ", attn_weight.scalar_type());
  Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
         sampling_loc.size(1), sampling_loc.size(3), sampling_loc.size(4)};
  TORCH_CHECK(
      sampling_loc.size(0) == d.N && sampling_loc.size(2) == d.M,
      "ms_deform_attn_cpu: sampling_loc ", sampling_loc.sizes(), " does not match value ", value.sizes());
  TORCH_CHECK(
      attn_weight.size(0) == d.N && attn_weight.size(1) == d.Lq && attn_weight.size(2) == d.M &&
          attn_weight.size(3) == d.L && attn_weight.size(4) == d.P,
      "ms_deform_attn_cpu: attn_weight ", attn_weight.sizes(), " does not match sampling_loc ",
      sampling_loc.sizes());
  TORCH_CHECK(
      spatial_shapes.size(0) == d.L && level_start_index.numel() == d.L,
      "ms_deform_attn_cpu: spatial_shapes/level_start_index must have L=", d.L, " levels");
  const int64_t* shp = spatial_shapes.data_ptr<int64_t>();
  const int64_t* start = level_start_index.data_ptr<int64_t>();
  for (int64_t l = 0; l < d.L; ++l) {
    TORCH_CHECK(
        shp[2 * l] >= 0 && shp[2 * l + 1] >= 0 && start[l] >= 0 &&
            start[l] + shp[2 * l] * shp[2 * l + 1] <= d.S,
        "ms_deform_attn_cpu: level ", l, " (H=", shp[2 * l], ", W=", shp[2 * l + 1], ", start=",
        start[l], ") does not fit in S=", d.S);
  }
  return d;
}

}  // namespace

// AVX2 + FMA kernels when the CPU has them, unless ATEN_CPU_CAPABILITY=default asks PyTorch
// (and us) for the portable kernels.
bool ms_deform_attn_cpu_uses_avx2() {
#ifdef MSDA_HAVE_AVX2_KERNELS
  static const bool use = [] {
    const char* capability = std::getenv("ATEN_CPU_CAPABILITY");
    const bool forced_default = capability != nullptr && std::strcmp(capability, "default") == 0;
    return !forced_default && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

namespace cpu_impl {
namespace generic {
#include "cpu/ms_deform_attn_cpu_kernels.h"
}  // namespace generic
}  // namespace cpu_impl

at::Tensor ms_deform_attn_cpu_forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  at::Tensor output = at::empty({d.N, d.Lq, d.M * d.D}, value.options());
  if (output.numel() == 0) {
    return output.zero_();
  }
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    auto kernel = cpu_impl::generic::forward<scalar_t>;
#ifdef MSDA_HAVE_AVX2_KERNELS
    if (ms_deform_attn_cpu_uses_avx2()) kernel = cpu_impl::avx2::forward<scalar_t>;
#endif
    kernel(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
           level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
           attn_weight.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), d);
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_loc,
    const at::Tensor& attn_weight,
    const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, sampling_loc, attn_weight);
  TORCH_CHECK(
      grad_output.is_contiguous() && grad_output.device().is_cpu() &&
          grad_output.scalar_type() == value.scalar_type(),
      "ms_deform_attn_cpu_backward: grad_output must be a contiguous CPU tensor of value's dtype");
  TORCH_CHECK(
      grad_output.dim() == 3 && grad_output.size(0) == d.N && grad_output.size(1) == d.Lq &&
          grad_output.size(2) == d.M * d.D,
      "ms_deform_attn_cpu_backward: grad_output must be (N, Lq, M*D) = (", d.N, ", ", d.Lq, ", ",
      d.M * d.D, "), got ", grad_output.sizes());
  at::Tensor grad_value = at::zeros_like(value);
  at::Tensor grad_loc = at::zeros_like(sampling_loc);
  at::Tensor grad_attn = at::zeros_like(attn_weight);
  if (d.N == 0 || d.Lq == 0 || d.M == 0 || d.D == 0 || d.L == 0 || d.P == 0) {
    return {grad_value, grad_loc, grad_attn};
  }
  // Split channels only when (batch, head) tasks are too few to occupy all threads; chunks of
  // at least 8 channels keep the inner loop vectorised.
  const int64_t threads = at::get_num_threads();
  const int64_t tasks_nm = d.N * d.M;
  int64_t chunks = 1;
  if (tasks_nm < threads) {
    chunks = std::min<int64_t>((threads + tasks_nm - 1) / tasks_nm, std::max<int64_t>(1, d.D / 8));
  }
  const int64_t chunk_size = (d.D + chunks - 1) / chunks;
  chunks = (d.D + chunk_size - 1) / chunk_size;
  at::Tensor part_loc = chunks == 1 ? grad_loc : at::empty({chunks, sampling_loc.numel()}, sampling_loc.options());
  at::Tensor part_attn = chunks == 1 ? grad_attn : at::empty({chunks, attn_weight.numel()}, attn_weight.options());

  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    auto kernel = cpu_impl::generic::backward<scalar_t>;
#ifdef MSDA_HAVE_AVX2_KERNELS
    if (ms_deform_attn_cpu_uses_avx2()) kernel = cpu_impl::avx2::backward<scalar_t>;
#endif
    kernel(value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
           level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
           attn_weight.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
           grad_value.data_ptr<scalar_t>(), part_loc.data_ptr<scalar_t>(),
           part_attn.data_ptr<scalar_t>(), d, BackwardSplit{chunks, chunk_size});
  });
  if (chunks > 1) {
    grad_loc.view({-1}).copy_(part_loc.sum(0));
    grad_attn.view({-1}).copy_(part_attn.sum(0));
  }
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace mask2former
