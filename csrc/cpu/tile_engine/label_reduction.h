// The label-aware log-sum-exp of the CPU tile engine: the positives of a pair are given by ids,
//   P = {(i, j) : row_ids_i == col_ids_j},  minus the pairs (i, i) when mask_diag
//   (without ids, P = {(i, i)}: the plain losses' positives, taken from the tile as well);
//   the negatives are the other pairs (the pairs (i, i) also left out when mask_diag).
// Forward, from each logit tile (a mask of lse_reduction.h's forward_rows, which then reduces the
// negatives as the plain LSE does):
//   row_neg_i = log sum_{j neg} exp(L_ij),   row_pos_i = log sum_{j pos} exp(L_ij),
//   row_sum_i = sum_{j pos} L_ij                        (and the same per column j over i),
// an LSE over an empty set being -inf. The mask compares the ids of each row with the tile's
// column ids (an any-match test per row first: positives are rare in most rows), takes each
// positive's logit into the online (max, sum of exp) of its row and of its column partial, and sets
// it to -inf before the negatives' reduction. Memory: O(M + W N), never a mask or a logit matrix.
// Backward (LabelGradientPolicy): with upstream gradients gRN, gCN (of the negatives' LSEs), gRP,
// gCP (of the positives' LSEs) and gRS, gCS (of the positive sums),
//   G_ij = gRN_i exp(L_ij - row_neg_i) + gCN_j exp(L_ij - col_neg_j)                     (negatives)
//   G_ij = gRP_i exp(L_ij - row_pos_i) + gCP_j exp(L_ij - col_pos_j) + gRS_i + gCS_j    (positives)
// the negatives by the LSE's gradient tile with the positives in its masked list, the positives
// written afterwards from the same logit tile.
#pragma once

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gradient_scratch.h"
#include "lse_gradient_tile.h"
#include "tile_operands.h"
#include "vec_exp.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

// A per-column-tile filter of the ids (a Bloom filter with one hash): bit h(id) of a tile's
// kFilterBits is set for every id among its columns, so a row whose bit is clear has no positive
// in the tile and its ids are not compared. With kTileN = 256 ids in 4096 bits a row is scanned
// needlessly in ~6 % of the tiles; a row with positives everywhere scans them all (correct, slower).
constexpr int64_t kFilterBits = 4096;
constexpr int64_t kFilterWords = kFilterBits / 64;

inline uint64_t id_hash(int64_t id) {
  return (uint64_t(id) * 0x9E3779B97F4A7C15ull) >> (64 - 12);  // 12 bits: kFilterBits
}

// The filters of the column tiles of col_ids [N] (tile t at words [t * kFilterWords, ...)).
inline std::vector<uint64_t> column_tile_filters(const int64_t* col_ids, int64_t N) {
  std::vector<uint64_t> f(((N + kTileN - 1) / kTileN) * kFilterWords, 0);
  for (int64_t j = 0; j < N; ++j) {
    const uint64_t h = id_hash(col_ids[j]);
    f[(j / kTileN) * kFilterWords + (h >> 6)] |= uint64_t(1) << (h & 63);
  }
  return f;
}

// The pair labels: row_ids [M], col_ids [N] and their column-tile filters; the pairs (i, i)
// neither positive nor negative when mask_diag. Without ids (all null) the positives are the pairs
// (i, i) (the labels arange, with no compare at all: the plain losses' positives).
struct PairLabels {
  const int64_t* row_ids;
  const int64_t* col_ids;
  const uint64_t* filters;
  bool mask_diag;

  bool diagonal() const { return row_ids == nullptr; }
  // True when some column of the tile (j0.., nt of them) may be a positive of row i.
  bool any_positive(int64_t i, int64_t j0, int64_t nt) const {
    if (diagonal()) return i >= j0 && i < j0 + nt;
    const int64_t id = row_ids[i];
    const uint64_t h = id_hash(id);
    if (!((filters[(j0 / kTileN) * kFilterWords + (h >> 6)] >> (h & 63)) & 1)) return false;
    const int64_t* cid = col_ids + j0;
    bool hit = false;
    for (int64_t c = 0; c < nt; ++c) hit |= cid[c] == id;  // a reduction the compiler vectorises
    return hit;
  }
  bool positive(int64_t i, int64_t j) const {
    if (diagonal()) return i == j;
    return row_ids[i] == col_ids[j] && !(mask_diag && i == j);
  }
};

// The labels of one call: the id vectors (contiguous int64, or both empty for the diagonal) and
// the column-tile filters that PairLabels points into.
struct LabelData {
  std::vector<uint64_t> filters;
  PairLabels labels;
  LabelData(const at::Tensor& row_ids, const at::Tensor& col_ids, bool mask_diag) {
    const bool ids = row_ids.numel() > 0;
    if (ids) filters = column_tile_filters(col_ids.data_ptr<int64_t>(), col_ids.numel());
    labels = PairLabels{ids ? row_ids.data_ptr<int64_t>() : nullptr, ids ? col_ids.data_ptr<int64_t>() : nullptr,
                        filters.data(), mask_diag};
  }
  LabelData(const LabelData&) = delete;  // labels points into filters
  LabelData& operator=(const LabelData&) = delete;
};

// Adds the logit v to an online log-sum-exp kept as (max m, sum of exp(. - m)).
template <typename T>
inline void online_lse_add(T v, T& m, double& sum) {
  if (v > m) {
    sum = sum * std::exp(double(m) - double(v)) + 1.0;
    m = v;
  } else {
    sum += std::exp(double(v) - double(m));
  }
}

// The positives' running statistics: per row (owned by the slot of the row) and per column (one
// partial per slot, merged in slot order like the LSE's column partials).
template <typename T>
struct PositiveStats {
  T* row_max;        // [M], -inf where no positive yet
  double* row_sum;   // [M], sum of exp(L - row_max)
  double* row_lsum;  // [M], sum of the positive logits
  T* col_max;        // this slot's [N] or null (no column statistics)
  double* col_sum;
  double* col_lsum;
};

// The forward mask of the label-aware LSE (forward_rows' Mask): takes the positives' statistics
// and leaves only the negatives in the tile.
template <typename T>
struct LabelMask {
  PairLabels labels;
  PositiveStats<T> stats;
  void operator()(int64_t i0, int64_t mt, int64_t j0, int64_t nt, T* L) const {
    for (int64_t r = 0; r < mt; ++r) {
      const int64_t i = i0 + r;
      T* Lr = L + r * kTileN;
      if (labels.any_positive(i, j0, nt)) {
        const int64_t c_begin = labels.diagonal() ? i - j0 : 0, c_end = labels.diagonal() ? i - j0 + 1 : nt;
        for (int64_t c = c_begin; c < c_end; ++c) {
          if (!labels.positive(i, j0 + c)) continue;
          const T v = Lr[c];
          online_lse_add(v, stats.row_max[i], stats.row_sum[i]);
          stats.row_lsum[i] += double(v);
          if (stats.col_max) {
            online_lse_add(v, stats.col_max[j0 + c], stats.col_sum[j0 + c]);
            stats.col_lsum[j0 + c] += double(v);
          }
          Lr[c] = neg_inf<T>();
        }
      }
      const int64_t cd = i - j0;
      if (labels.mask_diag && cd >= 0 && cd < nt) Lr[cd] = neg_inf<T>();
    }
  }
};

// The upstream gradients of the positives' outputs and the forward's positive LSEs (the column
// ones null when the columns have no gradient).
template <typename T>
struct PositiveGrads {
  const T* g_row_pos;  // [M]
  const T* g_row_sum;  // [M]
  const T* row_pos;    // [M]
  const T* g_col_pos;  // [N] or null
  const T* g_col_sum;  // [N] or null
  const T* col_pos;    // [N] or null
};

// The label-aware LSE backward as a policy of the tile loop (engine_kernels.h: backward_rows).
// s.masked = every pair of the tile (rows i0.., columns j0..) that is not a negative: the positives
// and the masked diagonal, row by row in ascending columns (s.masked_begin[r] .. [r + 1]).
template <typename T>
void list_non_negatives(const PairLabels& labels, int64_t i0, int64_t mt, int64_t j0, int64_t nt,
                        GradientScratch<T>& s) {
  int32_t k = 0;
  for (int64_t r = 0; r < mt; ++r) {
    const int64_t i = i0 + r;
    if (labels.any_positive(i, j0, nt)) {
      if (labels.diagonal()) {
        s.masked[k++] = int32_t(i - j0);
      } else {
        const int64_t id = labels.row_ids[i];
        for (int64_t c = 0; c < nt; ++c)
          if (labels.col_ids[j0 + c] == id || (labels.mask_diag && i == j0 + c)) s.masked[k++] = int32_t(c);
      }
    } else if (labels.mask_diag && i - j0 >= 0 && i - j0 < nt) {
      s.masked[k++] = int32_t(i - j0);
    }
    s.masked_begin[r + 1] = k;
  }
}

template <typename T>
struct LabelGradientPolicy {
  LseGrads<T> negatives;  // gRN, gCN, row_neg, col_neg
  PositiveGrads<T> positives;
  PairLabels labels;

  void begin_rows(int64_t i0, int64_t mt, GradientScratch<T>& s) const {
    for (int64_t r = 0; r < mt; ++r) s.roff[r] = exp_offset(negatives.rlse[i0 + r]);
  }

  void tile(int64_t i0, int64_t mt, int64_t j0, int64_t nt, GradientScratch<T>& s, bool row_sums,
            double* colsum_g, BackwardSums* sums) const {
    list_non_negatives(labels, i0, mt, j0, nt, s);
    gradient_tile(negatives, i0, mt, j0, nt, s, row_sums, colsum_g, &sums->gl);
    const PositiveGrads<T>& p = positives;
    double gl = 0;
    for (int64_t r = 0; r < mt; ++r) {
      const int64_t i = i0 + r;
      const T* Lr = s.L.data() + r * kTileN;
      T* Gr = s.G.data() + r * kTileN;
      double gsum = 0;
      for (int32_t k = s.masked_begin[r]; k < s.masked_begin[r + 1]; ++k) {
        const int64_t c = s.masked[k], j = j0 + c;
        if (labels.mask_diag && i == j) continue;  // masked, not a positive: G stays 0
        const T v = Lr[c];
        T g = p.g_row_pos[i] * std::exp(v - p.row_pos[i]) + p.g_row_sum[i];
        if (p.g_col_pos) g += p.g_col_pos[j] * std::exp(v - p.col_pos[j]) + p.g_col_sum[j];
        Gr[c] = g;
        gl += double(g) * double(v);
        gsum += double(g);
        if (colsum_g) colsum_g[j] += double(g);
      }
      if (row_sums) s.rowsum_g[r] += gsum;
    }
    sums->gl += gl;
  }
};

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
