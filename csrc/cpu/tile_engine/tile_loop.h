// The one tile loop of the CPU engine. A worker slot's rows [r0, r1) are taken tm at a time; each
// row block meets the N columns (or a panel of them) in tiles of kTileN, whose logits
//   L[r * kTileN + c] = s * sim(x_{i0 + r}, y_{j0 + c})
// logit_tile.h computes into L. A reduction policy consumes them through three callbacks:
//   begin_rows(i0, mt);  tile(i0, mt, j0, nt, L) for every column tile;  end_rows(i0, mt).
// The policies: the online log-sum-exp (lse_reduction.h) and its gradient (lse_gradient_tile.h);
// the softplus sums of the sigmoid loss and their gradient (softplus_reduction.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "logit_tile.h"
#include "tile_operands.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

// The columns [c0, c1) only (c0 a multiple of kTileN): the backward's panels.
template <typename T, typename BeginRows, typename Tile, typename EndRows>
void for_each_logit_tile(const Operands<T>& op, int64_t r0, int64_t r1, int64_t c0, int64_t c1, int64_t tm, T* L,
                         BeginRows&& begin_rows, Tile&& tile, EndRows&& end_rows) {
  for (int64_t i0 = r0; i0 < r1; i0 += tm) {
    const int64_t mt = std::min(tm, r1 - i0);
    begin_rows(i0, mt);
    for (int64_t j0 = c0; j0 < c1; j0 += kTileN) {
      const int64_t nt = std::min(kTileN, c1 - j0);
      logit_tile(op, i0, mt, j0, nt, L, kTileN);
      tile(i0, mt, j0, nt, L);
    }
    end_rows(i0, mt);
  }
}

template <typename T, typename BeginRows, typename Tile, typename EndRows>
void for_each_logit_tile(const Operands<T>& op, int64_t r0, int64_t r1, int64_t tm, T* L,
                         BeginRows&& begin_rows, Tile&& tile, EndRows&& end_rows) {
  for_each_logit_tile(op, r0, r1, 0, op.N, tm, L, begin_rows, tile, end_rows);
}

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
