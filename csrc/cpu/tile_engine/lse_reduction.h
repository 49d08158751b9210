// The log-sum-exp reduction of the CPU tile engine (a policy of tile_loop.h): the online
// log-sum-exp of each logit tile, in both directions,
//   row_lse_i = log sum_j exp(L_ij),   col_lse_j = log sum_i exp(L_ij)   (j == i left out when masked),
// kept as running (max, sum of exp(L - max)) pairs: a new maximum rescales the sum by
// exp(old max - new max). A worker slot owns the row state of its rows and private column
// partials over all N columns; merge_column_partials combines the partials in slot order.
//
// A tile is read twice: pass 1 finds its row and column maxima, pass 2 sums the exponentials,
// with one exponential per logit where shared_exp_offsets allows (vec_exp.h) and two otherwise.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "tile_loop.h"
#include "tile_operands.h"
#include "vec_exp.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

// Per-slot scratch of the forward: one tile, its maxima, offsets and sums.
template <typename T>
struct ForwardScratch {
  explicit ForwardScratch(int64_t tm)
      : tile(tm * kTileN), tcol(kTileN), tsum(kTileN), coff(kTileN), cscale(kTileN), rmax(tm),
        trow(tm), roff(tm), eoff(tm), rscale(tm), rsum(tm) {}
  std::vector<T> tile, tcol, tsum, coff, cscale;  // per column of the tile
  std::vector<T> rmax, trow, roff, eoff, rscale;  // per row of the tile
  std::vector<double> rsum;
};

// Pass 1: trow[r] = max_c L[r, c] and, when compute_col, tcol[c] = max_r L[r, c], in one sweep.
template <typename T>
void tile_maxima(const T* L, int64_t mt, int64_t nt, bool compute_col, T* trow, T* tcol) {
  using V = Vectorized<T>;
  const V vninf(neg_inf<T>());
  if (compute_col) std::fill(tcol, tcol + nt, neg_inf<T>());
  for (int64_t r = 0; r < mt; ++r) {
    const T* Lr = L + r * kTileN;
    V vm = vninf;
    int64_t c = 0;
    for (; c + V::size() <= nt; c += V::size()) {
      const V l = V::loadu(Lr + c);
      vm = at::vec::maximum(vm, l);
      if (compute_col) at::vec::maximum(V::loadu(tcol + c), l).store(tcol + c);
    }
    T m = horizontal_max(vm);
    for (; c < nt; ++c) {
      m = std::max(m, Lr[c]);
      if (compute_col) tcol[c] = std::max(tcol[c], Lr[c]);
    }
    trow[r] = m;
  }
}

// Raises the running maxima max_[k] to include tile_max[k] (k < n), rescales the running sums
// sum[k] to the new offsets, and writes the offsets exp_offset(max_[k]) to off[k]; returns the
// smallest offset.
template <typename T>
T raise_running_maxima(T* max_, double* sum, const T* tile_max, int64_t n, T* off) {
  T lowest = std::numeric_limits<T>::infinity();
  for (int64_t k = 0; k < n; ++k) {
    const T nm = std::max(max_[k], tile_max[k]);
    if (nm != max_[k]) sum[k] *= std::exp(double(max_[k]) - double(exp_offset(nm)));
    max_[k] = nm;
    off[k] = exp_offset(nm);
    lowest = std::min(lowest, off[k]);
  }
  return lowest;
}

// Pass 2 with one exponential per logit: e = exp(L - eoff_r) feeds the row sum (rescaled by
// exp(eoff_r - roff_r)) and e * exp(eoff_r - t) the column sum, rescaled by exp(t - coff_c).
template <typename T>
void accumulate_shared_exp(const T* L, int64_t mt, int64_t nt, T t, ForwardScratch<T>& w,
                           double* csum) {
  using V = Vectorized<T>;
  exp_of_offsets(w.eoff.data(), t, T(1), mt, w.rscale.data());
  exp_of_offsets(w.coff.data(), t, T(-1), nt, w.cscale.data());
  T* tsum = w.tsum.data();
  for (int64_t r = 0; r < mt; ++r) {
    const T* Lr = L + r * kTileN;
    const V voff(w.eoff[r]), vscale(w.rscale[r]);
    V acc(T(0));
    int64_t c = 0;
    for (; c + V::size() <= nt; c += V::size()) {
      const V e = (V::loadu(Lr + c) - voff).exp_u20();
      acc = acc + e;
      at::vec::fmadd(e, vscale, V::loadu(tsum + c)).store(tsum + c);
    }
    T s = horizontal_sum(acc);
    for (; c < nt; ++c) {
      const T e = std::exp(Lr[c] - w.eoff[r]);
      s += e;
      tsum[c] += e * w.rscale[r];
    }
    w.rsum[r] += w.eoff[r] == w.roff[r] ? double(s)
                                         : double(s) * std::exp(double(w.eoff[r]) - double(w.roff[r]));
  }
  // exp(t - coff_c) below the smallest normal number is flushed to zero (runtime/flush_denormals.h)
  // while e (up to e^80) may have carried terms of up to e^-7 of the column's sum: those columns
  // take the factor in double
  for (int64_t c = 0; c < nt; ++c) {
    const double scale = w.cscale[c] >= std::numeric_limits<T>::min() || tsum[c] == T(0)
                             ? double(w.cscale[c])
                             : std::exp(double(t) - double(w.coff[c]));
    csum[c] += double(tsum[c]) * scale;
  }
}

// Pass 2 with two exponentials per logit, one against each offset; vectors negligible against
// both are skipped.
template <typename T>
void accumulate_two_exp(const T* L, int64_t mt, int64_t nt, ForwardScratch<T>& w, double* csum) {
  using V = Vectorized<T>;
  T* tsum = w.tsum.data();
  const T* coff = w.coff.data();
  for (int64_t r = 0; r < mt; ++r) {
    const T* Lr = L + r * kTileN;
    const V voff(w.roff[r]);
    V acc(T(0));
    int64_t c = 0;
    for (; c + V::size() <= nt; c += V::size()) {
      const V l = V::loadu(Lr + c);
      const V a = l - voff, b = l - V::loadu(coff + c);
      if (all_negligible(a, b)) continue;
      acc = acc + a.exp_u20();
      (V::loadu(tsum + c) + b.exp_u20()).store(tsum + c);
    }
    T s = horizontal_sum(acc);
    for (; c < nt; ++c) {
      s += std::exp(Lr[c] - w.roff[r]);
      tsum[c] += std::exp(Lr[c] - coff[c]);
    }
    w.rsum[r] += double(s);
  }
  for (int64_t c = 0; c < nt; ++c) csum[c] += double(tsum[c]);
}

// The mask of the plain LSE: -inf on the pairs (i, i) when mask_diag (the logits left out).
template <typename T>
struct DiagonalMask {
  bool mask_diag;
  void operator()(int64_t i0, int64_t mt, int64_t j0, int64_t nt, T* L) const {
    if (!mask_diag) return;
    for (int64_t r = 0; r < mt; ++r) {
      const int64_t c = i0 + r - j0;
      if (c >= 0 && c < nt) L[r * kTileN + c] = neg_inf<T>();
    }
  }
};

// One worker slot's forward over rows [r0, r1): row_lse of those rows, and this slot's column
// partials (cmax, csum over all N columns; untouched unless compute_col). `mask(i0, mt, j0, nt, L)`
// sees each logit tile first and sets the logits that the LSEs leave out to -inf (DiagonalMask;
// label_reduction.h's LabelMask, which also takes the positives' statistics from them).
template <typename T, typename Mask>
void forward_rows(const Operands<T>& op, const Mask& mask, bool compute_col, int64_t r0, int64_t r1,
                  int64_t tm, T* row_lse, T* cmax, double* csum) {
  ForwardScratch<T> w(tm);
  auto begin_rows = [&](int64_t, int64_t) {
    std::fill(w.rmax.begin(), w.rmax.end(), neg_inf<T>());
    std::fill(w.rsum.begin(), w.rsum.end(), 0.0);
  };
  auto tile = [&](int64_t i0, int64_t mt, int64_t j0, int64_t nt, T* L) {
    mask(i0, mt, j0, nt, L);
    tile_maxima(L, mt, nt, compute_col, w.trow.data(), w.tcol.data());
    raise_running_maxima(w.rmax.data(), w.rsum.data(), w.trow.data(), mt, w.roff.data());
    if (!compute_col) {
      for (int64_t r = 0; r < mt; ++r) w.rsum[r] += double(sum_exp(L + r * kTileN, nt, w.roff[r]));
      return;
    }
    const T lowest = raise_running_maxima(cmax + j0, csum + j0, w.tcol.data(), nt, w.coff.data());
    std::fill(w.tsum.begin(), w.tsum.begin() + nt, T(0));
    T t;
    if (shared_exp_offsets(w.roff.data(), mt, lowest, w.eoff.data(), &t)) {
      accumulate_shared_exp(L, mt, nt, t, w, csum + j0);
    } else {
      accumulate_two_exp(L, mt, nt, w, csum + j0);
    }
  };
  auto end_rows = [&](int64_t i0, int64_t mt) {
    for (int64_t r = 0; r < mt; ++r)
      row_lse[i0 + r] = w.rsum[r] > 0 ? T(double(w.rmax[r]) + std::log(w.rsum[r])) : neg_inf<T>();
  };
  for_each_logit_tile(op, r0, r1, tm, w.tile.data(), begin_rows, tile, end_rows);
}

// col_lse_j = log sum_p csum[p][j] exp(cmax[p][j]) for j in [begin, end), over W slots' partials.
template <typename T>
void merge_column_partials(const T* cmax, const double* csum, int64_t W, int64_t N, int64_t begin,
                           int64_t end, T* col_lse) {
  for (int64_t j = begin; j < end; ++j) {
    T m = neg_inf<T>();
    for (int64_t p = 0; p < W; ++p) m = std::max(m, cmax[p * N + j]);
    const double off = exp_offset(m);
    double tot = 0;
    for (int64_t p = 0; p < W; ++p) tot += csum[p * N + j] * std::exp(double(cmax[p * N + j]) - off);
    col_lse[j] = tot > 0 ? T(off + std::log(tot)) : neg_inf<T>();
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
