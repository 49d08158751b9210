// The softplus reduction of the CPU tile engine (the pairwise sigmoid loss of SigLIP), a policy
// of tile_loop.h, and its fused forward + backward for a uniform upstream gradient. With the logits L_ij = s * sim(x_i, y_j) of logit_tile.h and a bias t:
//   forward:   row_i = sum_j softplus(L_ij + t),   softplus(z) = max(z, 0) + log1p(exp(-|z|))
//              (j == i left out when mask_diag: the loss's positives, which it adds itself)
//   backward:  G_ij  = gr_i sigmoid(L_ij + t),      sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e),
//              e = exp(-|z|);  dscale * s = sum_ij G_ij L_ij,  dbias = sum_ij G_ij
// Every pair summed by softplus_forward_rows is a negative (the label z_ij = -1 of
// softplus(-z_ij (L_ij + t))); the loss masks the diagonal and adds the positives'
// softplus(-(L_ii + t)) in O(M D) outside (mmcl_fast/sigmoid_loss.py). The gradient policy can also
// take the positives' terms itself, softplus(-(L_ij + t)) and -g sigmoid(-(L_ij + t)): on the
// diagonal (Diagonal::Positive), or on the pairs with equal ids (`labels`, the label-aware sigmoid
// loss). No term is ever subtracted from the sum. Both forms evaluate exp only of -|z|: no logit
// overflows at any scale or bias, and a tiny softplus keeps its relative precision (log1p).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "gradient_scratch.h"
#include "label_reduction.h"
#include "tile_loop.h"
#include "tile_operands.h"
#include "vec_exp.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

template <typename T>
inline T softplus_scalar(T z) {
  return std::max(z, T(0)) + std::log1p(std::exp(-std::abs(z)));
}

template <typename T>
inline T sigmoid_scalar(T z) {
  const T e = std::exp(-std::abs(z));
  return (z >= T(0) ? T(1) : e) / (T(1) + e);
}

// One worker slot's forward over rows [r0, r1): row[i] = sum_j softplus(L_ij + t), summed per
// tile row in T and across tiles in double.
template <typename T>
void softplus_forward_rows(const Operands<T>& op, T t, bool mask_diag, int64_t r0, int64_t r1, int64_t tm,
                           T* row) {
  using V = Vectorized<T>;
  std::vector<T> tile(tm * kTileN);
  std::vector<double> rsum(tm);
  const V vt(t), vzero(T(0));
  auto begin_rows = [&](int64_t, int64_t) { std::fill(rsum.begin(), rsum.end(), 0.0); };
  auto reduce = [&](int64_t i0, int64_t mt, int64_t j0, int64_t nt, T* L) {
    if (mask_diag) {  // softplus(-inf) = 0
      for (int64_t r = 0; r < mt; ++r) {
        const int64_t c = i0 + r - j0;
        if (c >= 0 && c < nt) L[r * kTileN + c] = neg_inf<T>();
      }
    }
    for (int64_t r = 0; r < mt; ++r) {
      const T* Lr = L + r * kTileN;
      V acc(T(0));
      int64_t c = 0;
      for (; c + V::size() <= nt; c += V::size()) {
        const V z = V::loadu(Lr + c) + vt;
        acc = acc + at::vec::maximum(z, vzero) + (vzero - z.abs()).exp_u20().log1p();
      }
      T sum = horizontal_sum(acc);
      for (; c < nt; ++c) sum += softplus_scalar(Lr[c] + t);
      rsum[r] += double(sum);
    }
  };
  auto end_rows = [&](int64_t i0, int64_t mt) {
    for (int64_t r = 0; r < mt; ++r) row[i0 + r] = T(rsum[r]);
  };
  for_each_logit_tile(op, r0, r1, tm, tile.data(), begin_rows, reduce, end_rows);
}

// What the diagonal entries (i, i) of the tiles are: negatives like every other pair, left out
// (the loss adds its positives itself), or the positives, whose term is softplus(-z) =
// max(-z, 0) + log1p(e) and whose gradient is -g sigmoid(-z) = -g (z >= 0 ? e : 1) / (1 + e):
// the same exponential, and no term subtracted from another. The policy takes Negative or Masked;
// the kernels give Positive as the positives of labels without ids (PairLabels::diagonal()).
enum class Diagonal : int { Negative = 0, Masked = 1, Positive = 2 };

// The softplus backward as a policy of the tile loop (engine_kernels.h: backward_rows). With
// row_acc set it is also the forward: the same exponential e = exp(-|z|) gives sigmoid(z) and
// softplus(z), so one pass over the tiles yields the row sums and the gradients of a uniform
// upstream gradient (gr null: 1 for every row), with no second pass to recompute the tiles.
template <typename T>
struct SoftplusGradientPolicy {
  const T* gr;      // [M]: the upstream gradient of row, or null for 1
  T t;              // the bias
  Diagonal diag;    // Negative, or Masked: G_ii = 0 and softplus_ii left out
  double* row_acc;  // [M] or null: row_i += sum_j softplus(L_ij + t) (rows owned by their slot)
  // or null; else the positives are the pairs it lists (the pairs (i, i) without ids; diag must be
  // Negative): their terms are softplus(-(L + t)) and -g sigmoid(-(L + t)), every other pair a negative
  const PairLabels* labels = nullptr;
  void begin_rows(int64_t, int64_t, GradientScratch<T>&) const {}

  // G of the tile in s.L into s.G; adds sum G L and sum G to *sums, sum_j G to s.rowsum_g when
  // `row_sums`, sum_i G to colsum_g[j0 + c] when colsum_g is not null, and the softplus row sums
  // to row_acc when it is not null.
  void tile(int64_t i0, int64_t mt, int64_t j0, int64_t nt, GradientScratch<T>& s, bool row_sums,
            double* colsum_g, BackwardSums* sums) const {
    using V = Vectorized<T>;
    const V vt(t), vzero(T(0)), vone(T(1));
    T* gcol = s.gcol.data();
    if (colsum_g) std::fill(gcol, gcol + nt, T(0));
    if (labels) list_non_negatives(*labels, i0, mt, j0, nt, s);
    for (int64_t r = 0; r < mt; ++r) {
      const T* Lr = s.L.data() + r * kTileN;
      T* Gr = s.G.data() + r * kTileN;
      const T a = gr ? gr[i0 + r] : T(1);
      const V va(a);
      // this row's positives in the tile (labels), ascending columns
      const int32_t* pc = labels ? s.masked.data() + s.masked_begin[r] : nullptr;
      const int32_t* const pc_end = labels ? s.masked.data() + s.masked_begin[r + 1] : nullptr;
      // the diagonal column of this row when masked (if in the tile)
      const int64_t cd = diag == Diagonal::Masked ? i0 + r - j0 : -1;
      V acc_gl(T(0)), acc_g(T(0)), acc_sp(T(0));
      int64_t c = 0;
      for (; c + V::size() <= nt; c += V::size()) {
        const V l = V::loadu(Lr + c);
        const V z = l + vt;
        const V e = (vzero - z.abs()).exp_u20();
        const V num = V::blendv(e, vone, z >= vzero);
        V g = va * num / (vone + e);
        V sp = row_acc ? at::vec::maximum(z, vzero) + e.log1p() : vzero;
        if (pc != pc_end && *pc < c + V::size()) {  // the positives' lanes
          T lanes[V::size()] = {};
          do lanes[*pc++ - c] = T(1);
          while (pc != pc_end && *pc < c + V::size());
          const V lane = V::loadu(lanes) == vone;
          g = V::blendv(g, vzero - va * V::blendv(vone, e, z >= vzero) / (vone + e), lane);
          if (row_acc) sp = V::blendv(sp, at::vec::maximum(vzero - z, vzero) + e.log1p(), lane);
        }
        if (cd >= c && cd < c + V::size()) {  // the masked diagonal entry's lane: zero
          const V lane = V::arange(T(c), T(1)) == V(T(cd));
          g = V::blendv(g, vzero, lane);
          sp = V::blendv(sp, vzero, lane);
        }
        g.store(Gr + c);
        acc_gl = at::vec::fmadd(g, l, acc_gl);
        acc_g = acc_g + g;
        acc_sp = acc_sp + sp;
        if (colsum_g) (V::loadu(gcol + c) + g).store(gcol + c);
      }
      T gl = horizontal_sum(acc_gl), gsum = horizontal_sum(acc_g), spsum = horizontal_sum(acc_sp);
      for (; c < nt; ++c) {
        const T z = Lr[c] + t;
        T g = a * sigmoid_scalar(z), sp = row_acc ? softplus_scalar(z) : T(0);
        if (c == cd) g = sp = T(0);
        if (pc != pc_end && *pc == c) {
          g = -a * sigmoid_scalar(-z);
          sp = row_acc ? softplus_scalar(-z) : T(0);
          ++pc;
        }
        Gr[c] = g;
        gl += g * Lr[c];
        gsum += g;
        spsum += sp;
        if (colsum_g) gcol[c] += g;
      }
      sums->gl += double(gl);
      sums->g += double(gsum);
      if (row_sums) s.rowsum_g[r] += double(gsum);
      if (row_acc) row_acc[i0 + r] += double(spsum);
    }
    if (colsum_g)
      for (int64_t c = 0; c < nt; ++c) colsum_g[j0 + c] += double(gcol[c]);
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
