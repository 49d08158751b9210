// The CPU kernels of the tile engine, compiled once per ISA level: each of
// csrc/cpu/isa/kernels_{default,avx2,avx512}.cpp includes this file after isa_target.h, and
// csrc/cpu/pairwise_lse_cpu.cpp / pairwise_softplus_cpu.cpp call the copy the running CPU supports.
//
// With X in R^{M x D}, Y in R^{N x D}, scale s > 0 and logits L_ij = s * sim(x_i, y_j), two
// reductions of the same tiles (never an M x N matrix):
// * the log-sum-exp (the softmax losses):
//   forward:   row_lse_i = log sum_j exp(L_ij),   col_lse_j = log sum_i exp(L_ij)
//              (entries j == i are excluded when mask_diag is set)
//   backward:  given upstream gradients gr (of row_lse) and gc (of col_lse),
//              G_ij   = gr_i exp(L_ij - row_lse_i) + gc_j exp(L_ij - col_lse_j)   (= dloss/dL_ij)
//   and its label-aware form (positives: row_ids_i == col_ids_j): the LSEs over each row's and
//   column's negatives and positives and the sums of the positive logits (label_reduction.h)
// * the softplus sum (the sigmoid loss), with a bias t:
//   forward:   row_i = sum_j softplus(L_ij + t)   (j == i excluded when mask_diag is set)
//   backward:  G_ij  = gr_i sigmoid(L_ij + t),   dbias = sum_ij G_ij
//   fused:     the forward and the gradients of sum_i row_i in one pass (gr = 1: the loss's
//              mean or sum gives every row the same upstream gradient, applied afterwards)
// and for both
//              dscale = sum_ij G_ij sim_ij
//              dx_i   = s sum_j G_ij d sim_ij / d x_i,   dy_j = s sum_i G_ij d sim_ij / d y_j
//
// The engine's pieces, beside this file:
//   tile_operands.h        the operands, tile sizes and the split of the rows over worker slots
//   logit_tile.h           the tile producer (BLAS or streamed loops)
//   tile_loop.h            the one loop over a slot's tiles that every reduction plugs into
//   lse_reduction.h        the online row/column LSE of each tile, and the merge of the partials
//   lse_gradient_tile.h    G of a tile from the logits and the LSEs
//   label_reduction.h      the label-aware LSE: positives by equal ids, taken out of the tile by a
//                          mask of the LSE forward, their gradient written beside the LSE's
//   softplus_reduction.h   the softplus row sums and their gradient tile
//   gradient_scratch.h     the backward's per-slot tiles and sums
//   gradient_apply.h       dX, dY (and the euclidean norm terms) from G
//   vec_exp.h              the exponential arithmetic the LSE directions share
// and the runtime in csrc/cpu/runtime/: the worker pool whose slots run everything here (never an
// OpenMP region), sequential BLAS per slot, flush-to-zero per slot.
//
// The kernels below drive them: each of W worker slots owns a contiguous chunk of rows and streams
// over its (tile_m x kTileN) tiles. Forward: the slot owns its rows' LSE and private column partials,
// merged in slot order (deterministic for a fixed thread count). Backward: the tiles are
// recomputed; dX rows are owned, dY is accumulated per slot and summed in slot order. Extra memory
// is O(W * (N + tile_m * tile_n)) in the forward and O(W * N * D) (capped) in the backward, plus
// (M + N)(D + 2) for euclidean's augmented operands: never O(M * N).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <vector>

#include "../../similarity.h"
#include "../isa/cpu_isa.h"
#include "../runtime/blas.h"
#include "../runtime/flush_denormals.h"
#include "../runtime/worker_pool.h"
#include "gradient_apply.h"
#include "gradient_scratch.h"
#include "label_reduction.h"
#include "lse_gradient_tile.h"
#include "lse_reduction.h"
#include "softplus_reduction.h"
#include "tile_loop.h"
#include "tile_operands.h"
#include "vec_exp.h"

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {
namespace {

// The backward's dY partials (every slot but slot 0 on the BLAS path, every slot on the streamed
// path) cover one panel of columns at a time. The panel is as wide as a budget for all of them
// allows: 1/16 of an N x N float32 matrix, and at least 2 MiB (and one column tile), so that the
// scratch stays a fraction of the logits the loss never stores. Each panel costs one more wake-up
// of the worker slots (and one of the reduction), which a busy neighbour makes expensive; the
// budget keeps the panels few: one at N = 16384, D <= 1024 with two threads.
constexpr int64_t kMinPanelBudgetBytes = int64_t(2) << 20;

inline int64_t panel_budget_bytes(int64_t N) {
  return std::max(kMinPanelBudgetBytes, N * N * int64_t(sizeof(float)) / 16);
}

// One worker slot's backward over rows [r0, r1) and the panel's columns [c0, c1) under a gradient
// policy (LseGradientPolicy, SoftplusGradientPolicy): its dX rows (dx null: not requested), its
// dY accumulator (null: not requested), the column sums of G (euclidean dY; null otherwise) and
// the policy's sums.
template <typename T, typename Policy>
void backward_rows(const Operands<T>& op, const Policy& policy, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                   int64_t tm, T* dx, const DyAccumulator<T>* dy, double* colsum_g, BackwardSums* sums) {
  const bool euclid = op.sim == Similarity::Euclidean;
  GradientScratch<T> scratch(tm);
  auto begin_rows = [&](int64_t i0, int64_t mt) {
    std::fill(scratch.rowsum_g.begin(), scratch.rowsum_g.end(), 0.0);
    policy.begin_rows(i0, mt, scratch);
  };
  auto tile = [&](int64_t i0, int64_t mt, int64_t j0, int64_t nt, T*) {
    policy.tile(i0, mt, j0, nt, scratch, euclid, colsum_g, sums);
    if (dx == nullptr && dy == nullptr) return;  // scalar gradients only
    apply_gradient_tile(op, scratch.G.data(), i0, mt, j0, nt, dx, dy);
  };
  auto end_rows = [&](int64_t i0, int64_t mt) {  // the panel's share of the norm term (it is linear)
    if (euclid && dx) euclidean_row_term(op, scratch.rowsum_g.data(), i0, mt, dx);
  };
  for_each_logit_tile(op, r0, r1, c0, c1, tm, scratch.L.data(), begin_rows, tile, end_rows);
}

// The backward of either reduction under its gradient policy (shared, read-only, by the slots):
// fills dX [M, D] and dY [N, D] when requested, returns the slots' sums added in slot order.
// The columns are taken a panel at a time: the slots run over their rows against the panel, then
// the panel's dY partials are summed in slot order. Every dX row and dY row therefore adds the
// same terms in the same order as without panels, and the result is deterministic for a fixed
// thread count.
template <typename T, typename Policy>
BackwardSums run_backward(const Prepared<T>& prep, const Policy& policy, bool need_dx, bool need_dy,
                          at::Tensor& dx, at::Tensor& dy) {
  const int64_t M = prep.op.M, N = prep.op.N, D = prep.op.D;
  const bool euclid = prep.op.sim == Similarity::Euclidean;
  const int64_t threads = at::get_num_threads();
  const RowPartition part = partition_rows(M, threads);
  const int64_t W = part.workers;
  const bool streamed = prep.op.streamed;
  // Slot 0 accumulates straight into dy on the BLAS path; every other slot, and every streamed
  // slot (whose accumulator is dY^T), owns a panel-sized partial.
  const int64_t own = streamed ? 0 : 1;
  const int64_t n_partials = need_dy ? std::max<int64_t>(0, W - own) : 0;
  int64_t panel = std::max<int64_t>(N, 1);
  if (n_partials > 0) {
    const int64_t fit = panel_budget_bytes(N) / (n_partials * std::max<int64_t>(D, 1) * int64_t(sizeof(T)));
    panel = std::min(panel, std::max(kTileN, fit / kTileN * kTileN));
  }
  std::vector<at::Tensor> partials;
  for (int64_t p = 0; p < n_partials; ++p) partials.push_back(at::empty({std::min(panel, N) * D}, dy.options()));
  std::vector<const T*> partial_ptrs;
  for (const auto& t : partials) partial_ptrs.push_back(t.data_ptr<T>());
  const bool col_sums = euclid && need_dy;
  std::vector<double> colsum(col_sums ? W * N : 0, 0.0);
  std::vector<BackwardSums> sums(W);
  T* dxp = need_dx ? dx.data_ptr<T>() : nullptr;
  T* dyp = need_dy ? dy.data_ptr<T>() : nullptr;
  for (int64_t c0 = 0; c0 == 0 || c0 < N; c0 += panel) {
    const int64_t c1 = std::min(N, c0 + panel), width = c1 - c0;
    // dX rows are zeroed by their owner in the first panel, the panel's dY rows and the partials
    // by the slot that accumulates into them (not by at::zeros: no OpenMP region in the op).
    run_slots(W, threads, [&](int64_t p) {
      SequentialBlasScope sequential_blas;
      FlushDenormalsScope flush_denormals;
      const int64_t r0 = part.begin(p, M), r1 = part.begin(p + 1, M);
      if (dxp && c0 == 0) std::fill(dxp + r0 * D, dxp + r1 * D, T(0));
      DyAccumulator<T> acc{nullptr, c0, width};
      if (need_dy) {
        acc.base = p < own ? dyp + c0 * D : partials[p - own].data_ptr<T>();
        std::fill(acc.base, acc.base + width * D, T(0));
      }
      backward_rows(prep.op, policy, r0, r1, c0, c1, part.tile_m, dxp, need_dy ? &acc : nullptr,
                    col_sums ? colsum.data() + p * N : nullptr, &sums[p]);
    });
    if (need_dy && width > 0)
      run_ranges(width, 256, threads, [&](int64_t b, int64_t e) {
        reduce_dy_partials(partial_ptrs, streamed, own == 1 && W >= 1, euclid ? colsum.data() : nullptr, W, N, D,
                           prep.op.s, prep.op.y, c0, width, c0 + b, c0 + e, dyp);
      });
  }
  BackwardSums total;
  for (int64_t p = 0; p < W; ++p) {
    total.gl += sums[p].gl;
    total.g += sums[p].g;
  }
  return total;
}

// The LSE forward under a mask policy, for either reduction's forward (plain or label-aware): the
// slots of `part` run forward_rows with mask_for(p) (slot p's mask) and write row_lse [M]; when
// compute_col, their column partials are merged in slot order into col_lse [N].
template <typename T, typename MaskFor>
void run_forward(const Prepared<T>& prep, const RowPartition& part, const MaskFor& mask_for, bool compute_col,
                 T* row_lse, T* col_lse) {
  const int64_t M = prep.op.M, N = prep.op.N, W = part.workers, ncol = compute_col ? N : 0;
  const int64_t threads = at::get_num_threads();
  std::vector<T> cmax(W * ncol, neg_inf<T>());
  std::vector<double> csum(W * ncol, 0.0);
  run_slots(W, threads, [&](int64_t p) {
    SequentialBlasScope sequential_blas;
    FlushDenormalsScope flush_denormals;
    forward_rows(prep.op, mask_for(p), compute_col, part.begin(p, M), part.begin(p + 1, M), part.tile_m, row_lse,
                 cmax.data() + p * ncol, csum.data() + p * ncol);
  });
  if (compute_col)
    run_ranges(N, 2048, threads, [&](int64_t b, int64_t e) {
      merge_column_partials(cmax.data(), csum.data(), W, N, b, e, col_lse);
    });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> lse_fwd_kernel(const at::Tensor& x, const at::Tensor& y, double s,
                                                  Similarity sim, bool mask_diag, bool compute_col) {
  const int64_t M = x.size(0), N = y.size(0);
  auto row_lse = at::empty({M}, x.options());
  auto col_lse = at::empty({compute_col ? N : 0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lse_fwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    const DiagonalMask<T> mask{mask_diag};
    run_forward(prep, partition_rows(M, at::get_num_threads()), [&](int64_t) { return mask; }, compute_col,
                row_lse.data_ptr<T>(), compute_col ? col_lse.data_ptr<T>() : nullptr);
  });
  return {row_lse, col_lse};
}

std::tuple<at::Tensor, at::Tensor, double> lse_bwd_kernel(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, double s, const at::Tensor& row_lse, const at::Tensor& col_lse,
    Similarity sim, bool mask_diag, std::array<bool, 3> output_mask) {
  const int64_t M = x.size(0), N = y.size(0), D = x.size(1);
  const bool use_col = grad_col.numel() > 0;
  const bool need_dx = output_mask[0], need_dy = output_mask[1];
  auto dx = need_dx ? at::empty({M, D}, x.options()) : x.new_empty({0});
  auto dy = need_dy ? at::empty({N, D}, y.options()) : y.new_empty({0});
  double dscale = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lse_bwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    auto gr = grad_row.contiguous();
    auto gc = use_col ? grad_col.contiguous() : at::Tensor();
    auto rl = row_lse.contiguous();
    auto cl = use_col ? col_lse.contiguous() : at::Tensor();
    const LseGradientPolicy<T> policy{
        LseGrads<T>{gr.data_ptr<T>(), use_col ? gc.data_ptr<T>() : nullptr, rl.data_ptr<T>(),
                    use_col ? cl.data_ptr<T>() : nullptr},
        mask_diag};
    dscale = run_backward(prep, policy, need_dx, need_dy, dx, dy).gl / s;
  });
  return {dx, dy, dscale};
}

// The label-aware forward: (row_neg [M], col_neg, row_pos [M], col_pos, row_sum [M], col_sum), the
// column outputs [N] when compute_col, else [0].
std::array<at::Tensor, 6> label_lse_fwd_kernel(const at::Tensor& x, const at::Tensor& y, double s, Similarity sim,
                                               const at::Tensor& row_ids, const at::Tensor& col_ids,
                                               bool mask_diag, bool compute_col) {
  const int64_t M = x.size(0), N = y.size(0);
  const int64_t ncol = compute_col ? N : 0;
  std::array<at::Tensor, 6> out;
  for (int k = 0; k < 6; ++k) out[k] = at::empty({k % 2 == 0 ? M : ncol}, x.options());
  const auto rid = row_ids.contiguous(), cid = col_ids.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "label_lse_fwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    const int64_t threads = at::get_num_threads();
    const RowPartition part = partition_rows(M, threads);
    const int64_t W = part.workers;
    // the positives' statistics: rows owned by their slot, one column partial per slot
    std::vector<T> cpmax(W * ncol, neg_inf<T>());
    std::vector<double> cpsum(W * ncol, 0.0), cplsum(W * ncol, 0.0);
    std::vector<T> rpmax(M, neg_inf<T>());
    std::vector<double> rpsum(M, 0.0), rplsum(M, 0.0);
    const LabelData label_data(rid, cid, mask_diag);
    auto mask_for = [&](int64_t p) {
      return LabelMask<T>{label_data.labels,
                          PositiveStats<T>{rpmax.data(), rpsum.data(), rplsum.data(),
                                           compute_col ? cpmax.data() + p * ncol : nullptr,
                                           compute_col ? cpsum.data() + p * ncol : nullptr,
                                           compute_col ? cplsum.data() + p * ncol : nullptr}};
    };
    run_forward(prep, part, mask_for, compute_col, out[0].data_ptr<T>(), compute_col ? out[1].data_ptr<T>() : nullptr);
    T* row_pos = out[2].data_ptr<T>();
    T* row_sum = out[4].data_ptr<T>();
    for (int64_t i = 0; i < M; ++i) {
      row_pos[i] = rpsum[i] > 0 ? T(double(rpmax[i]) + std::log(rpsum[i])) : neg_inf<T>();
      row_sum[i] = T(rplsum[i]);
    }
    if (compute_col) {
      T* col_pos = out[3].data_ptr<T>();
      T* col_sum = out[5].data_ptr<T>();
      run_ranges(N, 2048, threads, [&](int64_t b, int64_t e) {
        merge_column_partials(cpmax.data(), cpsum.data(), W, N, b, e, col_pos);
        for (int64_t j = b; j < e; ++j) {
          double tot = 0;
          for (int64_t p = 0; p < W; ++p) tot += cplsum[p * N + j];
          col_sum[j] = T(tot);
        }
      });
    }
  });
  return out;
}

// The label-aware backward: grads = (gRN, gCN, gRP, gCP, gRS, gCS) of the forward's outputs (the
// column ones [0] when the columns have no gradient), lse = (row_neg, col_neg, row_pos, col_pos).
std::tuple<at::Tensor, at::Tensor, double> label_lse_bwd_kernel(
    const std::array<at::Tensor, 6>& grads, const at::Tensor& x, const at::Tensor& y, double s,
    Similarity sim, const at::Tensor& row_ids, const at::Tensor& col_ids,
    const std::array<at::Tensor, 4>& lse, bool mask_diag, std::array<bool, 3> output_mask) {
  const int64_t M = x.size(0), N = y.size(0), D = x.size(1);
  const bool use_col = grads[1].numel() > 0;
  const bool need_dx = output_mask[0], need_dy = output_mask[1];
  auto dx = need_dx ? at::empty({M, D}, x.options()) : x.new_empty({0});
  auto dy = need_dy ? at::empty({N, D}, y.options()) : y.new_empty({0});
  const auto rid = row_ids.contiguous(), cid = col_ids.contiguous();
  double dscale = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "label_lse_bwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    std::array<at::Tensor, 6> g;
    std::array<at::Tensor, 4> l;
    for (int k = 0; k < 6; ++k) g[k] = grads[k].contiguous();
    for (int k = 0; k < 4; ++k) l[k] = lse[k].contiguous();
    auto col = [&](const at::Tensor& t) -> const T* { return use_col ? t.data_ptr<T>() : nullptr; };
    const LabelData label_data(rid, cid, mask_diag);
    const LabelGradientPolicy<T> policy{
        LseGrads<T>{g[0].data_ptr<T>(), col(g[1]), l[0].data_ptr<T>(), col(l[1])},
        PositiveGrads<T>{g[2].data_ptr<T>(), g[4].data_ptr<T>(), l[2].data_ptr<T>(), col(g[3]), col(g[5]),
                         col(l[3])},
        label_data.labels};
    dscale = run_backward(prep, policy, need_dx, need_dy, dx, dy).gl / s;
  });
  return {dx, dy, dscale};
}

at::Tensor softplus_fwd_kernel(const at::Tensor& x, const at::Tensor& y, double s, double bias, Similarity sim,
                               bool mask_diag) {
  const int64_t M = x.size(0);
  auto row = at::empty({M}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "softplus_fwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    const int64_t threads = at::get_num_threads();
    const RowPartition part = partition_rows(M, threads);
    T* rp = row.data_ptr<T>();
    run_slots(part.workers, threads, [&](int64_t p) {
      SequentialBlasScope sequential_blas;
      FlushDenormalsScope flush_denormals;
      softplus_forward_rows(prep.op, T(bias), mask_diag, part.begin(p, M), part.begin(p + 1, M), part.tile_m, rp);
    });
  });
  return row;
}

std::tuple<at::Tensor, at::Tensor, double, double> softplus_bwd_kernel(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, double s, double bias,
    Similarity sim, bool mask_diag, std::array<bool, 2> output_mask) {
  const int64_t M = x.size(0), N = y.size(0), D = x.size(1);
  const bool need_dx = output_mask[0], need_dy = output_mask[1];
  auto dx = need_dx ? at::empty({M, D}, x.options()) : x.new_empty({0});
  auto dy = need_dy ? at::empty({N, D}, y.options()) : y.new_empty({0});
  BackwardSums sums;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "softplus_bwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    auto gr = grad_row.contiguous();
    const SoftplusGradientPolicy<T> policy{gr.data_ptr<T>(), T(bias), mask_diag ? Diagonal::Masked : Diagonal::Negative,
                                           nullptr};
    sums = run_backward(prep, policy, need_dx, need_dy, dx, dy);
  });
  return {dx, dy, sums.gl / s, sums.g};
}

// The forward and, in the same pass over the tiles, the gradients of sum_i row_i (an upstream
// gradient of 1 for every row): (row, dx or [0], dy or [0], dscale, dbias). diagonal: 0 the
// diagonal pairs are negatives, 1 left out, 2 positives (softplus(-z); Diagonal).
std::tuple<at::Tensor, at::Tensor, at::Tensor, double, double> softplus_fwd_bwd_kernel(
    const at::Tensor& x, const at::Tensor& y, double s, double bias, Similarity sim, int diagonal,
    std::array<bool, 2> output_mask) {
  const int64_t M = x.size(0), N = y.size(0), D = x.size(1);
  const bool need_dx = output_mask[0], need_dy = output_mask[1];
  auto row = at::empty({M}, x.options());
  auto dx = need_dx ? at::empty({M, D}, x.options()) : x.new_empty({0});
  auto dy = need_dy ? at::empty({N, D}, y.options()) : y.new_empty({0});
  BackwardSums sums;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "softplus_fwd_bwd_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    std::vector<double> row_acc(M, 0.0);
    const auto diag = static_cast<Diagonal>(diagonal);
    const PairLabels diagonal_positives{nullptr, nullptr, nullptr, false};  // the pairs (i, i)
    SoftplusGradientPolicy<T> policy{nullptr, T(bias), diag == Diagonal::Masked ? diag : Diagonal::Negative,
                                     row_acc.data()};
    if (diag == Diagonal::Positive) policy.labels = &diagonal_positives;
    sums = run_backward(prep, policy, need_dx, need_dy, dx, dy);
    T* rp = row.data_ptr<T>();
    for (int64_t i = 0; i < M; ++i) rp[i] = T(row_acc[i]);
  });
  return {row, dx, dy, sums.gl / s, sums.g};
}

// The label-aware sigmoid terms: row_i = sum_j softplus(-z_ij (L_ij + t)), z_ij = +1 where
// row_ids_i == col_ids_j (the pairs (i, i) without ids), -1 elsewhere; with their gradients for
// the upstream gradient grad_row, or (grad_row undefined) for 1 per row in the same pass as the
// forward. Returns (row or [0], dx or [0], dy or [0], dscale, dbias).
std::tuple<at::Tensor, at::Tensor, at::Tensor, double, double> label_softplus_kernel(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, double s, double bias, Similarity sim,
    const at::Tensor& row_ids, const at::Tensor& col_ids, std::array<bool, 2> output_mask) {
  const int64_t M = x.size(0), N = y.size(0), D = x.size(1);
  const bool need_dx = output_mask[0], need_dy = output_mask[1], forward = !grad_row.defined();
  auto row = forward ? at::empty({M}, x.options()) : x.new_empty({0});
  auto dx = need_dx ? at::empty({M, D}, x.options()) : x.new_empty({0});
  auto dy = need_dy ? at::empty({N, D}, y.options()) : y.new_empty({0});
  const auto rid = row_ids.contiguous(), cid = col_ids.contiguous();
  BackwardSums sums;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "label_softplus_cpu", [&] {
    using T = scalar_t;
    auto prep = prepare<T>(x, y, sim, s);
    const LabelData label_data(rid, cid, false);
    std::vector<double> row_acc(forward ? M : 0, 0.0);
    const at::Tensor gr = forward ? grad_row : grad_row.contiguous();
    SoftplusGradientPolicy<T> policy{forward ? nullptr : gr.data_ptr<T>(), T(bias), Diagonal::Negative,
                                     forward ? row_acc.data() : nullptr};
    policy.labels = &label_data.labels;
    sums = run_backward(prep, policy, need_dx, need_dy, dx, dy);
    if (forward) {
      T* rp = row.data_ptr<T>();
      for (int64_t i = 0; i < M; ++i) rp[i] = T(row_acc[i]);
    }
  });
  return {row, dx, dy, sums.gl / s, sums.g};
}

// Exponentials per second of a tight at::vec exp_u20 loop (the exp the kernels evaluate) on every
// ATen thread over an L1-resident buffer, for `seconds`: the exp limit that the benchmarks compare
// the fused kernel with. Each repetition shifts the argument, as the kernel's exp(L - offset)
// does, so the exps cannot be hoisted out of the loop.
inline double vec_exp_rate(double seconds) {
  using V = Vectorized<float>;
  constexpr int64_t kLen = 1024, kReps = 64;
  const int64_t threads = at::get_num_threads();
  std::vector<double> rates(threads, 0.0);
  std::vector<float> sink(threads, 0.f);
  at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      alignas(64) float buf[kLen];
      for (int64_t i = 0; i < kLen; ++i) buf[i] = -float(i) / float(kLen);
      V acc(0.f);
      int64_t count = 0, round = 0;
      const auto start = std::chrono::steady_clock::now();
      double elapsed = 0;
      do {
        for (int64_t rep = 0; rep < kReps; ++rep, ++round) {
          const V offset(float(round & 1023) * 1e-3f);
          for (int64_t i = 0; i < kLen; i += V::size()) acc = acc + (V::loadu(buf + i) - offset).exp_u20();
        }
        count += kReps * kLen;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      } while (elapsed < seconds);
      float lanes[V::size()];
      acc.store(lanes);
      sink[t] = lanes[0];
      rates[t] = double(count) / elapsed;
    }
  });
  double total = 0;
  for (int64_t t = 0; t < threads; ++t) total += rates[t] + 0.0 * sink[t];
  return total;
}

// This ISA's entry in the dispatch table (csrc/cpu/isa/cpu_isa.h).
inline constexpr CpuKernels kCpuKernels{MMCL_FAST_ISA_NAME,     &lse_fwd_kernel,          &lse_bwd_kernel,
                                        &label_lse_fwd_kernel,  &label_lse_bwd_kernel,    &softplus_fwd_kernel,
                                        &softplus_bwd_kernel,   &softplus_fwd_bwd_kernel, &label_softplus_kernel,
                                        &vec_exp_rate};

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
