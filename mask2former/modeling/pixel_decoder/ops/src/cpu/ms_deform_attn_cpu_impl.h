// Internal interface between the CPU entry points and the kernels, which are compiled once per
// instruction set (ms_deform_attn_cpu_kernels.h included by the generic and the AVX2 units).
#pragma once
#include <cstdint>

#include "ms_deform_attn_inputs.h"

namespace mask2former {
namespace cpu_impl {

// Backward work split: `chunks` channel ranges of `chunk_size` channels per (batch, head).
struct BackwardSplit {
  int64_t chunks, chunk_size;
};

#define MSDA_DECLARE_CPU_KERNELS(isa)                                                          \
  namespace isa {                                                                              \
  template <typename scalar_t>                                                                 \
  void forward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,            \
               const scalar_t* loc, const scalar_t* attn, scalar_t* out, const Dims& d);       \
  /* part_loc / part_attn: `chunks` consecutive buffers shaped like sampling_loc / attn. */    \
  template <typename scalar_t>                                                                 \
  void backward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,           \
                const scalar_t* loc, const scalar_t* attn, const scalar_t* grad_out,           \
                scalar_t* grad_value, scalar_t* part_loc, scalar_t* part_attn, const Dims& d,  \
                BackwardSplit split);                                                          \
  }

MSDA_DECLARE_CPU_KERNELS(generic)
#if defined(__x86_64__) && defined(__GNUC__)
#define MSDA_HAVE_AVX2_KERNELS 1
MSDA_DECLARE_CPU_KERNELS(avx2)
#endif

}  // namespace cpu_impl
}  // namespace mask2former
