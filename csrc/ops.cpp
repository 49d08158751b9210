// Operator schema and per-device dispatch of mmcl_fast's pairwise log-sum-exp pair.
//
//   lse_fwd(x[M,D], y[N,D], scale[], similarity, mask_diag, compute_col)
//       -> (row_lse[M], col_lse[N] (or [0] when !compute_col))
//       row_lse_i = log sum_j exp(s sim(x_i, y_j)),  col_lse_j = log sum_i exp(s sim(x_i, y_j)),
//       j == i left out of both sums when mask_diag.
//   lse_bwd(grad_row[M], grad_col[N] or [0], x, y, scale, row_lse, col_lse, similarity, mask_diag,
//           output_mask[3]) -> (dx[M,D], dy[N,D], dscale like scale)
//       An output whose output_mask entry is false is returned empty (shape [0]) and its kernel
//       work is skipped (a frozen tower costs no dY pass).
//
// The Python layer (mmcl_fast/_ops.py) registers fake kernels and autograd for these ops.
#include <torch/library.h>
#include <ATen/ATen.h>

#include <array>

#include "cpu/pairwise_lse_cpu.h"
#include "similarity.h"

#ifdef MMCL_FAST_WITH_CUDA
#include "cuda_launch.h"
#endif

namespace mmcl_fast {
namespace {

void check_common(const char* op, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                  const std::string& similarity) {
  Similarity sim;
  TORCH_CHECK(parse_similarity(similarity.c_str(), &sim), op, ": unknown similarity '", similarity,
              "' (expected dot, euclidean or l1)");
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D (batch, dim), got ", x.sizes());
  TORCH_CHECK(y.dim() == 2, op, ": y must be 2-D (batch, dim), got ", y.sizes());
  TORCH_CHECK(x.size(1) == y.size(1), op, ": x and y must share the feature dimension, got ",
              x.sizes(), " and ", y.sizes());
  TORCH_CHECK(x.size(0) > 0 && y.size(0) > 0, op, ": empty batch (x ", x.sizes(), ", y ",
              y.sizes(), ")");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), op, ": x and y must have the same dtype, got ",
              x.scalar_type(), " and ", y.scalar_type());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), op, ": x and y must be floating point, got ",
              x.scalar_type());
  TORCH_CHECK(x.device() == y.device(), op, ": x and y must be on the same device, got ",
              x.device(), " and ", y.device());
  TORCH_CHECK(scale.numel() == 1, op, ": scale must hold exactly one element, got ", scale.sizes());
  TORCH_CHECK(at::isFloatingType(scale.scalar_type()), op, ": scale must be floating point");
}

void check_finite(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(at::isfinite(t).all().item<bool>(), op, ": ", name,
              " contains NaN or Inf; the loss would be NaN");
}

// -||x_i - y_j||^2 and its gradients are invariant to a common shift of x and y. The kernels expand
// it as 2 x.y - |x|^2 - |y|^2, which cancels catastrophically when |x|^2 >> ||x - y||^2 (embeddings
// sharing an offset). Both inputs are therefore shifted by their joint mean (accumulated in
// float64), which keeps every term at the scale of the data's spread. Other similarities pass.
std::pair<at::Tensor, at::Tensor> centred_if_euclidean(const at::Tensor& x, const at::Tensor& y,
                                                       c10::string_view similarity) {
  if (similarity != "euclidean") return {x, y};
  const double count = double(x.size(0) + y.size(0));
  const auto centre =
      (x.sum(0, false, at::kDouble) + y.sum(0, false, at::kDouble)).div_(count).to(x.scalar_type());
  return {x - centre, y - centre};
}

std::tuple<at::Tensor, at::Tensor> lse_fwd_cpu_checked(const at::Tensor& x, const at::Tensor& y,
                                                       const at::Tensor& scale,
                                                       c10::string_view similarity, bool mask_diag,
                                                       bool compute_col) {
  const std::string sim(similarity);
  check_common("lse_fwd", x, y, scale, sim);
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "lse_fwd: the CPU kernel supports float32 and float64, got ", x.scalar_type());
  check_finite("lse_fwd", "x", x);
  check_finite("lse_fwd", "y", y);
  const auto [xc, yc] = centred_if_euclidean(x, y, similarity);
  return lse_fwd_cpu(xc, yc, scale, sim, mask_diag, compute_col);
}

void check_bwd(const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
               const at::Tensor& y, const at::Tensor& row_lse, const at::Tensor& col_lse) {
  TORCH_CHECK(grad_row.numel() == x.size(0) && row_lse.numel() == x.size(0),
              "lse_bwd: grad_row and row_lse must have M = ", x.size(0), " elements");
  TORCH_CHECK(grad_col.numel() == 0 || (grad_col.numel() == y.size(0) && col_lse.numel() == y.size(0)),
              "lse_bwd: grad_col must be empty or have N = ", y.size(0),
              " elements, with col_lse computed");
  TORCH_CHECK(grad_row.scalar_type() == x.scalar_type() && row_lse.scalar_type() == x.scalar_type(),
              "lse_bwd: grad_row and row_lse must match the dtype of x");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cpu_checked(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, c10::string_view similarity, bool mask_diag,
    std::array<bool, 3> output_mask) {
  const std::string sim(similarity);
  check_common("lse_bwd", x, y, scale, sim);
  check_bwd(grad_row, grad_col, x, y, row_lse, col_lse);
  const auto [xc, yc] = centred_if_euclidean(x, y, similarity);
  return lse_bwd_cpu(grad_row, grad_col.numel() ? grad_col.to(x.scalar_type()) : grad_col, xc, yc,
                     scale, row_lse, col_lse, sim, mask_diag, output_mask);
}

#ifdef MMCL_FAST_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> lse_fwd_cuda_checked(const at::Tensor& x, const at::Tensor& y,
                                                        const at::Tensor& scale,
                                                        c10::string_view similarity,
                                                        bool mask_diag, bool compute_col) {
  const std::string sim(similarity);
  check_common("lse_fwd", x, y, scale, sim);
  const auto [xc, yc] = centred_if_euclidean(x, y, similarity);
  return lse_fwd_cuda(xc, yc, scale, sim, mask_diag, compute_col);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cuda_checked(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, c10::string_view similarity, bool mask_diag,
    std::array<bool, 3> output_mask) {
  const std::string sim(similarity);
  check_common("lse_bwd", x, y, scale, sim);
  check_bwd(grad_row, grad_col, x, y, row_lse, col_lse);
  const auto [xc, yc] = centred_if_euclidean(x, y, similarity);
  return lse_bwd_cuda(grad_row, grad_col, xc, yc, scale, row_lse, col_lse, sim, mask_diag,
                      output_mask);
}
#endif

}  // namespace

TORCH_LIBRARY(mmcl_fast, m) {
  m.def(
      "lse_fwd(Tensor x, Tensor y, Tensor scale, str similarity, bool mask_diag, bool compute_col)"
      " -> (Tensor, Tensor)");
  m.def(
      "lse_bwd(Tensor grad_row, Tensor grad_col, Tensor x, Tensor y, Tensor scale, Tensor row_lse,"
      " Tensor col_lse, str similarity, bool mask_diag, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmcl_fast, CPU, m) {
  m.impl("lse_fwd", &lse_fwd_cpu_checked);
  m.impl("lse_bwd", &lse_bwd_cpu_checked);
}

#ifdef MMCL_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mmcl_fast, CUDA, m) {
  m.impl("lse_fwd", &lse_fwd_cuda_checked);
  m.impl("lse_bwd", &lse_bwd_cuda_checked);
}
#endif

}  // namespace mmcl_fast
