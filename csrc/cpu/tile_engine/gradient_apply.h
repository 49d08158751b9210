// The gradient application of the CPU LSE engine: a gradient tile G (lse_gradient_tile.h) turned into
//   dx_i += s sum_j G_ij d sim_ij / d x_i,   dy_j += s sum_i G_ij d sim_ij / d y_j
// with, per similarity (alpha = s for dot and l1, 2s for euclidean):
//   dot:       dX_I += alpha G Y_J,  dY_J += alpha G^T X_I
//   euclidean: the same products (of -||x - y||^2 = 2 x.y - |x|^2 - |y|^2), plus the norm terms
//              -2s (sum_j G_ij) x_i and -2s (sum_i G_ij) y_j, added once per row tile / at the end
//   l1:        dx_ik -= alpha sum_j G_ij sign(x_ik - y_jk),  dy_jk += alpha sum_i G_ij sign(x_ik - y_jk)
// BLAS tiles use two GEMMs; streamed tiles (D <= kSmallD or l1) use register-accumulated loops and
// accumulate dY^T. Each worker slot owns its dX rows; dY is accumulated one panel of columns at a
// time (DyAccumulator), by slot 0 straight into dY on the BLAS path and otherwise into a slot's
// panel-sized partial, which reduce_dy_partials sums in slot order.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../runtime/blas.h"
#include "tile_operands.h"
#include "vec_exp.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

// acc[k][v] = sum_r G[r * ldg + v * W + (0..W)] x[r * ldx + k] for k < KB, v < 2 (W = vector
// width), then out[k * ldo + v * W + (0..W)] += alpha acc[k][v]: 2 KB independent FMA chains, one
// load of each G vector per row.
template <int KB, typename T>
void dy_block(const T* G, int64_t ldg, const T* x, int64_t ldx, int64_t rows, T alpha, T* out,
              int64_t ldo) {
  using V = Vectorized<T>;
  constexpr int64_t W = V::size();
  V acc[KB][2];
  for (int k = 0; k < KB; ++k) acc[k][0] = acc[k][1] = V(T(0));
  for (int64_t r = 0; r < rows; ++r) {
    const V g0 = V::loadu(G + r * ldg), g1 = V::loadu(G + r * ldg + W);
    for (int k = 0; k < KB; ++k) {
      const V xv(x[r * ldx + k]);
      acc[k][0] = at::vec::fmadd(g0, xv, acc[k][0]);
      acc[k][1] = at::vec::fmadd(g1, xv, acc[k][1]);
    }
  }
  const V va(alpha);
  for (int k = 0; k < KB; ++k)
    for (int v = 0; v < 2; ++v) {
      T* o = out + k * ldo + v * W;
      at::vec::fmadd(va, acc[k][v], V::loadu(o)).store(o);
    }
}

template <typename T>
void dy_block_dispatch(int64_t kb, const T* G, int64_t ldg, const T* x, int64_t ldx, int64_t rows,
                       T alpha, T* out, int64_t ldo) {
  switch (kb) {
    case 1: return dy_block<1>(G, ldg, x, ldx, rows, alpha, out, ldo);
    case 2: return dy_block<2>(G, ldg, x, ldx, rows, alpha, out, ldo);
    case 3: return dy_block<3>(G, ldg, x, ldx, rows, alpha, out, ldo);
    default: return dy_block<4>(G, ldg, x, ldx, rows, alpha, out, ldo);
  }
}

// Where a slot accumulates dY for the columns [c0, c0 + ld) of a panel: streamed tiles keep dY^T,
// element (k, j) at base[k * ld + j - c0]; BLAS tiles keep dY, row j at base + (j - c0) * D.
template <typename T>
struct DyAccumulator {
  T* base;
  int64_t c0;
  int64_t ld;
};

template <typename T>
Vectorized<T> vec_sign(const Vectorized<T>& v) {
  const Vectorized<T> zero(T(0));
  return v.gt(zero) - v.lt(zero);
}

// Streamed dX of the tile: each dx_ik sums over the tile's columns (a row of G, in L1) in two
// register accumulators, so consecutive FMAs do not wait on each other's latency.
template <typename T>
void streamed_dx(const Operands<T>& op, const T* G, int64_t i0, int64_t mt, int64_t j0, int64_t nt,
                 T alpha, T* dx) {
  using V = Vectorized<T>;
  const int64_t N = op.N, D = op.D;
  const bool l1 = op.sim == Similarity::L1;
  for (int64_t r = 0; r < mt; ++r) {
    const T* Gr = G + r * kTileN;
    const T* xr = op.x + (i0 + r) * D;
    T* dxr = dx + (i0 + r) * D;
    for (int64_t k = 0; k < D; ++k) {
      const V vx(xr[k]);
      const T* ytk = op.yt + k * N + j0;
      V acc0(T(0)), acc1(T(0));
      auto term = [&](int64_t c) {
        const V yv = V::loadu(ytk + c);
        return l1 ? vec_sign(vx - yv) : yv;
      };
      int64_t c = 0;
      for (; c + 2 * V::size() <= nt; c += 2 * V::size()) {
        acc0 = at::vec::fmadd(V::loadu(Gr + c), term(c), acc0);
        acc1 = at::vec::fmadd(V::loadu(Gr + c + V::size()), term(c + V::size()), acc1);
      }
      for (; c + V::size() <= nt; c += V::size()) acc0 = at::vec::fmadd(V::loadu(Gr + c), term(c), acc0);
      T tot = horizontal_sum(acc0 + acc1);
      for (; c < nt; ++c) {
        const T v = xr[k] - ytk[c];
        tot += Gr[c] * (l1 ? T((v > 0) - (v < 0)) : ytk[c]);
      }
      dxr[k] += l1 ? -alpha * tot : alpha * tot;
    }
  }
}

// Streamed dY^T of the tile (into the panel's D x ld block): each dy_kc sums over the tile's rows (a column
// strip of G, 8 KB). dot/euclidean: blocked over 2 column vectors x up to 4 features, so each G
// vector is loaded once per row for all of them; l1 and the remaining columns: four accumulators
// over the rows.
template <typename T>
void streamed_dy(const Operands<T>& op, const T* G, int64_t i0, int64_t mt, int64_t j0, int64_t nt,
                 T alpha, const DyAccumulator<T>& panel) {
  using V = Vectorized<T>;
  const int64_t N = op.N, D = op.D;
  const bool l1 = op.sim == Similarity::L1;
  const T* xt = op.x + i0 * D;  // the tile's rows of X, row-major (mt x D)
  T* out = panel.base + (j0 - panel.c0);  // the tile's first column in the panel
  int64_t c = 0;
  if (!l1) {
    for (; c + 2 * V::size() <= nt; c += 2 * V::size())
      for (int64_t k0 = 0; k0 < D; k0 += 4)
        dy_block_dispatch(std::min<int64_t>(4, D - k0), G + c, kTileN, xt + k0, D, mt, alpha,
                          out + k0 * panel.ld + c, panel.ld);
  }
  for (; c + V::size() <= nt; c += V::size()) {
    for (int64_t k = 0; k < D; ++k) {
      T* dyk = out + k * panel.ld + c;
      const V yv = V::loadu(op.yt + k * N + j0 + c);
      auto term = [&](int64_t r) {
        const V xv(xt[r * D + k]);
        return l1 ? vec_sign(xv - yv) : xv;
      };
      V acc[4] = {V(T(0)), V(T(0)), V(T(0)), V(T(0))};
      int64_t r = 0;
      for (; r + 4 <= mt; r += 4)
        for (int64_t u = 0; u < 4; ++u)
          acc[u] = at::vec::fmadd(V::loadu(G + (r + u) * kTileN + c), term(r + u), acc[u]);
      for (; r < mt; ++r) acc[0] = at::vec::fmadd(V::loadu(G + r * kTileN + c), term(r), acc[0]);
      at::vec::fmadd(V(alpha), (acc[0] + acc[1]) + (acc[2] + acc[3]), V::loadu(dyk)).store(dyk);
    }
  }
  for (; c < nt; ++c) {
    for (int64_t k = 0; k < D; ++k) {
      const T yk = op.yt[k * N + j0 + c];
      T sum = 0;
      for (int64_t r = 0; r < mt; ++r) {
        const T xk = xt[r * D + k];
        sum += G[r * kTileN + c] * (l1 ? T((xk - yk > 0) - (xk - yk < 0)) : xk);
      }
      out[k * panel.ld + c] += alpha * sum;
    }
  }
}

// dX and dY contributions of one gradient tile (either pointer null: not requested).
template <typename T>
void apply_gradient_tile(const Operands<T>& op, const T* G, int64_t i0, int64_t mt, int64_t j0,
                         int64_t nt, T* dx, const DyAccumulator<T>* dy) {
  const T alpha = op.sim == Similarity::Euclidean ? T(2) * op.s : op.s;
  if (op.streamed) {
    if (dx) streamed_dx(op, G, i0, mt, j0, nt, alpha, dx);
    if (dy) streamed_dy(op, G, i0, mt, j0, nt, alpha, *dy);
    return;
  }
  const int64_t D = op.D;
  if (dx) gemm(false, false, D, mt, nt, alpha, op.y + j0 * D, D, G, kTileN, T(1), dx + i0 * D, D);
  if (dy) gemm(false, true, D, nt, mt, alpha, op.x + i0 * D, D, G, kTileN, T(1), dy->base + (j0 - dy->c0) * D, D);
}

// The euclidean norm term of dX for rows i0..i0+mt: dx_i += -2 s (sum_j G_ij) x_i.
template <typename T>
void euclidean_row_term(const Operands<T>& op, const double* rowsum_g, int64_t i0, int64_t mt, T* dx) {
  const int64_t D = op.D;
  for (int64_t r = 0; r < mt; ++r) {
    const T f = T(-2.0 * double(op.s) * rowsum_g[r]);
    const T* xr = op.x + (i0 + r) * D;
    T* dxr = dx + (i0 + r) * D;
    for (int64_t k = 0; k < D; ++k) dxr[k] += f * xr[k];
  }
}

// dY rows [begin, end) of the panel of columns [c0, c0 + ld): the sum of the slots' panel partials
// in slot order (partials[p] is D x ld for streamed tiles, ld x D otherwise; `accumulated`: dy
// already holds slot 0's sum), plus, for euclidean, the norm term -2 s (sum_i G_ij) y_j from the
// slots' column sums colsum[p * N + j].
template <typename T>
void reduce_dy_partials(const std::vector<const T*>& partials, bool streamed, bool accumulated,
                        const double* colsum, int64_t W, int64_t N, int64_t D, double s, const T* y,
                        int64_t c0, int64_t ld, int64_t begin, int64_t end, T* dy) {
  for (int64_t j = begin; j < end; ++j) {
    T* dyj = dy + j * D;
    if (!accumulated) std::fill(dyj, dyj + D, T(0));
    for (const T* src : partials) {
      if (streamed) {
        for (int64_t k = 0; k < D; ++k) dyj[k] += src[k * ld + j - c0];
      } else {
        for (int64_t k = 0; k < D; ++k) dyj[k] += src[(j - c0) * D + k];
      }
    }
    if (colsum) {
      double cs = 0;
      for (int64_t p = 0; p < W; ++p) cs += colsum[p * N + j];
      const T f = T(-2.0 * s * cs);
      for (int64_t k = 0; k < D; ++k) dyj[k] += f * y[j * D + k];
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
