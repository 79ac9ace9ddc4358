// The CPU kernels compiled for AVX2 + FMA (x86-64 with GCC/Clang); chosen at run time when the
// CPU supports them, so the extension still runs on any x86-64 CPU.
#include "cpu/ms_deform_attn_cpu_impl.h"

#ifdef MSDA_HAVE_AVX2_KERNELS
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

// Everything below (the kernels, their lambdas and instantiations) targets AVX2 + FMA; the
// headers above keep their default target.
#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace mask2former {
namespace cpu_impl {
namespace avx2 {
#include "cpu/ms_deform_attn_cpu_kernels.h"
}  // namespace avx2
}  // namespace cpu_impl
}  // namespace mask2former

#pragma GCC pop_options
#endif  // MSDA_HAVE_AVX2_KERNELS
