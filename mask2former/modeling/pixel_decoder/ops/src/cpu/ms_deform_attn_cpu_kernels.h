// Multi-scale deformable attention CPU kernels. Deliberately without include guard: it is
// included once per instruction set, inside `namespace mask2former::cpu_impl::MSDA_CPU_ISA`,
// after every other header (see ms_deform_attn_cpu.cpp and ms_deform_attn_cpu_avx2.cpp).
//
// Layout: value is (N, S, M, D), so the D channels of one head at one position are contiguous.
// Every sampling point is turned once into four corner pointers and four bilinear weights
// (align_corners=False: pixel = loc * size - 0.5; corners outside the map read a zero row), and
// the per-channel work is a branch-free loop over D that the compiler vectorises; D = 32 and 64
// get compile-time loops. Forward parallelises over (batch, query). Backward parallelises over
// (batch, head, channel chunk): each task owns a disjoint slice of grad_value (no atomics), and
// writes its own partial location/weight gradients.

namespace kernels {

// Four corner rows and bilinear weights of one sampling point.
template <typename scalar_t>
struct Corners {
  const scalar_t* v[4];
  int64_t offset[4];  // element offset of the corner row from the level base, or -1 outside
  scalar_t w[4];      // (h0,w0), (h0,w0+1), (h0+1,w0), (h0+1,w0+1)
  scalar_t lh, lw;
};

// Returns false when all four corners are outside the map (no contribution, zero gradient).
template <typename scalar_t>
inline bool make_corners(scalar_t loc_x, scalar_t loc_y, int64_t H, int64_t W, int64_t row_stride,
                         const scalar_t* level_base, const scalar_t* zeros, Corners<scalar_t>& c) {
  const scalar_t h = loc_y * static_cast<scalar_t>(H) - scalar_t(0.5);
  const scalar_t w = loc_x * static_cast<scalar_t>(W) - scalar_t(0.5);
  // !(a > b) also rejects NaN locations.
  if (!(h > scalar_t(-1)) || !(w > scalar_t(-1)) || !(h < static_cast<scalar_t>(H)) ||
      !(w < static_cast<scalar_t>(W))) {
    return false;
  }
  const scalar_t hf = std::floor(h);
  const scalar_t wf = std::floor(w);
  const int64_t h0 = static_cast<int64_t>(hf);
  const int64_t w0 = static_cast<int64_t>(wf);
  c.lh = h - hf;
  c.lw = w - wf;
  const scalar_t hh = scalar_t(1) - c.lh, hw = scalar_t(1) - c.lw;
  const scalar_t weights[4] = {hh * hw, hh * c.lw, c.lh * hw, c.lh * c.lw};
  for (int k = 0; k < 4; ++k) {
    const int64_t hi = h0 + (k >> 1);
    const int64_t wi = w0 + (k & 1);
    if (hi >= 0 && hi < H && wi >= 0 && wi < W) {
      c.offset[k] = (hi * W + wi) * row_stride;
      c.v[k] = level_base + c.offset[k];
      c.w[k] = weights[k];
    } else {
      c.offset[k] = -1;
      c.v[k] = zeros;
      c.w[k] = scalar_t(0);
    }
  }
  return true;
}

// CH > 0: compile-time channel count (== d.D); CH == 0: d.D at run time.
template <typename scalar_t, int CH>
void forward_impl(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                  const scalar_t* loc, const scalar_t* attn, scalar_t* out, const Dims& d) {
  const int64_t D = CH > 0 ? CH : d.D;
  const int64_t row_stride = d.M * D;  // elements between neighbouring positions
  const int64_t LP = d.L * d.P;
  const std::vector<scalar_t> zeros(D, scalar_t(0));
  const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, d.M * LP));
  at::parallel_for(0, d.N * d.Lq, grain, [&](int64_t begin, int64_t end) {
    Corners<scalar_t> c;
    alignas(64) scalar_t local[CH > 0 ? CH : 1];
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / d.Lq;
      const scalar_t* value_n = value + n * d.S * row_stride;
      for (int64_t m = 0; m < d.M; ++m) {
        scalar_t* o = out + (nq * d.M + m) * D;
        // a compile-time channel count lets the accumulator live in registers
        scalar_t* __restrict__ acc = CH > 0 ? local : o;
        std::fill(acc, acc + D, scalar_t(0));
        const scalar_t* loc_q = loc + (nq * d.M + m) * LP * 2;
        const scalar_t* attn_q = attn + (nq * d.M + m) * LP;
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
          const scalar_t* level_base = value_n + starts[l] * row_stride + m * D;
          for (int64_t p = 0; p < d.P; ++p) {
            const int64_t lp = l * d.P + p;
            if (!make_corners(loc_q[2 * lp], loc_q[2 * lp + 1], H, W, row_stride, level_base,
                              zeros.data(), c)) {
              continue;
            }
            const scalar_t a = attn_q[lp];
            const scalar_t w0 = a * c.w[0], w1 = a * c.w[1], w2 = a * c.w[2], w3 = a * c.w[3];
            const scalar_t* __restrict__ v0 = c.v[0];
            const scalar_t* __restrict__ v1 = c.v[1];
            const scalar_t* __restrict__ v2 = c.v[2];
            const scalar_t* __restrict__ v3 = c.v[3];
#pragma omp simd
            for (int64_t ch = 0; ch < D; ++ch) {
              acc[ch] += w0 * v0[ch] + w1 * v1[ch] + w2 * v2[ch] + w3 * v3[ch];
            }
          }
        }
        if (CH > 0) {
          std::copy(local, local + D, o);
        }
      }
    }
  });
}

// One task: batch n, head m, channels [c0, c0 + nc). CH > 0: nc == CH at compile time.
template <typename scalar_t, int CH>
void backward_task(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                   const scalar_t* loc, const scalar_t* attn, const scalar_t* grad_out,
                   scalar_t* grad_value, scalar_t* grad_loc, scalar_t* grad_attn, const Dims& d,
                   int64_t n, int64_t m, int64_t c0, int64_t nc_runtime, const scalar_t* zeros,
                   scalar_t* scratch) {  // 4 * D elements: write target for corners outside
  const int64_t nc = CH > 0 ? CH : nc_runtime;
  const int64_t row_stride = d.M * d.D;
  const int64_t LP = d.L * d.P;
  const scalar_t* value_n = value + n * d.S * row_stride;
  scalar_t* grad_value_n = grad_value + n * d.S * row_stride;
  Corners<scalar_t> c;
  for (int64_t q = 0; q < d.Lq; ++q) {
    const int64_t nqm = (n * d.Lq + q) * d.M + m;
    const scalar_t* __restrict__ go = grad_out + nqm * d.D + c0;
    const scalar_t* loc_q = loc + nqm * LP * 2;
    const scalar_t* attn_q = attn + nqm * LP;
    scalar_t* gloc_q = grad_loc + nqm * LP * 2;
    scalar_t* gattn_q = grad_attn + nqm * LP;
    for (int64_t l = 0; l < d.L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const int64_t level_offset = starts[l] * row_stride + m * d.D;
      const scalar_t* level_base = value_n + level_offset;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t lp = l * d.P + p;
        if (!make_corners(loc_q[2 * lp], loc_q[2 * lp + 1], H, W, row_stride, level_base, zeros, c)) {
          gattn_q[lp] = scalar_t(0);
          gloc_q[2 * lp] = scalar_t(0);
          gloc_q[2 * lp + 1] = scalar_t(0);
          continue;
        }
        const scalar_t a = attn_q[lp];
        const scalar_t* __restrict__ v0 = c.v[0] + c0;
        const scalar_t* __restrict__ v1 = c.v[1] + c0;
        const scalar_t* __restrict__ v2 = c.v[2] + c0;
        const scalar_t* __restrict__ v3 = c.v[3] + c0;
        scalar_t* gv[4];
        for (int k = 0; k < 4; ++k) {
          gv[k] = c.offset[k] >= 0 ? grad_value_n + level_offset + c.offset[k] + c0 : scratch + k * d.D;
        }
        scalar_t* __restrict__ g0 = gv[0];
        scalar_t* __restrict__ g1 = gv[1];
        scalar_t* __restrict__ g2 = gv[2];
        scalar_t* __restrict__ g3 = gv[3];
        const scalar_t w0 = c.w[0], w1 = c.w[1], w2 = c.w[2], w3 = c.w[3];
        const scalar_t aw0 = a * w0, aw1 = a * w1, aw2 = a * w2, aw3 = a * w3;
        const scalar_t lh = c.lh, lw = c.lw, hh = scalar_t(1) - lh, hw = scalar_t(1) - lw;
        scalar_t s_attn = 0, s_x = 0, s_y = 0;
#pragma omp simd reduction(+ : s_attn, s_x, s_y)
        for (int64_t ch = 0; ch < nc; ++ch) {
          const scalar_t g = go[ch];
          const scalar_t a0 = v0[ch], a1 = v1[ch], a2 = v2[ch], a3 = v3[ch];
          s_attn += g * (w0 * a0 + w1 * a1 + w2 * a2 + w3 * a3);
          s_x += g * (hh * (a1 - a0) + lh * (a3 - a2));
          s_y += g * (hw * (a2 - a0) + lw * (a3 - a1));
          g0[ch] += aw0 * g;
          g1[ch] += aw1 * g;
          g2[ch] += aw2 * g;
          g3[ch] += aw3 * g;
        }
        gattn_q[lp] = s_attn;
        gloc_q[2 * lp] = a * static_cast<scalar_t>(W) * s_x;
        gloc_q[2 * lp + 1] = a * static_cast<scalar_t>(H) * s_y;
      }
    }
  }
}

template <typename scalar_t, int CH>
void backward_impl(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                   const scalar_t* loc, const scalar_t* attn, const scalar_t* grad_out,
                   scalar_t* grad_value, scalar_t* part_loc, scalar_t* part_attn, const Dims& d,
                   BackwardSplit split) {
  const int64_t loc_numel = d.N * d.Lq * d.M * d.L * d.P * 2;
  const int64_t attn_numel = loc_numel / 2;
  const std::vector<scalar_t> zeros(d.D, scalar_t(0));
  at::parallel_for(0, d.N * d.M * split.chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch(4 * d.D);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t chunk = t % split.chunks;
      const int64_t nm = t / split.chunks;
      const int64_t c0 = chunk * split.chunk_size;
      const int64_t nc = std::min(d.D, c0 + split.chunk_size) - c0;
      backward_task<scalar_t, CH>(value, shapes, starts, loc, attn, grad_out, grad_value,
                                  part_loc + chunk * loc_numel, part_attn + chunk * attn_numel, d,
                                  nm / d.M, nm % d.M, c0, nc, zeros.data(), scratch.data());
    }
  });
}

}  // namespace kernels

template <typename scalar_t>
void forward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
             const scalar_t* loc, const scalar_t* attn, scalar_t* out, const Dims& d) {
  switch (d.D) {
    case 32:
      return kernels::forward_impl<scalar_t, 32>(value, shapes, starts, loc, attn, out, d);
    case 64:
      return kernels::forward_impl<scalar_t, 64>(value, shapes, starts, loc, attn, out, d);
    default:
      return kernels::forward_impl<scalar_t, 0>(value, shapes, starts, loc, attn, out, d);
  }
}

template <typename scalar_t>
void backward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
              const scalar_t* loc, const scalar_t* attn, const scalar_t* grad_out,
              scalar_t* grad_value, scalar_t* part_loc, scalar_t* part_attn, const Dims& d,
              BackwardSplit split) {
  const int64_t ch = split.chunks == 1 ? d.D : 0;
  if (ch == 32) {
    return kernels::backward_impl<scalar_t, 32>(value, shapes, starts, loc, attn, grad_out,
                                                grad_value, part_loc, part_attn, d, split);
  }
  if (ch == 64) {
    return kernels::backward_impl<scalar_t, 64>(value, shapes, starts, loc, attn, grad_out,
                                                grad_value, part_loc, part_attn, d, split);
  }
  kernels::backward_impl<scalar_t, 0>(value, shapes, starts, loc, attn, grad_out, grad_value,
                                      part_loc, part_attn, d, split);
}

template void forward<float>(const float*, const int64_t*, const int64_t*, const float*,
                             const float*, float*, const Dims&);
template void forward<double>(const double*, const int64_t*, const int64_t*, const double*,
                              const double*, double*, const Dims&);
template void backward<float>(const float*, const int64_t*, const int64_t*, const float*,
                              const float*, const float*, float*, float*, float*, const Dims&,
                              BackwardSplit);
template void backward<double>(const double*, const int64_t*, const int64_t*, const double*,
                               const double*, const double*, double*, double*, double*,
                               const Dims&, BackwardSplit);
