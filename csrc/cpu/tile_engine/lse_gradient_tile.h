// The gradient tile of the CPU LSE engine: from a recomputed logit tile L and the forward's LSEs,
//   G_ij = gr_i exp(L_ij - row_lse_i) + gc_j exp(L_ij - col_lse_j)   (= dloss/dL_ij, 0 where masked:
//   the entries GradientScratch::masked lists)
// and, in the same pass, the tile's contributions to
//   dscale * s = sum_ij G_ij L_ij,   rowsum_i = sum_j G_ij,   colsum_j = sum_i G_ij
// (the row and column sums feed the euclidean terms of dX and dY, gradient_apply.h).
//
// With P = exp(L - roff_r) (row softmax) and Q = exp(L - coff_c) (column softmax), G = gr_r P +
// gc_c Q. Where the tile's offsets allow (shared_exp_offsets, vec_exp.h), with e = exp(L - eoff_r):
// P = e exp(eoff_r - roff_r) and Q = e exp(eoff_r - t) exp(t - coff_c), so
// G = e (ascale_r + rscale_r w_c), ascale_r = gr_r exp(eoff_r - roff_r), rscale_r = exp(eoff_r - t),
// w_c = gc_c exp(t - coff_c): one exponential per logit instead of two.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "gradient_scratch.h"
#include "tile_operands.h"
#include "vec_exp.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

// The upstream gradients and the forward's LSEs (gr/gc null: that direction has no gradient).
template <typename T>
struct LseGrads {
  const T* gr;    // [M] or null
  const T* gc;    // [N] or null
  const T* rlse;  // [M]
  const T* clse;  // [N] or null
};

// The column offsets s.gc_off (when there is a column gradient) and the factors of the
// one-exponential form for tile (i0.., j0..); false when the tile needs two exponentials per logit
// (or has no column gradient).
template <typename T>
bool shared_gradient_factors(const LseGrads<T>& g, int64_t i0, int64_t mt, int64_t j0, int64_t nt,
                             GradientScratch<T>& s) {
  if (!g.gc) return false;
  T lowest = std::numeric_limits<T>::infinity();
  for (int64_t c = 0; c < nt; ++c) {
    s.gc_off[c] = exp_offset(g.clse[j0 + c]);
    lowest = std::min(lowest, s.gc_off[c]);
  }
  T t;
  if (!shared_exp_offsets(s.roff.data(), mt, lowest, s.eoff.data(), &t)) return false;
  // The factors multiply the upstream gradients into exp(offset differences) as low as e^-80:
  // under the kernel's flush to zero (runtime/flush_denormals.h) a small gradient times such a
  // factor would vanish, and with it terms that e (up to e^80) brings back into range. A factor
  // whose true value is below the type's smallest normal number, where its terms can matter, sends
  // the tile to two exponentials per logit, where each product is formed at its own size.
  constexpr T tiny = std::numeric_limits<T>::min();
  T top = neg_inf<T>();  // every logit of the tile is <= top
  for (int64_t r = 0; r < mt; ++r) {
    top = std::max(top, s.roff[r]);
    const double a = g.gr ? double(g.gr[i0 + r]) * std::exp(double(s.eoff[r]) - double(s.roff[r])) : 0.0;
    if (g.gr && std::abs(g.gr[i0 + r]) >= tiny && std::abs(a) < tiny) return false;
    s.ascale[r] = T(a);
  }
  exp_of_offsets(s.eoff.data(), t, T(1), mt, s.rscale.data());
  exp_of_offsets(s.gc_off.data(), t, T(-1), nt, s.w.data());
  for (int64_t c = 0; c < nt; ++c) {
    s.w[c] *= g.gc[j0 + c];
    if (std::abs(s.w[c]) >= tiny || g.gc[j0 + c] == T(0)) continue;
    // |gc| exp(top - c) bounds the column's terms here: below the smallest normal, they are lost
    // in either form
    const double wc = double(g.gc[j0 + c]) * std::exp(double(t) - double(s.gc_off[c]));
    if (std::abs(wc) * std::exp(double(top) - double(t)) >= tiny) return false;
    s.w[c] = T(0);
  }
  return true;
}

// G of the tile in s.L (rows i0.., columns j0..) into s.G, 0 at the entries s.masked lists. Adds
// sum G L to *dscale_gl, sum_j G to s.rowsum_g when `row_sums`, and sum_i G to colsum_g[j0 + c]
// when colsum_g is not null. s.roff must hold exp_offset(row_lse) of the tile's rows.
template <typename T>
void gradient_tile(const LseGrads<T>& g, int64_t i0, int64_t mt, int64_t j0, int64_t nt,
                   GradientScratch<T>& s, bool row_sums, double* colsum_g, double* dscale_gl) {
  using V = Vectorized<T>;
  const T* gr = g.gr;
  const T* gc = g.gc;
  const bool shared = shared_gradient_factors(g, i0, mt, j0, nt, s);  // fills s.gc_off when gc
  const bool col_sums = colsum_g != nullptr;
  T* gcol = s.gcol.data();
  if (col_sums) std::fill(gcol, gcol + nt, T(0));
  for (int64_t r = 0; r < mt; ++r) {
    const T* Lr = s.L.data() + r * kTileN;
    T* Gr = s.G.data() + r * kTileN;
    const T a = gr ? gr[i0 + r] : T(0);
    const int32_t* mc = s.masked.data() + s.masked_begin[r];  // this row's masked columns
    const int32_t* const mc_end = s.masked.data() + s.masked_begin[r + 1];
    const V va(a), voff(s.roff[r]), vrs(s.rscale[r]), vsoff(s.eoff[r]), vsa(s.ascale[r]);
    // One pass: G_rc, and the running sums of G_rc * L_rc (dscale) and G_rc (euclidean).
    V acc_gl(T(0)), acc_g(T(0));
    auto consume = [&](V gv, const V& l, int64_t c) {
      gv.store(Gr + c);
      if (mc != mc_end && *mc < c + V::size()) {  // zero the masked entries of this vector
        do Gr[*mc++] = T(0);
        while (mc != mc_end && *mc < c + V::size());
        gv = V::loadu(Gr + c);
      }
      acc_gl = at::vec::fmadd(gv, l, acc_gl);
      acc_g = acc_g + gv;
      if (col_sums) (V::loadu(gcol + c) + gv).store(gcol + c);
    };
    int64_t c = 0;
    if (shared) {
      for (; c + V::size() <= nt; c += V::size()) {
        const V l = V::loadu(Lr + c);
        consume((l - vsoff).exp_u20() * at::vec::fmadd(vrs, V::loadu(s.w.data() + c), vsa), l, c);
      }
    } else {
      const V vninf(neg_inf<T>());
      for (; c + V::size() <= nt; c += V::size()) {
        const V l = V::loadu(Lr + c);
        const V ea = gr ? l - voff : vninf, eb = gc ? l - V::loadu(s.gc_off.data() + c) : vninf;
        if (all_negligible(ea, eb)) {
          consume(V(T(0)), l, c);
          continue;
        }
        V gv = gr ? va * ea.exp_u20() : V(T(0));
        if (gc) gv = gv + V::loadu(gc + j0 + c) * eb.exp_u20();
        consume(gv, l, c);
      }
    }
    T gl = horizontal_sum(acc_gl), gsum = horizontal_sum(acc_g);
    for (; c < nt; ++c) {
      T gv;
      if (shared) {
        gv = std::exp(Lr[c] - s.eoff[r]) * (s.ascale[r] + s.rscale[r] * s.w[c]);
      } else {
        gv = gr ? a * std::exp(Lr[c] - s.roff[r]) : T(0);
        if (gc) gv += gc[j0 + c] * std::exp(Lr[c] - s.gc_off[c]);
      }
      if (mc != mc_end && *mc == c) {
        gv = T(0);
        ++mc;
      }
      Gr[c] = gv;
      gl += gv * Lr[c];
      gsum += gv;
      if (col_sums) gcol[c] += gv;
    }
    *dscale_gl += double(gl);
    if (row_sums) s.rowsum_g[r] += double(gsum);
  }
  if (col_sums)
    for (int64_t c = 0; c < nt; ++c) colsum_g[j0 + c] += double(gcol[c]);
}

// The LSE backward as a policy of the tile loop (engine_kernels.h: backward_rows).
template <typename T>
struct LseGradientPolicy {
  LseGrads<T> grads;
  bool mask_diag;
  void begin_rows(int64_t i0, int64_t mt, GradientScratch<T>& s) const {
    for (int64_t r = 0; r < mt; ++r) s.roff[r] = exp_offset(grads.rlse[i0 + r]);
  }
  void tile(int64_t i0, int64_t mt, int64_t j0, int64_t nt, GradientScratch<T>& s, bool row_sums,
            double* colsum_g, BackwardSums* sums) const {
    s.mask_diagonal(mask_diag, i0, mt, j0, nt);
    gradient_tile(grads, i0, mt, j0, nt, s, row_sums, colsum_g, &sums->gl);
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
