// What every backward policy of the CPU tile engine shares: the per-slot tiles (the recomputed
// logits L and the gradient G = dloss/dL written by the policy's gradient tile, which
// gradient_apply.h turns into dX and dY) and the sums the scalar gradients need.
#pragma once

#include <cstdint>
#include <vector>

#include "tile_operands.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

// Per-slot scratch of the backward: the logit and gradient tiles, the per-row / per-column
// factors of the LSE's one-exponential form (lse_gradient_tile.h), sum_j G_ij of the current
// row block (euclidean dX), and the tile's masked entries: row r's columns (ascending) are
// masked[masked_begin[r] .. masked_begin[r + 1]), entries the LSE's gradient leaves at 0 (the
// diagonal when masked; the positives of label_reduction.h, whose gradient it writes itself).
template <typename T>
struct GradientScratch {
  explicit GradientScratch(int64_t tm)
      : L(tm * kTileN), G(tm * kTileN), gc_off(kTileN), gcol(kTileN), w(kTileN), roff(tm), eoff(tm),
        rscale(tm), ascale(tm), rowsum_g(tm), masked(tm * kTileN), masked_begin(tm + 1, 0) {}
  std::vector<T> L, G, gc_off, gcol, w;
  std::vector<T> roff, eoff, rscale, ascale;
  std::vector<double> rowsum_g;
  std::vector<int32_t> masked, masked_begin;

  // masked = the diagonal pairs (i, i) of the tile (rows i0.., columns j0..) when mask_diag, else none.
  void mask_diagonal(bool mask_diag, int64_t i0, int64_t mt, int64_t j0, int64_t nt) {
    int32_t k = 0;
    for (int64_t r = 0; r < mt; ++r) {
      const int64_t c = i0 + r - j0;
      if (mask_diag && c >= 0 && c < nt) masked[k++] = int32_t(c);
      masked_begin[r + 1] = k;
    }
  }
};

// A slot's running sums over its tiles: sum_ij G_ij L_ij (= s * dscale) and sum_ij G_ij (= dbias,
// kept by the policies with a bias).
struct BackwardSums {
  double gl = 0;
  double g = 0;
};

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
