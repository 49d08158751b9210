// CPU kernels of the pairwise log-sum-exp operator.
//
// With X in R^{M x D}, Y in R^{N x D}, scale s > 0 and logits L_ij = s * sim(x_i, y_j):
//   forward:   row_lse_i = log sum_j exp(L_ij),   col_lse_j = log sum_i exp(L_ij)
//              (entries j == i are excluded when mask_diag is set)
//   backward:  given upstream gradients gr (of row_lse) and gc (of col_lse),
//              G_ij   = gr_i exp(L_ij - row_lse_i) + gc_j exp(L_ij - col_lse_j)   (= dloss/dL_ij)
//              dscale = sum_ij G_ij sim_ij
//              dx_i   = s sum_j G_ij d sim_ij / d x_i,   dy_j = s sum_i G_ij d sim_ij / d y_j
//
// Euclidean inputs arrive centred on their joint mean (csrc/ops.cpp), so the BLAS expansion
// 2 x.y - |x|^2 - |y|^2 works at the scale of the data's spread. Its logit tiles are one GEMM over
// D + 2 augmented features: [x, -|x|^2/2, 1] . [y, 1, -|y|^2/2] = x.y - |x|^2/2 - |y|^2/2, times 2s.
// Streamed tiles (D <= 16) use the differences directly.
//
// Work is split into W row chunks, one per worker slot; the slots run on the kernel's own pool
// of sleeping helpers (worker_pool.h), never in OpenMP regions. A worker streams over (tile_m x tile_n) logit
// tiles: each tile is computed once (BLAS for dot/euclidean; register-blocked vectorised loops
// over Y^T for D <= 16 and for l1) and feeds both the online row LSE (owned by the worker) and
// the worker's private column partials (running max + sum of exp). The forward reads a tile
// twice: one sweep for its row and column maxima, one for the sums. Where the tile's row and
// column offsets lie within shared_exp_spread + shared_exp_headroom of each other, one
// exponential per logit serves both sums (shared_exp_offsets); the backward's
// G = gr P + gc Q likewise needs one. Column partials are merged in worker order, so results are
// deterministic for a fixed thread count. The backward recomputes tiles; dX rows are owned,
// dY is accumulated per worker and summed in worker order. Extra memory is
// O(W * (N + tile_m * tile_n)) in the forward and O(W * N * D) (capped) in the backward, plus
// (M + N)(D + 2) for euclidean's augmented operands: never O(M * N).
#include "pairwise_lse_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../similarity.h"
#include "blas.h"
#include "flush_denormals.h"
#include "worker_pool.h"

namespace mmcl_fast {
namespace {

using at::vec::Vectorized;

constexpr int64_t kTileM = 128;
constexpr int64_t kTileN = 256;
constexpr int64_t kSmallD = 16;
// Upper bound on the backward's per-worker dY partials; fewer workers are used above it.
constexpr int64_t kPartialBudgetBytes = int64_t(256) << 20;

template <typename T>
constexpr T neg_inf() { return -std::numeric_limits<T>::infinity(); }

// Offset used inside exp(v - offset): a running max of -inf (nothing seen yet) becomes 0 so that
// exp(-inf - offset) is 0 rather than NaN.
template <typename T>
inline T exp_offset(T m) { return m == neg_inf<T>() ? T(0) : m; }

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
  // vectorised loops over Y^T (yt, D x N) instead of BLAS, whose skinny-matrix calls cost more
  // than the arithmetic for tiny D; the backward then accumulates dY^T (D x N).
  bool streamed;
};

template <typename T>
T horizontal_sum(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T s = 0;
  for (int64_t l = 0; l < Vectorized<T>::size(); ++l) s += lanes[l];
  return s;
}

template <typename T>
T horizontal_max(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T m = neg_inf<T>();
  for (int64_t l = 0; l < Vectorized<T>::size(); ++l) m = std::max(m, lanes[l]);
  return m;
}

// sum_c exp(p[c] - off)
template <typename T>
T sum_exp(const T* p, int64_t n, T off) {
  using V = Vectorized<T>;
  const V voff(off);
  int64_t c = 0;
  V acc(T(0));
  for (; c + V::size() <= n; c += V::size()) acc = acc + (V::loadu(p + c) - voff).exp_u20();
  T s = horizontal_sum(acc);
  for (; c < n; ++c) s += std::exp(p[c] - off);
  return s;
}

// L[r * ldl + c] = s * sim(x_{i0 + r}, y_{j0 + c}) for r < tm, c < tn.
template <typename T>
void logit_tile(const Operands<T>& op, int64_t i0, int64_t tm, int64_t j0, int64_t tn, T* L,
                int64_t ldl) {
  using V = Vectorized<T>;
  const int64_t D = op.D;
  const bool l1 = op.sim == Similarity::L1;
  const bool euclid = op.sim == Similarity::Euclidean;
  // Streamed: dot s x.y ; euclidean -s sum (x - y)^2 (on differences: no cancellation) ;
  //           l1 -s sum |x - y|.
  // BLAS:     dot s x.y ; euclidean 2s [x, -|x|^2/2, 1].[y, 1, -|y|^2/2] (augmented operands).
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

struct RowPartition {
  int64_t tile_m;
  int64_t workers;
  int64_t n_tiles;
  int64_t begin(int64_t p, int64_t M) const {
    return std::min(M, (p * n_tiles / workers) * tile_m);
  }
};

RowPartition partition_rows(int64_t M, int64_t max_workers) {
  const int64_t threads = std::max<int64_t>(1, max_workers);
  // Small M: shrink the row tile so that every thread gets work.
  const int64_t per_thread = (M + threads - 1) / threads;
  const int64_t tm = std::min<int64_t>(kTileM, std::max<int64_t>(16, per_thread));
  const int64_t n_tiles = (M + tm - 1) / tm;
  return {tm, std::min<int64_t>(threads, n_tiles), n_tiles};
}

// One exponential per logit serves both the row and the column sums of a tile. With r_i the row
// offsets, c_j the column offsets (each >= every logit of its row / column), lowest = min_j c_j,
// per-row exponent offsets o_i = min(r_i, lowest + spread) and t = max_i o_i:
//   exp(L_ij - r_i) = exp(L_ij - o_i) * exp(o_i - r_i)                      (row sums)
//   exp(L_ij - c_j) = exp(L_ij - o_i) * exp(o_i - t) * exp(t - c_j)         (column sums)
// * o_i - c_j <= spread and t - c_j <= spread: exp(t - c_j) < e^70 is finite, and a term
//   exp(L_ij - o_i) lost to underflow (below e^-87 in float) weighs less than e^-(87 - 70) =
//   e^-17 of its column's total (and less than e^-87 of its row's), under float32's epsilon
//   e^-15.9;
// * r_i - o_i <= headroom: exp(L_ij - o_i) <= e^80, and kTileM (128) of them sum below float's
//   e^88.7.
// That holds whenever max_i r_i - lowest <= spread + headroom; tiles with a wider spread use two
// exponentials per logit.
template <typename T>
constexpr T shared_exp_spread() { return std::is_same_v<T, float> ? T(70) : T(600); }
template <typename T>
constexpr T shared_exp_headroom() { return std::is_same_v<T, float> ? T(80) : T(100); }

// o_i = min(r_i, lowest + spread) for i < n and t = max_i o_i (above), or false when the tile's
// spread is too wide for one exponential per logit.
template <typename T>
bool shared_exp_offsets(const T* r, int64_t n, T lowest, T* o, T* t) {
  T top = neg_inf<T>();
  for (int64_t i = 0; i < n; ++i) top = std::max(top, r[i]);
  if (!(top - lowest <= shared_exp_spread<T>() + shared_exp_headroom<T>())) return false;
  const T cap = lowest + shared_exp_spread<T>();
  *t = neg_inf<T>();
  for (int64_t i = 0; i < n; ++i) {
    o[i] = std::min(r[i], cap);
    *t = std::max(*t, o[i]);
  }
  return true;
}

// Exponents below which exp() is under the type's smallest normal number (float e^-87.3, double
// e^-708.4). Every offset used here is at least its row's or column's largest logit, whose term is
// >= e^0 in the same sum, so a term below e^negligible_exponent is lost to rounding either way.
// The two-exponential paths skip vectors whose every exponent lies below it: with a wide logit
// spread (euclidean or unnormalised dot at a low temperature) that is most of the tile.
template <typename T>
constexpr T negligible_exponent() { return std::is_same_v<T, float> ? T(-88) : T(-709); }

// True when every lane of max(a, b) is below negligible_exponent.
template <typename T>
inline bool all_negligible(const Vectorized<T>& a, const Vectorized<T>& b) {
  constexpr int all_lanes = (1 << Vectorized<T>::size()) - 1;
  return (at::vec::maximum(a, b) > Vectorized<T>(negligible_exponent<T>())).zero_mask() == all_lanes;
}

// out[c] = exp(sign * (a[c] - b)) for c < n (a vectorised exp of offsets).
template <typename T>
void exp_of_offsets(const T* a, T b, T sign, int64_t n, T* out) {
  using V = Vectorized<T>;
  const V vb(b), vsign(sign);
  int64_t c = 0;
  for (; c + V::size() <= n; c += V::size()) (vsign * (V::loadu(a + c) - vb)).exp_u20().store(out + c);
  for (; c < n; ++c) out[c] = std::exp(sign * (a[c] - b));
}

template <typename T>
void forward_rows(const Operands<T>& op, bool mask_diag, bool compute_col, int64_t r0, int64_t r1,
                  int64_t tm, T* row_lse, T* cmax, double* csum) {
  using V = Vectorized<T>;
  std::vector<T> tile(tm * kTileN), tcol(kTileN), tsum(kTileN), coff(kTileN), cscale(kTileN);
  std::vector<T> rmax(tm), trow(tm), roff(tm), eoff(tm), rscale(tm);
  std::vector<double> rsum(tm);
  const int64_t N = op.N;
  const V vninf(neg_inf<T>());
  for (int64_t i0 = r0; i0 < r1; i0 += tm) {
    const int64_t mt = std::min(tm, r1 - i0);
    std::fill(rmax.begin(), rmax.end(), neg_inf<T>());
    std::fill(rsum.begin(), rsum.end(), 0.0);
    for (int64_t j0 = 0; j0 < N; j0 += kTileN) {
      const int64_t nt = std::min(kTileN, N - j0);
      T* L = tile.data();
      logit_tile(op, i0, mt, j0, nt, L, kTileN);
      if (mask_diag) {
        for (int64_t r = 0; r < mt; ++r) {
          const int64_t c = i0 + r - j0;
          if (c >= 0 && c < nt) L[r * kTileN + c] = neg_inf<T>();
        }
      }
      // Pass 1: the tile's row maxima, and (compute_col) its column maxima, in one sweep.
      if (compute_col) std::fill(tcol.begin(), tcol.begin() + nt, neg_inf<T>());
      for (int64_t r = 0; r < mt; ++r) {
        const T* Lr = L + r * kTileN;
        V vm = vninf;
        int64_t c = 0;
        for (; c + V::size() <= nt; c += V::size()) {
          const V l = V::loadu(Lr + c);
          vm = at::vec::maximum(vm, l);
          if (compute_col) at::vec::maximum(V::loadu(tcol.data() + c), l).store(tcol.data() + c);
        }
        T m = horizontal_max(vm);
        for (; c < nt; ++c) {
          m = std::max(m, Lr[c]);
          if (compute_col) tcol[c] = std::max(tcol[c], Lr[c]);
        }
        trow[r] = m;
      }
      // Running row maxima; the row sums are rescaled to the new offsets.
      for (int64_t r = 0; r < mt; ++r) {
        const T nm = std::max(rmax[r], trow[r]);
        if (nm != rmax[r]) rsum[r] *= std::exp(double(rmax[r]) - double(exp_offset(nm)));
        rmax[r] = nm;
        roff[r] = exp_offset(nm);
      }
      if (!compute_col) {
        for (int64_t r = 0; r < mt; ++r) rsum[r] += double(sum_exp(L + r * kTileN, nt, roff[r]));
        continue;
      }
      // Running column maxima, likewise.
      T lowest = std::numeric_limits<T>::infinity();
      for (int64_t c = 0; c < nt; ++c) {
        const T nm = std::max(cmax[j0 + c], tcol[c]);
        if (nm != cmax[j0 + c]) csum[j0 + c] *= std::exp(double(cmax[j0 + c]) - double(exp_offset(nm)));
        cmax[j0 + c] = nm;
        coff[c] = exp_offset(nm);
        lowest = std::min(lowest, coff[c]);
      }
      std::fill(tsum.begin(), tsum.begin() + nt, T(0));
      T t;
      if (shared_exp_offsets(roff.data(), mt, lowest, eoff.data(), &t)) {
        // Pass 2, one exponential per logit: e = exp(L - eoff_r) feeds the row sum (rescaled by
        // exp(eoff_r - roff_r)), and e * exp(eoff_r - t) the column sum, rescaled by
        // exp(t - coff_c) below.
        exp_of_offsets(eoff.data(), t, T(1), mt, rscale.data());
        exp_of_offsets(coff.data(), t, T(-1), nt, cscale.data());
        for (int64_t r = 0; r < mt; ++r) {
          const T* Lr = L + r * kTileN;
          const V voff(eoff[r]), vscale(rscale[r]);
          V acc(T(0));
          int64_t c = 0;
          for (; c + V::size() <= nt; c += V::size()) {
            const V e = (V::loadu(Lr + c) - voff).exp_u20();
            acc = acc + e;
            at::vec::fmadd(e, vscale, V::loadu(tsum.data() + c)).store(tsum.data() + c);
          }
          T s = horizontal_sum(acc);
          for (; c < nt; ++c) {
            const T e = std::exp(Lr[c] - eoff[r]);
            s += e;
            tsum[c] += e * rscale[r];
          }
          rsum[r] += eoff[r] == roff[r] ? double(s) : double(s) * std::exp(double(eoff[r]) - double(roff[r]));
        }
        for (int64_t c = 0; c < nt; ++c) csum[j0 + c] += double(tsum[c]) * double(cscale[c]);
      } else {
        // Pass 2 with two exponentials per logit, one against each offset; vectors negligible
        // against both are skipped.
        for (int64_t r = 0; r < mt; ++r) {
          const T* Lr = L + r * kTileN;
          const V voff(roff[r]);
          V acc(T(0));
          int64_t c = 0;
          for (; c + V::size() <= nt; c += V::size()) {
            const V l = V::loadu(Lr + c);
            const V a = l - voff, b = l - V::loadu(coff.data() + c);
            if (all_negligible(a, b)) continue;
            acc = acc + a.exp_u20();
            (V::loadu(tsum.data() + c) + b.exp_u20()).store(tsum.data() + c);
          }
          T s = horizontal_sum(acc);
          for (; c < nt; ++c) {
            s += std::exp(Lr[c] - roff[r]);
            tsum[c] += std::exp(Lr[c] - coff[c]);
          }
          rsum[r] += double(s);
        }
        for (int64_t c = 0; c < nt; ++c) csum[j0 + c] += double(tsum[c]);
      }
    }
    for (int64_t r = 0; r < mt; ++r)
      row_lse[i0 + r] = rsum[r] > 0 ? T(double(rmax[r]) + std::log(rsum[r])) : neg_inf<T>();
  }
}

template <typename T>
struct Prepared {
  at::Tensor x, y, yt, xa, ya;
  Operands<T> op;
};

template <typename T>
Prepared<T> prepare(const at::Tensor& x_in, const at::Tensor& y_in, Similarity sim, double s) {
  Prepared<T> p;
  p.x = x_in.contiguous();
  p.y = y_in.contiguous();
  const int64_t M = p.x.size(0), N = p.y.size(0), D = p.x.size(1);
  const bool streamed = sim == Similarity::L1 || D <= kSmallD;
  // O((M + N) D) set-up in plain loops on the calling thread (ATen's copy and sum would each
  // open an OpenMP region).
  if (streamed) {
    p.yt = at::empty({D, N}, p.y.options());
    const T* y = p.y.template data_ptr<T>();
    T* yt = p.yt.template data_ptr<T>();
    for (int64_t j = 0; j < N; ++j)
      for (int64_t k = 0; k < D; ++k) yt[k * N + j] = y[j * D + k];
  }
  if (sim == Similarity::Euclidean && !streamed) {
    // [a_i, -|a_i|^2 / 2, 1] (norm_last false) or [a_i, 1, -|a_i|^2 / 2] (norm_last true).
    auto augmented = [D](const at::Tensor& a, bool norm_last) {
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
    };
    p.xa = augmented(p.x, false);
    p.ya = augmented(p.y, true);
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

template <typename T>
void backward_rows(const Operands<T>& op, bool mask_diag, const T* gr, const T* gc, const T* rlse,
                   const T* clse, int64_t r0, int64_t r1, int64_t tm, T* dx, T* dy_acc,
                   double* colsum_g, double* dscale_acc) {
  using V = Vectorized<T>;
  const int64_t N = op.N, D = op.D;
  const T s = op.s;
  const bool euclid = op.sim == Similarity::Euclidean;
  // dx == nullptr / dy_acc == nullptr: that gradient is not requested and its work is skipped
  // (colsum_g, the euclidean column correction of dY, is then null too).
  const bool col_sums = colsum_g != nullptr;
  std::vector<T> Lbuf(tm * kTileN), Gbuf(tm * kTileN), gc_off(kTileN), gcol(kTileN), w(kTileN);
  std::vector<T> roff(tm), eoff(tm), rscale(tm), ascale(tm);
  std::vector<double> rowsum_g(tm);
  double dscale = 0;
  for (int64_t i0 = r0; i0 < r1; i0 += tm) {
    const int64_t mt = std::min(tm, r1 - i0);
    std::fill(rowsum_g.begin(), rowsum_g.end(), 0.0);
    for (int64_t r = 0; r < mt; ++r) roff[r] = exp_offset(rlse[i0 + r]);
    for (int64_t j0 = 0; j0 < N; j0 += kTileN) {
      const int64_t nt = std::min(kTileN, N - j0);
      T* L = Lbuf.data();
      T* G = Gbuf.data();
      logit_tile(op, i0, mt, j0, nt, L, kTileN);
      // With P = exp(L - roff_r) (row softmax) and Q = exp(L - coff_c) (column softmax),
      // G = gr_r P + gc_c Q. Where the tile's offsets allow (shared_exp_offsets), with
      // e = exp(L - eoff_r): P = e exp(eoff_r - roff_r) and Q = e exp(eoff_r - t) exp(t - coff_c),
      // so G = e (ascale_r + rscale_r w_c), ascale_r = gr_r exp(eoff_r - roff_r),
      // rscale_r = exp(eoff_r - t), w_c = gc_c exp(t - coff_c): one exponential per logit
      // instead of two.
      bool shared = false;
      if (gc) {
        T lowest = std::numeric_limits<T>::infinity();
        for (int64_t c = 0; c < nt; ++c) {
          gc_off[c] = exp_offset(clse[j0 + c]);
          lowest = std::min(lowest, gc_off[c]);
        }
        T t;
        shared = shared_exp_offsets(roff.data(), mt, lowest, eoff.data(), &t);
        if (shared) {
          exp_of_offsets(eoff.data(), t, T(1), mt, rscale.data());
          for (int64_t r = 0; r < mt; ++r)
            ascale[r] = gr ? T(double(gr[i0 + r]) * std::exp(double(eoff[r]) - double(roff[r]))) : T(0);
          exp_of_offsets(gc_off.data(), t, T(-1), nt, w.data());
          for (int64_t c = 0; c < nt; ++c) w[c] *= gc[j0 + c];
        }
      }
      if (col_sums) std::fill(gcol.begin(), gcol.begin() + nt, T(0));
      for (int64_t r = 0; r < mt; ++r) {
        const T* Lr = L + r * kTileN;
        T* Gr = G + r * kTileN;
        const T a = gr ? gr[i0 + r] : T(0);
        const int64_t cd = mask_diag ? i0 + r - j0 : -1;  // masked column of this row, if in tile
        const V va(a), voff(roff[r]), vrs(rscale[r]), vsoff(eoff[r]), vsa(ascale[r]);
        // One pass: G_rc, and the running sums of G_rc * L_rc (dscale) and G_rc (euclidean).
        V acc_gl(T(0)), acc_g(T(0));
        auto consume = [&](V g, const V& l, int64_t c) {
          g.store(Gr + c);
          if (cd >= c && cd < c + V::size()) {  // zero the masked diagonal entry
            Gr[cd] = T(0);
            g = V::loadu(Gr + c);
          }
          acc_gl = at::vec::fmadd(g, l, acc_gl);
          acc_g = acc_g + g;
          if (col_sums) (V::loadu(gcol.data() + c) + g).store(gcol.data() + c);
        };
        int64_t c = 0;
        if (shared) {
          for (; c + V::size() <= nt; c += V::size()) {
            const V l = V::loadu(Lr + c);
            consume((l - vsoff).exp_u20() * at::vec::fmadd(vrs, V::loadu(w.data() + c), vsa), l, c);
          }
        } else {
          const V vninf(neg_inf<T>());
          for (; c + V::size() <= nt; c += V::size()) {
            const V l = V::loadu(Lr + c);
            const V a = gr ? l - voff : vninf, b = gc ? l - V::loadu(gc_off.data() + c) : vninf;
            if (all_negligible(a, b)) {
              consume(V(T(0)), l, c);
              continue;
            }
            V g = gr ? va * a.exp_u20() : V(T(0));
            if (gc) g = g + V::loadu(gc + j0 + c) * b.exp_u20();
            consume(g, l, c);
          }
        }
        T gl = horizontal_sum(acc_gl), gsum = horizontal_sum(acc_g);
        for (; c < nt; ++c) {
          T g;
          if (shared) {
            g = std::exp(Lr[c] - eoff[r]) * (ascale[r] + rscale[r] * w[c]);
          } else {
            g = gr ? a * std::exp(Lr[c] - roff[r]) : T(0);
            if (gc) g += gc[j0 + c] * std::exp(Lr[c] - gc_off[c]);
          }
          if (c == cd) g = T(0);
          Gr[c] = g;
          gl += g * Lr[c];
          gsum += g;
          if (col_sums) gcol[c] += g;
        }
        dscale += double(gl);  // sum G_ij L_ij; divided by s at the end
        if (euclid) rowsum_g[r] += double(gsum);
      }
      if (col_sums)
        for (int64_t c = 0; c < nt; ++c) colsum_g[j0 + c] += double(gcol[c]);
      if (dx == nullptr && dy_acc == nullptr) continue;  // dscale only
      if (op.streamed) {
        // dy_acc is D x N.  l1: d sim/d x_ik = -sign(x_ik - y_jk) = -d sim/d y_jk.
        // dot/euclidean: dx_ik += alpha sum_j G_ij y_jk ; dy_jk += alpha sum_i G_ij x_ik.
        // Each sum runs in one register accumulator: dX over the tile's columns (rows of G, in
        // L1), dY over its rows (a column strip of G, 8 KB), so no partial is re-read per k.
        const bool l1 = op.sim == Similarity::L1;
        const T alpha = l1 ? s : (euclid ? T(2) * s : s);
        const V zero(T(0));
        auto sign = [&](const V& v) { return v.gt(zero) - v.lt(zero); };
        if (dx) {
          for (int64_t r = 0; r < mt; ++r) {
            const T* Gr = G + r * kTileN;
            const T* xr = op.x + (i0 + r) * D;
            T* dxr = dx + (i0 + r) * D;
            for (int64_t k = 0; k < D; ++k) {
              const V vx(xr[k]);
              const T* ytk = op.yt + k * N + j0;
              // Two accumulators: consecutive FMAs do not wait on each other's latency.
              V acc0(T(0)), acc1(T(0));
              auto term = [&](int64_t c) {
                const V yv = V::loadu(ytk + c);
                return l1 ? sign(vx - yv) : yv;
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
        if (dy_acc) {
          const T* xt = op.x + i0 * D;  // the tile's rows of X, row-major (mt x D)
          int64_t c = 0;
          if (!l1) {
            // dot/euclidean: dY^T[k, c] += alpha sum_r G[r, c] x[r, k], blocked over 2 column
            // vectors x up to 4 features: each G vector is loaded once per row for all of them.
            for (; c + 2 * V::size() <= nt; c += 2 * V::size())
              for (int64_t k0 = 0; k0 < D; k0 += 4)
                dy_block_dispatch(std::min<int64_t>(4, D - k0), G + c, kTileN, xt + k0, D, mt, alpha,
                                  dy_acc + k0 * N + j0 + c, N);
          }
          for (; c + V::size() <= nt; c += V::size()) {
            for (int64_t k = 0; k < D; ++k) {
              T* dyk = dy_acc + k * N + j0 + c;
              const V yv = V::loadu(op.yt + k * N + j0 + c);
              // Four accumulators over the rows: independent FMA chains.
              auto term = [&](int64_t r) {
                const V xv(xt[r * D + k]);
                return l1 ? sign(xv - yv) : xv;
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
              T acc = 0;
              for (int64_t r = 0; r < mt; ++r) {
                const T xk = xt[r * D + k];
                acc += G[r * kTileN + c] * (l1 ? T((xk - yk > 0) - (xk - yk < 0)) : xk);
              }
              dy_acc[k * N + j0 + c] += alpha * acc;
            }
          }
        }
      } else {
        // dX_I += alpha G Y_J ; dY_J += alpha G^T X_I   (alpha = s for dot, 2s for euclidean)
        const T alpha = euclid ? T(2) * s : s;
        if (dx) gemm(false, false, D, mt, nt, alpha, op.y + j0 * D, D, G, kTileN, T(1), dx + i0 * D, D);
        if (dy_acc)
          gemm(false, true, D, nt, mt, alpha, op.x + i0 * D, D, G, kTileN, T(1), dy_acc + j0 * D, D);
      }
    }
    if (euclid && dx) {
      // the -2 s (sum_j G_ij) x_i part of d/dx_i of -||x_i - y_j||^2
      for (int64_t r = 0; r < mt; ++r) {
        const T f = T(-2.0 * double(s) * rowsum_g[r]);
        const T* xr = op.x + (i0 + r) * D;
        T* dxr = dx + (i0 + r) * D;
        for (int64_t k = 0; k < D; ++k) dxr[k] += f * xr[k];
      }
    }
  }
  *dscale_acc = dscale;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> lse_fwd_cpu(const at::Tensor& x, const at::Tensor& y,
                                               const at::Tensor& scale,
                                               const std::string& similarity, bool mask_diag,
                                               bool compute_col) {
  Similarity sim;
  TORCH_CHECK(parse_similarity(similarity.c_str(), &sim), "unknown similarity '", similarity, "'");
  const double s = scale.item<double>();
  TORCH_CHECK(std::isfinite(s) && s > 0, "scale (1/temperature or logit_scale) must be positive and finite, got ", s);
  const int64_t M = x.size(0), N = y.size(0);
  auto row_lse = at::empty({M}, x.options());
  auto col_lse = at::empty({compute_col ? N : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lse_fwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    const int64_t threads = at::get_num_threads();
    const RowPartition part = partition_rows(M, threads);
    const int64_t W = part.workers;
    const int64_t ncol = compute_col ? N : 0;
    std::vector<T> cmax(W * ncol, neg_inf<T>());
    std::vector<double> csum(W * ncol, 0.0);
    T* rl = row_lse.data_ptr<T>();
    run_slots(W, threads, [&](int64_t p) {
      SequentialBlasScope sequential_blas;
      FlushDenormalsScope flush_denormals;
      forward_rows(prep.op, mask_diag, compute_col, part.begin(p, M), part.begin(p + 1, M),
                   part.tile_m, rl, cmax.data() + p * ncol, csum.data() + p * ncol);
    });
    if (compute_col) {
      T* cl = col_lse.data_ptr<T>();
      run_ranges(N, 2048, threads, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) {
          T m = neg_inf<T>();
          for (int64_t p = 0; p < W; ++p) m = std::max(m, cmax[p * N + j]);
          const double off = exp_offset(m);
          double tot = 0;
          for (int64_t p = 0; p < W; ++p) tot += csum[p * N + j] * std::exp(double(cmax[p * N + j]) - off);
          cl[j] = tot > 0 ? T(off + std::log(tot)) : neg_inf<T>();
        }
      });
    }
  });
  return {row_lse, col_lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cpu(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, const std::string& similarity, bool mask_diag,
    std::array<bool, 3> output_mask) {
  Similarity sim;
  TORCH_CHECK(parse_similarity(similarity.c_str(), &sim), "unknown similarity '", similarity, "'");
  const double s = scale.item<double>();
  TORCH_CHECK(std::isfinite(s) && s > 0, "scale must be positive and finite, got ", s);
  const int64_t M = x.size(0), N = y.size(0), D = x.size(1);
  const bool use_col = grad_col.numel() > 0;
  const bool need_dx = output_mask[0], need_dy = output_mask[1];
  // Zeroed inside the slots (dX rows by their owner, dY and the partials by the slot that
  // accumulates into them), not by at::zeros: no OpenMP region anywhere in the op.
  auto dx = need_dx ? at::empty({M, D}, x.options()) : x.new_empty({0});
  auto dy = need_dy ? at::empty({N, D}, y.options()) : y.new_empty({0});
  double dscale_total = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lse_bwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    auto gr = grad_row.contiguous();
    auto gc = use_col ? grad_col.contiguous() : at::Tensor();
    auto rl = row_lse.contiguous();
    auto cl = use_col ? col_lse.contiguous() : at::Tensor();
    const bool euclid = sim == Similarity::Euclidean;
    // Worker 0 accumulates straight into dy (BLAS path); every other worker, and every streamed
    // worker (whose accumulator is D x N), owns a zeroed partial.
    // Without a requested dY there are no partials and no cap on the workers.
    const int64_t partial_bytes = need_dy ? N * D * int64_t(sizeof(T)) : 0;
    const int64_t threads = at::get_num_threads();
    const int64_t budget_workers =
        need_dy ? 1 + kPartialBudgetBytes / std::max<int64_t>(1, partial_bytes) : threads;
    const RowPartition part = partition_rows(M, std::min(threads, budget_workers));
    const int64_t W = part.workers;
    const bool streamed = prep.op.streamed;
    const int64_t own = streamed ? 0 : 1;
    std::vector<at::Tensor> partials;
    if (need_dy)
      for (int64_t p = own; p < W; ++p) partials.push_back(at::empty({N * D}, x.options()));
    auto dy_ptr = [&](int64_t p) -> T* {
      if (!need_dy) return nullptr;
      return p < own ? dy.data_ptr<T>() : partials[p - own].data_ptr<T>();
    };
    const bool col_sums = euclid && need_dy;
    std::vector<double> colsum(col_sums ? W * N : 0, 0.0), dscale(W, 0.0);
    T* dxp = need_dx ? dx.data_ptr<T>() : nullptr;
    run_slots(W, threads, [&](int64_t p) {
      SequentialBlasScope sequential_blas;
      FlushDenormalsScope flush_denormals;
      const int64_t r0 = part.begin(p, M), r1 = part.begin(p + 1, M);
      if (dxp) std::fill(dxp + r0 * D, dxp + r1 * D, T(0));
      if (T* acc = dy_ptr(p)) std::fill(acc, acc + N * D, T(0));
      backward_rows(prep.op, mask_diag, gr.data_ptr<T>(), use_col ? gc.data_ptr<T>() : nullptr,
                    rl.data_ptr<T>(), use_col ? cl.data_ptr<T>() : nullptr, r0, r1, part.tile_m,
                    dxp, dy_ptr(p),
                    col_sums ? colsum.data() + p * N : nullptr, &dscale[p]);
    });
    for (int64_t p = 0; p < W; ++p) dscale_total += dscale[p];
    if (!need_dy) return;
    T* dyp = dy.data_ptr<T>();
    const T* yp = prep.op.y;
    const bool dy_accumulated = own == 1 && W >= 1;  // slot 0 zeroed dy and accumulated into it
    run_ranges(N, 256, threads, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        T* dyj = dyp + j * D;
        if (!dy_accumulated) std::fill(dyj, dyj + D, T(0));
        for (int64_t p = own; p < W; ++p) {
          const T* src = partials[p - own].data_ptr<T>();
          if (streamed) {
            for (int64_t k = 0; k < D; ++k) dyj[k] += src[k * N + j];
          } else {
            for (int64_t k = 0; k < D; ++k) dyj[k] += src[j * D + k];
          }
        }
        if (euclid) {
          double cs = 0;
          for (int64_t p = 0; p < W; ++p) cs += colsum[p * N + j];
          const T f = T(-2.0 * s * cs);
          for (int64_t k = 0; k < D; ++k) dyj[k] += f * yp[j * D + k];
        }
      }
    });
  });
  auto dscale = output_mask[2] ? at::full(scale.sizes(), dscale_total / s, scale.options())
                               : scale.new_empty({0});
  return {dx, dy, dscale};
}

}  // namespace mmcl_fast
