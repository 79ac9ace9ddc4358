// Multi-scale deformable attention, CUDA kernels.
//
// One thread handles one (batch, query, head, channel group) where a group is VEC contiguous
// channels (16 bytes when D and the pointers allow), so the bilinear set-up of a sampling point
// is computed D/VEC times instead of D times (the im2col kernel computes it per channel) and
// every corner read is one vectorised load. The D/VEC threads of one (query, head) are
// consecutive lanes of a warp and read the same locations/weights (broadcast loads).
//
// Accumulation is in float32 for every value dtype. Backward adds value gradients with float32
// atomics into a float32 buffer (cast to value's dtype at the end); location/weight gradients
// are reduced over the channel groups with warp shuffles (GradReduce), so that at most two
// atomics per point and warp remain where a (query, head) straddles warps.
#include "ms_deform_attn_inputs.h"

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace mask2former {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// Bilinear set-up of one sampling point (align_corners=False, zero padding).
struct Bilinear {
  int64_t offset[4];  // position offsets (in rows of M*D elements) or -1 when outside
  float w[4];         // (h0,w0), (h0,w0+1), (h0+1,w0), (h0+1,w0+1)
  float lh, lw;
};

__device__ __forceinline__ bool make_bilinear(float x, float y, int64_t H, int64_t W, Bilinear& b) {
  const float h = y * static_cast<float>(H) - 0.5f;
  const float w = x * static_cast<float>(W) - 0.5f;
  if (!(h > -1.f) || !(w > -1.f) || !(h < static_cast<float>(H)) || !(w < static_cast<float>(W))) {
    return false;
  }
  const float hf = floorf(h), wf = floorf(w);
  const int64_t h0 = static_cast<int64_t>(hf), w0 = static_cast<int64_t>(wf);
  b.lh = h - hf;
  b.lw = w - wf;
  const float hh = 1.f - b.lh, hw = 1.f - b.lw;
  const float weights[4] = {hh * hw, hh * b.lw, b.lh * hw, b.lh * b.lw};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t hi = h0 + (k >> 1), wi = w0 + (k & 1);
    const bool ok = hi >= 0 && hi < H && wi >= 0 && wi < W;
    b.offset[k] = ok ? hi * W + wi : -1;
    b.w[k] = ok ? weights[k] : 0.f;
  }
  return true;
}

template <typename scalar_t, int VEC>
__device__ __forceinline__ void load_pack(const scalar_t* p, float (&out)[VEC]) {
  const Pack<scalar_t, VEC> pk = *reinterpret_cast<const Pack<scalar_t, VEC>*>(p);
#pragma unroll
  for (int i = 0; i < VEC; ++i) {
    out[i] = static_cast<float>(pk.v[i]);
  }
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const float* __restrict__ loc,
    const float* __restrict__ attn,
    scalar_t* __restrict__ out,
    Dims d) {
  const int64_t groups = d.D / VEC;
  const int64_t total = d.N * d.Lq * d.M * groups;
  const int64_t row = d.M * d.D;
  const int64_t LP = d.L * d.P;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = idx % groups;
    const int64_t nqm = idx / groups;
    const int64_t m = nqm % d.M;
    const int64_t n = nqm / (d.M * d.Lq);
    const scalar_t* v_base = value + n * d.S * row + m * d.D + g * VEC;
    const float* loc_q = loc + nqm * LP * 2;
    const float* attn_q = attn + nqm * LP;
    float acc[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] = 0.f;
    for (int64_t l = 0; l < d.L; ++l) {
      const int64_t H = __ldg(shapes + 2 * l), W = __ldg(shapes + 2 * l + 1);
      const scalar_t* v_level = v_base + __ldg(starts + l) * row;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t lp = l * d.P + p;
        Bilinear b;
        if (!make_bilinear(__ldg(loc_q + 2 * lp), __ldg(loc_q + 2 * lp + 1), H, W, b)) continue;
        const float a = __ldg(attn_q + lp);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (b.offset[k] < 0) continue;
          float v[VEC];
          load_pack<scalar_t, VEC>(v_level + b.offset[k] * row, v);
          const float wk = a * b.w[k];
#pragma unroll
          for (int i = 0; i < VEC; ++i) acc[i] = fmaf(wk, v[i], acc[i]);
        }
      }
    }
    Pack<scalar_t, VEC> res;
#pragma unroll
    for (int i = 0; i < VEC; ++i) res.v[i] = static_cast<scalar_t>(acc[i]);
    *reinterpret_cast<Pack<scalar_t, VEC>*>(out + nqm * d.D + g * VEC) = res;
  }
}

// How the backward sums the location/weight gradients of one (query, head) over its `groups`
// threads (consecutive lanes, in one warp or straddling two or more):
enum class GradReduce {
  kSegment,  // groups divides 32: shuffles within each aligned segment, one plain store
  kRuns,     // otherwise: shuffles within each warp's run of equal (query, head), one atomic per run
  kAtomic,   // otherwise, the former path: one atomic per thread (MASK2FORMER_MSDA_GRAD_REDUCE=atomic)
};

constexpr unsigned kFullMask = 0xffffffffu;

// Sums v over the `groups` consecutive lanes of a segment (groups a power of 2 dividing 32).
__device__ __forceinline__ float segment_sum(float v, int groups) {
  for (int offset = groups >> 1; offset > 0; offset >>= 1) {
    v += __shfl_xor_sync(kFullMask, v, offset);
  }
  return v;
}

// Bit b set when lane + 2^b of this warp holds the same `key` (lanes of one key are consecutive).
__device__ __forceinline__ unsigned run_reach(int64_t key, int lane) {
  unsigned reach = 0;
#pragma unroll
  for (int b = 0; b < 5; ++b) {
    const int64_t other = __shfl_down_sync(kFullMask, key, 1 << b);
    if (lane + (1 << b) < 32 && other == key) reach |= 1u << b;
  }
  return reach;
}

// Sum of v over lanes lane .. end of its run (run_reach): the run's first lane gets the run's
// sum. After step b each lane holds the sum of the next 2^(b+1) lanes of its run, or up to
// the run's end if nearer.
__device__ __forceinline__ float run_sum(float v, unsigned reach) {
#pragma unroll
  for (int b = 0; b < 5; ++b) {
    const float other = __shfl_down_sync(kFullMask, v, 1 << b);
    if ((reach >> b) & 1u) v += other;
  }
  return v;
}

template <typename scalar_t, int VEC, GradReduce REDUCE>
__global__ void __launch_bounds__(kThreads) backward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts,
    const float* __restrict__ loc,
    const float* __restrict__ attn,
    const scalar_t* __restrict__ grad_out,
    float* __restrict__ grad_value,  // float32 (N, S, M, D), zero-initialised
    float* __restrict__ grad_loc,    // (N, Lq, M, L, P, 2); zero-initialised unless kSegment
    float* __restrict__ grad_attn,   // (N, Lq, M, L, P); zero-initialised unless kSegment
    Dims d) {
  const int64_t groups = d.D / VEC;
  const int64_t total = d.N * d.Lq * d.M * groups;
  const int64_t row = d.M * d.D;
  const int64_t LP = d.L * d.P;
  // The loop bound is uniform over the block so that every lane reaches the shuffles.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < total;
       base += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t idx = base + threadIdx.x;
    const bool active = idx < total;
    const int64_t g = active ? idx % groups : 0;
    const int64_t nqm = active ? idx / groups : 0;
    const int64_t m = nqm % d.M;
    const int64_t n = nqm / (d.M * d.Lq);
    const int64_t v_offset = n * d.S * row + m * d.D + g * VEC;
    const float* loc_q = loc + nqm * LP * 2;
    const float* attn_q = attn + nqm * LP;
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int64_t key = active ? nqm : -1;
    unsigned reach = 0;
    bool run_head = false;
    if (REDUCE == GradReduce::kRuns) {
      reach = run_reach(key, lane);
      const int64_t previous = __shfl_up_sync(kFullMask, key, 1);
      run_head = active && (lane == 0 || previous != key);
    }
    float go[VEC];
    if (active) {
      load_pack<scalar_t, VEC>(grad_out + nqm * d.D + g * VEC, go);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) go[i] = 0.f;
    }
    for (int64_t l = 0; l < d.L; ++l) {
      const int64_t H = __ldg(shapes + 2 * l), W = __ldg(shapes + 2 * l + 1);
      const int64_t level_offset = v_offset + __ldg(starts + l) * row;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t lp = l * d.P + p;
        float s_attn = 0.f, s_x = 0.f, s_y = 0.f, a = 0.f;
        Bilinear b;
        const bool inside =
            active && make_bilinear(__ldg(loc_q + 2 * lp), __ldg(loc_q + 2 * lp + 1), H, W, b);
        if (inside) {
          a = __ldg(attn_q + lp);
          float v[4][VEC];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (b.offset[k] >= 0) {
              load_pack<scalar_t, VEC>(value + level_offset + b.offset[k] * row, v[k]);
            } else {
#pragma unroll
              for (int i = 0; i < VEC; ++i) v[k][i] = 0.f;
            }
          }
          const float hh = 1.f - b.lh, hw = 1.f - b.lw;
#pragma unroll
          for (int i = 0; i < VEC; ++i) {
            const float gi = go[i];
            s_attn += gi * (b.w[0] * v[0][i] + b.w[1] * v[1][i] + b.w[2] * v[2][i] + b.w[3] * v[3][i]);
            s_x += gi * (hh * (v[1][i] - v[0][i]) + b.lh * (v[3][i] - v[2][i]));
            s_y += gi * (hw * (v[2][i] - v[0][i]) + b.lw * (v[3][i] - v[1][i]));
          }
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            if (b.offset[k] < 0) continue;
            const float awk = a * b.w[k];
            float* gv = grad_value + level_offset + b.offset[k] * row;
#pragma unroll
            for (int i = 0; i < VEC; ++i) atomicAdd(gv + i, awk * go[i]);
          }
        }
        const float gx = a * static_cast<float>(W) * s_x;
        const float gy = a * static_cast<float>(H) * s_y;
        if (REDUCE == GradReduce::kSegment) {
          const float r_attn = segment_sum(s_attn, static_cast<int>(groups));
          const float r_x = segment_sum(gx, static_cast<int>(groups));
          const float r_y = segment_sum(gy, static_cast<int>(groups));
          if (active && g == 0) {
            grad_attn[nqm * LP + lp] = r_attn;
            grad_loc[(nqm * LP + lp) * 2] = r_x;
            grad_loc[(nqm * LP + lp) * 2 + 1] = r_y;
          }
        } else if (REDUCE == GradReduce::kRuns) {
          // Lanes outside the map contribute zeros; a run's lanes share `inside`.
          const float r_attn = run_sum(s_attn, reach);
          const float r_x = run_sum(gx, reach);
          const float r_y = run_sum(gy, reach);
          if (run_head && inside) {
            atomicAdd(grad_attn + nqm * LP + lp, r_attn);
            atomicAdd(grad_loc + (nqm * LP + lp) * 2, r_x);
            atomicAdd(grad_loc + (nqm * LP + lp) * 2 + 1, r_y);
          }
        } else if (inside) {
          atomicAdd(grad_attn + nqm * LP + lp, s_attn);
          atomicAdd(grad_loc + (nqm * LP + lp) * 2, gx);
          atomicAdd(grad_loc + (nqm * LP + lp) * 2 + 1, gy);
        }
      }
    }
  }
}

constexpr const char* kOp = "ms_deform_attn_cuda";

// check_inputs, plus the value dtypes the CUDA kernels are built for.
Dims check_cuda_inputs(const Inputs& in) {
  TORCH_CHECK(in.value.is_cuda(), kOp, ": value must be a CUDA tensor");
  const Dims d = check_inputs(in, kOp);
  const auto st = in.value.scalar_type();
  TORCH_CHECK(
      st == at::kFloat || st == at::kHalf || st == at::kBFloat16, kOp,
      ": value must be float32, float16 or bfloat16, got ", st);
  return d;
}

// `in` with the level tables on value's GPU, where the kernels read them. Tables on the CPU are
// copied without waiting for the GPU: a pageable host buffer is staged before the copy returns.
Inputs with_device_levels(const Inputs& in) {
  const auto options = in.value.options().dtype(at::kLong);
  return {in.value, in.spatial_shapes.to(options, /*non_blocking=*/true),
          in.level_start_index.to(options, /*non_blocking=*/true), in.sampling_loc, in.attn_weight};
}

bool aligned(const void* p, int64_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0;
}

// Largest channel group (at most 16 bytes) that divides D and keeps every pointer aligned.
template <typename scalar_t>
int pick_vec(int64_t D, std::initializer_list<const void*> ptrs) {
  for (int vec = 16 / static_cast<int>(sizeof(scalar_t)); vec > 1; vec >>= 1) {
    if (D % vec != 0) continue;
    bool ok = true;
    for (const void* p : ptrs) ok = ok && aligned(p, vec * static_cast<int64_t>(sizeof(scalar_t)));
    if (ok) return vec;
  }
  return 1;
}

int num_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 30));
}

template <typename scalar_t, int VEC>
void launch_forward(const Inputs& in, at::Tensor& out, const Dims& d) {
  const int64_t total = d.N * d.Lq * d.M * (d.D / VEC);
  forward_kernel<scalar_t, VEC><<<num_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      in.value.data_ptr<scalar_t>(), in.spatial_shapes.data_ptr<int64_t>(),
      in.level_start_index.data_ptr<int64_t>(), in.sampling_loc.data_ptr<float>(),
      in.attn_weight.data_ptr<float>(), out.data_ptr<scalar_t>(), d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// kSegment when a (query, head)'s groups divide a warp; else kRuns, or kAtomic when the
// environment asks for the former path (MASK2FORMER_MSDA_GRAD_REDUCE=atomic, to compare).
GradReduce pick_reduce(int64_t groups) {
  if (groups <= 32 && 32 % groups == 0) return GradReduce::kSegment;
  const char* env = std::getenv("MASK2FORMER_MSDA_GRAD_REDUCE");
  return env != nullptr && std::strcmp(env, "atomic") == 0 ? GradReduce::kAtomic : GradReduce::kRuns;
}

template <typename scalar_t, int VEC, GradReduce REDUCE>
void launch_backward(const Inputs& in, const at::Tensor& grad_out, at::Tensor& grad_value,
                     at::Tensor& grad_loc, at::Tensor& grad_attn, const Dims& d) {
  const int64_t total = d.N * d.Lq * d.M * (d.D / VEC);
  backward_kernel<scalar_t, VEC, REDUCE>
      <<<num_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          in.value.data_ptr<scalar_t>(), in.spatial_shapes.data_ptr<int64_t>(),
          in.level_start_index.data_ptr<int64_t>(), in.sampling_loc.data_ptr<float>(),
          in.attn_weight.data_ptr<float>(), grad_out.data_ptr<scalar_t>(),
          grad_value.data_ptr<float>(), grad_loc.data_ptr<float>(), grad_attn.data_ptr<float>(), d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Runs the statement with a compile-time VEC in {1, 2, 4, 8} equal to `vec`.
#define MSDA_DISPATCH_VEC(vec, ...)    \
  switch (vec) {                       \
    case 8: {                          \
      constexpr int VEC = 8;           \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case 4: {                          \
      constexpr int VEC = 4;           \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    case 2: {                          \
      constexpr int VEC = 2;           \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
    default: {                         \
      constexpr int VEC = 1;           \
      __VA_ARGS__;                     \
      break;                           \
    }                                  \
  }

// float32 / float16 / bfloat16 only (no float64 instantiations).
#define MSDA_DISPATCH_TYPES(TYPE, NAME, ...)              \
  AT_DISPATCH_SWITCH(                                     \
      TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                      AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                          AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const Inputs& host_in) {
  const Dims d = check_cuda_inputs(host_in);
  const c10::cuda::CUDAGuard device_guard(host_in.value.device());
  const Inputs in = with_device_levels(host_in);
  at::Tensor output = at::empty({d.N, d.Lq, d.M * d.D}, in.value.options());
  if (output.numel() == 0 || d.L == 0 || d.P == 0) {
    return output.zero_();
  }
  MSDA_DISPATCH_TYPES(in.value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
    const int vec = pick_vec<scalar_t>(d.D, {in.value.data_ptr(), output.data_ptr()});
    MSDA_DISPATCH_VEC(vec, launch_forward<scalar_t, VEC>(in, output, d));
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const Inputs& host_in, const at::Tensor& grad_output) {
  const Dims d = check_cuda_inputs(host_in);
  check_grad_output(grad_output, host_in, d, kOp);
  const c10::cuda::CUDAGuard device_guard(host_in.value.device());
  const Inputs in = with_device_levels(host_in);
  at::Tensor grad_value = at::zeros(in.value.sizes(), in.value.options().dtype(at::kFloat));
  at::Tensor grad_loc = at::zeros_like(in.sampling_loc);
  at::Tensor grad_attn = at::zeros_like(in.attn_weight);
  if (d.N == 0 || d.Lq == 0 || d.M == 0 || d.D == 0 || d.L == 0 || d.P == 0) {
    return {grad_value.to(in.value.scalar_type()), grad_loc, grad_attn};
  }
  MSDA_DISPATCH_TYPES(in.value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
    const int vec = pick_vec<scalar_t>(d.D, {in.value.data_ptr(), grad_output.data_ptr()});
    const GradReduce reduce = pick_reduce(d.D / vec);
    MSDA_DISPATCH_VEC(vec, switch (reduce) {
      case GradReduce::kSegment:
        launch_backward<scalar_t, VEC, GradReduce::kSegment>(in, grad_output, grad_value, grad_loc, grad_attn, d);
        break;
      case GradReduce::kRuns:
        launch_backward<scalar_t, VEC, GradReduce::kRuns>(in, grad_output, grad_value, grad_loc, grad_attn, d);
        break;
      default:
        launch_backward<scalar_t, VEC, GradReduce::kAtomic>(in, grad_output, grad_value, grad_loc, grad_attn, d);
    });
  });
  return {grad_value.to(in.value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace mask2former
