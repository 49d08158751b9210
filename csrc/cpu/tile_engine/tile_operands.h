// What the CPU LSE engine works on: the tile sizes, the operands of the logits
// L_ij = s * sim(x_i, y_j) as raw pointers, their O((M + N) D) preparation, and the split of the
// rows into one contiguous chunk per worker slot.
//
// Two ways to produce a tile (logit_tile.h):
// * BLAS (dot; euclidean with D > kSmallD): one GEMM per tile. Euclidean runs on augmented
//   operands [x, -|x|^2/2, 1] . [y, 1, -|y|^2/2] = x.y - |x|^2/2 - |y|^2/2 (times 2s), on inputs
//   centred on their joint mean (csrc/op_checks.cpp), so the expansion works at the scale of the
//   data's spread;
// * streamed (l1, or dot/euclidean with D <= kSmallD): vectorised loops over Y^T (D x N), whose
//   cost is the arithmetic itself where a skinny GEMM call would cost more; euclidean then uses
//   the differences directly.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>

#include "../../similarity.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

constexpr int64_t kTileM = 128;
constexpr int64_t kTileN = 256;
constexpr int64_t kSmallD = 16;

template <typename T>
struct Operands {
  const T* x;   // M x D
  const T* y;   // N x D
  const T* yt;  // D x N (streamed only)
  const T* xa;  // M x (D + 2): [x_i, -|x_i|^2 / 2, 1] (euclidean BLAS only)
  const T* ya;  // N x (D + 2): [y_j, 1, -|y_j|^2 / 2] (euclidean BLAS only)
  int64_t M, N, D;
  Similarity sim;
  T s;
  // Streamed tiles (l1, or dot/euclidean with D <= kSmallD): logits and gradients are computed by
  // vectorised loops over Y^T (yt, D x N) instead of BLAS; the backward then accumulates dY^T
  // (D x N).
  bool streamed;
};

// The operands and the tensors that own their memory.
template <typename T>
struct Prepared {
  at::Tensor x, y, yt, xa, ya;
  Operands<T> op;
};

// [a_i, -|a_i|^2 / 2, 1] (norm_last false) or [a_i, 1, -|a_i|^2 / 2] (norm_last true).
template <typename T>
at::Tensor augmented_rows(const at::Tensor& a, bool norm_last) {
  const int64_t D = a.size(1);
  auto out = at::empty({a.size(0), D + 2}, a.options());
  const T* ap = a.template data_ptr<T>();
  T* o = out.template data_ptr<T>();
  for (int64_t i = 0; i < a.size(0); ++i) {
    T acc = 0;
    for (int64_t k = 0; k < D; ++k) {
      acc += ap[i * D + k] * ap[i * D + k];
      o[i * (D + 2) + k] = ap[i * D + k];
    }
    o[i * (D + 2) + D + (norm_last ? 1 : 0)] = T(-0.5) * acc;
    o[i * (D + 2) + D + (norm_last ? 0 : 1)] = T(1);
  }
  return out;
}

// Contiguous operands, Y^T for streamed tiles, augmented rows for euclidean BLAS tiles. The
// O((M + N) D) set-up runs in plain loops on the calling thread (ATen's copy and sum would each
// open an OpenMP region).
template <typename T>
Prepared<T> prepare(const at::Tensor& x_in, const at::Tensor& y_in, Similarity sim, double s) {
  Prepared<T> p;
  p.x = x_in.contiguous();
  p.y = y_in.contiguous();
  const int64_t M = p.x.size(0), N = p.y.size(0), D = p.x.size(1);
  const bool streamed = sim == Similarity::L1 || D <= kSmallD;
  if (streamed) {
    p.yt = at::empty({D, N}, p.y.options());
    const T* y = p.y.template data_ptr<T>();
    T* yt = p.yt.template data_ptr<T>();
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < D; ++k) yt[k * N + j] = y[j * D + k];
  }
  if (sim == Similarity::Euclidean && !streamed) {
    p.xa = augmented_rows<T>(p.x, false);
    p.ya = augmented_rows<T>(p.y, true);
  }
  p.op = Operands<T>{p.x.template data_ptr<T>(),
                     p.y.template data_ptr<T>(),
                     p.yt.defined() ? p.yt.template data_ptr<T>() : nullptr,
                     p.xa.defined() ? p.xa.template data_ptr<T>() : nullptr,
                     p.ya.defined() ? p.ya.template data_ptr<T>() : nullptr,
                     M,
                     N,
                     D,
                     sim,
                     static_cast<T>(s),
                     streamed};
  return p;
}

// Rows [begin(p), begin(p + 1)) belong to worker slot p; tile_m rows per tile.
struct RowPartition {
  int64_t tile_m;
  int64_t workers;
  int64_t n_tiles;
  int64_t begin(int64_t p, int64_t M) const {
    return std::min(M, (p * n_tiles / workers) * tile_m);
  }
};

inline RowPartition partition_rows(int64_t M, int64_t max_workers) {
  const int64_t threads = std::max<int64_t>(1, max_workers);
  // Small M: shrink the row tile so that every thread gets work.
  const int64_t per_thread = (M + threads - 1) / threads;
  const int64_t tm = std::min<int64_t>(kTileM, std::max<int64_t>(16, per_thread));
  const int64_t n_tiles = (M + tm - 1) / tm;
  return {tm, std::min<int64_t>(threads, n_tiles), n_tiles};
}

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
