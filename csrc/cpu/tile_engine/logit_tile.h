// The tile producer of the CPU LSE engine:
//   L[r * ldl + c] = s * sim(x_{i0 + r}, y_{j0 + c})   for r < tm, c < tn,
// computed once per tile and consumed by the forward reduction (lse_reduction.h) or the
// gradient tile (lse_gradient_tile.h).
//   streamed: dot s x.y ; euclidean -s sum (x - y)^2 (on differences: no cancellation) ;
//             l1 -s sum |x - y|
//   BLAS:     dot s x.y ; euclidean 2s [x, -|x|^2/2, 1].[y, 1, -|y|^2/2] (augmented operands)
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../runtime/blas.h"
#include "tile_operands.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

template <typename T>
void logit_tile(const Operands<T>& op, int64_t i0, int64_t tm, int64_t j0, int64_t tn, T* L,
                int64_t ldl) {
  using V = at::vec::Vectorized<T>;
  const int64_t D = op.D;
  const bool l1 = op.sim == Similarity::L1;
  const bool euclid = op.sim == Similarity::Euclidean;
  const T alpha = (l1 || (euclid && op.streamed)) ? -op.s : (euclid ? T(2) * op.s : op.s);
  if (op.streamed && D <= kSmallD) {
    // Register-blocked: one accumulator per vector of columns runs over the D features, and the
    // tile is written once.
    const V valpha(alpha);
    for (int64_t r = 0; r < tm; ++r) {
      T* Lr = L + r * ldl;
      const T* xr = op.x + (i0 + r) * D;
      const T* yt = op.yt + j0;
      int64_t c = 0;
      for (; c + V::size() <= tn; c += V::size()) {
        V acc(T(0));
        for (int64_t k = 0; k < D; ++k) {
          const V yv = V::loadu(yt + k * op.N + c);
          if (l1) {
            acc = acc + (V(xr[k]) - yv).abs();
          } else if (euclid) {
            const V d = V(xr[k]) - yv;
            acc = at::vec::fmadd(d, d, acc);
          } else {
            acc = at::vec::fmadd(V(xr[k]), yv, acc);
          }
        }
        (acc * valpha).store(Lr + c);
      }
      for (; c < tn; ++c) {
        T acc = 0;
        for (int64_t k = 0; k < D; ++k) {
          const T d = xr[k] - yt[k * op.N + c];
          acc += l1 ? std::abs(d) : (euclid ? d * d : xr[k] * yt[k * op.N + c]);
        }
        Lr[c] = alpha * acc;
      }
    }
  } else if (op.streamed) {
    // l1 with more than kSmallD features: rows of Y^T stream through the tile row (kept in L1).
    const V valpha(alpha);
    for (int64_t r = 0; r < tm; ++r) {
      T* Lr = L + r * ldl;
      std::fill(Lr, Lr + tn, T(0));
      const T* xr = op.x + (i0 + r) * D;
      for (int64_t k = 0; k < D; ++k) {
        const T xk = xr[k];
        const V vx(xk);
        const T* ytk = op.yt + k * op.N + j0;
        int64_t c = 0;
        for (; c + V::size() <= tn; c += V::size())
          (V::loadu(Lr + c) + (vx - V::loadu(ytk + c)).abs()).store(Lr + c);
        for (; c < tn; ++c) Lr[c] += std::abs(xk - ytk[c]);
      }
      int64_t c = 0;
      for (; c + V::size() <= tn; c += V::size()) (V::loadu(Lr + c) * valpha).store(Lr + c);
      for (; c < tn; ++c) Lr[c] *= alpha;
    }
  } else if (euclid) {
    // Column-major BLAS view: L^T (tn x tm) = 2s Ya_J (tn x (D + 2)) . Xa_I^T.
    const int64_t K = D + 2;
    gemm(true, false, tn, tm, K, alpha, op.ya + j0 * K, K, op.xa + i0 * K, K, T(0), L, ldl);
  } else {
    // Column-major BLAS view: L^T (tn x tm) = alpha Y_J (tn x D) . X_I^T.
    gemm(true, false, tn, tm, D, alpha, op.y + j0 * D, D, op.x + i0 * D, D, T(0), L, ldl);
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
