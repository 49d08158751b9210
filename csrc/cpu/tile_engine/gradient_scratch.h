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
// factors of the LSE's one-exponential form (lse_gradient_tile.h), and sum_j G_ij of the current
// row block (euclidean dX).
template <typename T>
struct GradientScratch {
  explicit GradientScratch(int64_t tm)
      : L(tm * kTileN), G(tm * kTileN), gc_off(kTileN), gcol(kTileN), w(kTileN), roff(tm), eoff(tm),
        rscale(tm), ascale(tm), rowsum_g(tm) {}
  std::vector<T> L, G, gc_off, gcol, w;
  std::vector<T> roff, eoff, rscale, ascale;
  std::vector<double> rowsum_g;
};

// A slot's running sums over its tiles: sum_ij G_ij L_ij (= s * dscale) and sum_ij G_ij (= dbias,
// kept by the policies with a bias).
struct BackwardSums {
  double gl = 0;
  double g = 0;
};

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
