// Operator schema and per-device dispatch of mmcl_fast's operators: the pairwise log-sum-exp pair,
// the pairwise softplus pair and the CPU operands pair.
//
//   lse_fwd(x[M,D], y[N,D], scale[], similarity, mask_diag, compute_col, checks, deterministic,
//           math_path)
//       -> (row_lse[M], col_lse[N] (or [0] when !compute_col))
//       row_lse_i = log sum_j exp(s sim(x_i, y_j)),  col_lse_j = log sum_i exp(s sim(x_i, y_j)),
//       j == i left out of both sums when mask_diag.
//   lse_bwd(grad_row[M], grad_col[N] or [0], x, y, scale, row_lse, col_lse, similarity, mask_diag,
//           output_mask[3], checks, math_path) -> (dx[M,D], dy[N,D], dscale like scale)
//       An output whose output_mask entry is false is returned empty (shape [0]) and its kernel
//       work is skipped (a frozen tower costs no dY pass).
//   checks, deterministic, math_path: the kernel options (op_schema.h); the CPU kernels always
//       run their checks and are deterministic for a fixed thread count, so they ignore them.
//   label_lse_fwd(x, y, scale, row_ids[M], col_ids[N], similarity, mask_diag, compute_col, checks,
//                 deterministic, math_path) -> (row_neg, col_neg, row_pos, col_pos, row_sum, col_sum)
//   label_lse_bwd(grads[6], x, y, scale, row_ids, col_ids, lse[4], similarity, mask_diag,
//                 output_mask[3], checks, math_path) -> (dx, dy, dscale)
//       the label-aware LSE (positives: equal ids), formulas in cpu/tile_engine/label_reduction.h
//       and cuda/pairwise_lse.cuh
//   softplus_fwd(x[M,D], y[N,D], scale[], bias[], similarity, mask_diag, checks, math_path) -> row[M]
//       row_i = sum_j softplus(s sim(x_i, y_j) + t), t = bias, j == i left out when mask_diag:
//       the negatives' terms of the sigmoid loss (its positives are added outside, sigmoid_loss.py)
//   softplus_bwd(grad_row[M], x, y, scale, bias, similarity, mask_diag, output_mask[4], checks,
//                math_path)
//       -> (dx, dy, dscale, dbias), G_ij = grad_row_i sigmoid(s sim_ij + t); masked outputs empty
//   label_softplus_fwd(x, y, scale, bias, row_ids, col_ids, similarity, checks, math_path) -> row[M]
//   label_softplus_bwd(grad_row, x, y, scale, bias, row_ids, col_ids, similarity, output_mask[4], checks,
//                      math_path) -> (dx, dy, dscale, dbias)
//   label_softplus_total(x, y, scale, bias, row_ids, col_ids, similarity, output_mask[4], checks,
//                        math_path) -> (total[], dx, dy, dscale, dbias)
//       the label-aware sigmoid terms sum_j softplus(-z_ij (L_ij + t)), z = +1 for equal ids, and
//       their total with its gradients (one pass on CPU, as softplus_total)
//   softplus_total(x, y, scale, bias, similarity, diagonal, output_mask[4], checks, math_path)
//       -> (total[], dx, dy, dscale, dbias): total = sum over the negatives of softplus(L + t), plus
//       softplus(-(L_ii + t)) over the diagonal when diagonal == "positive" ("masked": left out,
//       "negative": a negative), with its gradients (one pass over the tiles on CPU; forward then
//       backward on CUDA); outputs not in output_mask empty
//   operands_fwd(a[M,D], b[N,D], similarity) -> (ka, kb, pos[M], norm_a, norm_b)   (CPU, M <= N)
//   operands_bwd(grad_ka, grad_kb, grad_pos, ka, kb, norm_a, norm_b, similarity, output_mask[2])
//       -> (da, db): the cosine normalisation and the positive-pair similarities of the losses,
//       formulas in cpu/operands_cpu.cpp.
//
// The Python layer (mmcl_fast/_ops.py) registers fake kernels and autograd for these ops.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <array>

#include "cpu/operands_cpu.h"
#include "cpu/pairwise_lse_cpu.h"
#include "cpu/pairwise_softplus_cpu.h"
#include "op_checks.h"
#include "op_schema.h"

#ifdef MMCL_FAST_WITH_CUDA
#include "cuda_launch.h"
#endif

namespace mmcl_fast {
namespace {

std::tuple<at::Tensor, at::Tensor> lse_fwd_cpu_checked(const at::Tensor& x, const at::Tensor& y,
                                                       const at::Tensor& scale,
                                                       c10::string_view similarity, bool mask_diag,
                                                       bool compute_col, bool /*checks*/,
                                                       bool /*deterministic*/,
                                                       c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("lse_fwd", x, y, scale, sim);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "lse_fwd: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  check_finite("lse_fwd", "x", x);
  check_finite("lse_fwd", "y", y);
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return lse_fwd_cpu(xc, yc, scale, sim, mask_diag, compute_col);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cpu_checked(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, c10::string_view similarity, bool mask_diag,
    std::array<bool, 3> output_mask, bool /*checks*/, c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("lse_bwd", x, y, scale, sim);
  check_bwd(grad_row, grad_col, x, y, row_lse, col_lse, x.scalar_type());
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return lse_bwd_cpu(grad_row, grad_col.numel() ? grad_col.to(x.scalar_type()) : grad_col, xc, yc,
                     scale, row_lse, col_lse, sim, mask_diag, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_lse_fwd_cpu_checked(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_ids,
    const at::Tensor& col_ids, c10::string_view similarity, bool mask_diag, bool compute_col, bool /*checks*/,
    bool /*deterministic*/, c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("label_lse_fwd", x, y, scale, sim);
  check_labels("label_lse_fwd", row_ids, col_ids, x, y, mask_diag);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "label_lse_fwd: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  check_finite("label_lse_fwd", "x", x);
  check_finite("label_lse_fwd", "y", y);
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  auto o = label_lse_fwd_cpu(xc, yc, scale, row_ids, col_ids, sim, mask_diag, compute_col);
  return {o[0], o[1], o[2], o[3], o[4], o[5]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> label_lse_bwd_cpu_checked(
    at::TensorList grads, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& row_ids, const at::Tensor& col_ids, at::TensorList lse, c10::string_view similarity,
    bool mask_diag, std::array<bool, 3> output_mask, bool /*checks*/, c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("label_lse_bwd", x, y, scale, sim);
  check_labels("label_lse_bwd", row_ids, col_ids, x, y, mask_diag);
  check_label_bwd("label_lse_bwd", grads, lse, x, y, x.scalar_type());
  std::array<at::Tensor, 6> g;
  std::array<at::Tensor, 4> l;
  std::copy(grads.begin(), grads.end(), g.begin());
  std::copy(lse.begin(), lse.end(), l.begin());
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return label_lse_bwd_cpu(g, xc, yc, scale, row_ids, col_ids, l, sim, mask_diag, output_mask);
}

at::Tensor softplus_fwd_cpu_checked(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                    const at::Tensor& bias, c10::string_view similarity,
                                    bool mask_diag, bool /*checks*/, c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("softplus_fwd", x, y, scale, sim);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "softplus_fwd: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  check_finite("softplus_fwd", "x", x);
  check_finite("softplus_fwd", "y", y);
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return softplus_fwd_cpu(xc, yc, scale, bias, sim, mask_diag);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_bwd_cpu_checked(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, c10::string_view similarity, bool mask_diag,
    std::array<bool, 4> output_mask, bool /*checks*/, c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("softplus_bwd", x, y, scale, sim);
  TORCH_CHECK(grad_row.dim() == 1 && grad_row.numel() == x.size(0), "softplus_bwd: grad_row must have M = ",
              x.size(0), " elements, got shape ", grad_row.sizes());
  TORCH_CHECK(grad_row.scalar_type() == x.scalar_type(), "softplus_bwd: grad_row must have the dtype of x (",
              x.scalar_type(), "), got ", grad_row.scalar_type());
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return softplus_bwd_cpu(grad_row, xc, yc, scale, bias, sim, mask_diag, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_total_cpu_checked(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    c10::string_view similarity, c10::string_view diagonal, std::array<bool, 4> output_mask, bool /*checks*/,
    c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("softplus_total", x, y, scale, sim);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "softplus_total: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  check_finite("softplus_total", "x", x);
  check_finite("softplus_total", "y", y);
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return softplus_total_cpu(xc, yc, scale, bias, sim, std::string(diagonal), output_mask);
}

at::Tensor label_softplus_fwd_cpu_checked(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                          const at::Tensor& bias, const at::Tensor& row_ids,
                                          const at::Tensor& col_ids, c10::string_view similarity, bool /*checks*/,
                                          c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("label_softplus_fwd", x, y, scale, sim);
  check_labels("label_softplus_fwd", row_ids, col_ids, x, y, false);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "label_softplus_fwd: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  check_finite("label_softplus_fwd", "x", x);
  check_finite("label_softplus_fwd", "y", y);
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return label_softplus_fwd_cpu(xc, yc, scale, bias, row_ids, col_ids, sim);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_bwd_cpu_checked(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids, c10::string_view similarity,
    std::array<bool, 4> output_mask, bool /*checks*/, c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("label_softplus_bwd", x, y, scale, sim);
  check_labels("label_softplus_bwd", row_ids, col_ids, x, y, false);
  TORCH_CHECK(grad_row.dim() == 1 && grad_row.numel() == x.size(0), "label_softplus_bwd: grad_row must have M = ",
              x.size(0), " elements, got shape ", grad_row.sizes());
  TORCH_CHECK(grad_row.scalar_type() == x.scalar_type(), "label_softplus_bwd: grad_row must have the dtype of x (",
              x.scalar_type(), "), got ", grad_row.scalar_type());
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return label_softplus_bwd_cpu(grad_row, xc, yc, scale, bias, row_ids, col_ids, sim, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_total_cpu_checked(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const at::Tensor& row_ids, const at::Tensor& col_ids, c10::string_view similarity,
    std::array<bool, 4> output_mask, bool /*checks*/, c10::string_view /*math_path*/) {
  const std::string sim(similarity);
  check_common("label_softplus_total", x, y, scale, sim);
  check_labels("label_softplus_total", row_ids, col_ids, x, y, false);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "label_softplus_total: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  check_finite("label_softplus_total", "x", x);
  check_finite("label_softplus_total", "y", y);
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  return label_softplus_total_cpu(xc, yc, scale, bias, row_ids, col_ids, sim, output_mask);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> operands_fwd_cpu_checked(
    const at::Tensor& a, const at::Tensor& b, c10::string_view similarity) {
  check_finite("operands_fwd", "a", a.contiguous());
  check_finite("operands_fwd", "b", b.contiguous());
  return operands_fwd_cpu(a, b, std::string(similarity));
}

std::tuple<at::Tensor, at::Tensor> operands_bwd_cpu_checked(
    const at::Tensor& grad_ka, const at::Tensor& grad_kb, const at::Tensor& grad_pos,
    const at::Tensor& ka, const at::Tensor& kb, const at::Tensor& norm_a, const at::Tensor& norm_b,
    c10::string_view similarity, std::array<bool, 2> output_mask) {
  return operands_bwd_cpu(grad_ka, grad_kb, grad_pos, ka, kb, norm_a, norm_b, std::string(similarity),
                          output_mask);
}

}  // namespace

TORCH_LIBRARY(mmcl_fast, m) {
  m.def(kLseFwdSchema);
  m.def(kLseBwdSchema);
  m.def(kLabelLseFwdSchema);
  m.def(kLabelLseBwdSchema);
  m.def(kSoftplusFwdSchema);
  m.def(kSoftplusBwdSchema);
  m.def(kSoftplusTotalSchema);
  m.def(kLabelSoftplusFwdSchema);
  m.def(kLabelSoftplusBwdSchema);
  m.def(kLabelSoftplusTotalSchema);
  m.def(kOperandsFwdSchema);
  m.def(kOperandsBwdSchema);
}

TORCH_LIBRARY_IMPL(mmcl_fast, CPU, m) {
  m.impl("lse_fwd", &lse_fwd_cpu_checked);
  m.impl("lse_bwd", &lse_bwd_cpu_checked);
  m.impl("label_lse_fwd", &label_lse_fwd_cpu_checked);
  m.impl("label_lse_bwd", &label_lse_bwd_cpu_checked);
  m.impl("softplus_fwd", &softplus_fwd_cpu_checked);
  m.impl("softplus_bwd", &softplus_bwd_cpu_checked);
  m.impl("softplus_total", &softplus_total_cpu_checked);
  m.impl("label_softplus_fwd", &label_softplus_fwd_cpu_checked);
  m.impl("label_softplus_bwd", &label_softplus_bwd_cpu_checked);
  m.impl("label_softplus_total", &label_softplus_total_cpu_checked);
  m.impl("operands_fwd", &operands_fwd_cpu_checked);
  m.impl("operands_bwd", &operands_bwd_cpu_checked);
}

#ifdef MMCL_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mmcl_fast, CUDA, m) {  // checks and launches: cuda_launch.cpp
  m.impl("lse_fwd", &lse_fwd_cuda);
  m.impl("lse_bwd", &lse_bwd_cuda);
  m.impl("softplus_fwd", &softplus_fwd_cuda);
  m.impl("softplus_bwd", &softplus_bwd_cuda);
  m.impl("softplus_total", &softplus_total_cuda);
  m.impl("label_lse_fwd", &label_lse_fwd_cuda);
  m.impl("label_lse_bwd", &label_lse_bwd_cuda);
  m.impl("label_softplus_fwd", &label_softplus_fwd_cuda);
  m.impl("label_softplus_bwd", &label_softplus_bwd_cuda);
  m.impl("label_softplus_total", &label_softplus_total_cuda);
}
#endif

}  // namespace mmcl_fast
