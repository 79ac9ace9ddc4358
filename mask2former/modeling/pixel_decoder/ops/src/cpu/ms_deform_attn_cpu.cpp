// Multi-scale deformable attention, CPU entry points: input checks, the backward work split,
// and the choice between the generic and the AVX2 + FMA build of the kernels
// (ms_deform_attn_cpu_kernels.h).
#include "cpu/ms_deform_attn_cpu_impl.h"
#include "ms_deform_attn_inputs.h"

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

constexpr const char* kOp = "ms_deform_attn_cpu";

// check_inputs, plus what the CPU kernels need: CPU tensors, value float32 or float64.
Dims check_cpu_inputs(const Inputs& in) {
  TORCH_CHECK(in.value.device().is_cpu(), kOp, ": value must be a CPU tensor");
  const Dims d = check_inputs(in, kOp);
  const auto st = in.value.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble, kOp, ": value must be float32 or float64, got ", st);
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

// The kernel `name` for scalar_t: its AVX2 + FMA build when the CPU runs that, else the generic one.
#ifdef MSDA_HAVE_AVX2_KERNELS
#define MSDA_CPU_KERNEL(name)                                                                   \
  (ms_deform_attn_cpu_uses_avx2() ? cpu_impl::avx2::name<scalar_t> : cpu_impl::generic::name<scalar_t>)
#else
#define MSDA_CPU_KERNEL(name) cpu_impl::generic::name<scalar_t>
#endif

at::Tensor ms_deform_attn_cpu_forward(const Inputs& in) {
  const Dims d = check_cpu_inputs(in);
  const at::Tensor& value = in.value;
  at::Tensor output = at::empty({d.N, d.Lq, d.M * d.D}, value.options());
  if (output.numel() == 0) {
    return output.zero_();
  }
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    MSDA_CPU_KERNEL(forward)(
        value.data_ptr<scalar_t>(), in.spatial_shapes.data_ptr<int64_t>(),
        in.level_start_index.data_ptr<int64_t>(), in.sampling_loc.data_ptr<scalar_t>(),
        in.attn_weight.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), d);
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const Inputs& in, const at::Tensor& grad_output) {
  const Dims d = check_cpu_inputs(in);
  check_grad_output(grad_output, in, d, kOp);
  const at::Tensor& value = in.value;
  const at::Tensor& sampling_loc = in.sampling_loc;
  const at::Tensor& attn_weight = in.attn_weight;
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
    MSDA_CPU_KERNEL(backward)(
        value.data_ptr<scalar_t>(), in.spatial_shapes.data_ptr<int64_t>(),
        in.level_start_index.data_ptr<int64_t>(), sampling_loc.data_ptr<scalar_t>(),
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
