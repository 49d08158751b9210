// The CPU implementation of the pairwise log-sum-exp op pair: the argument checks shared by every
// ISA, then the engine copy that cpu_isa.cpp picked (formulas: tile_engine/engine_kernels.h).
#include "pairwise_lse_cpu.h"

#include <ATen/ops/full.h>

#include "isa/cpu_isa.h"
#include "scalar_arguments.h"

namespace mmcl_fast {

std::tuple<at::Tensor, at::Tensor> lse_fwd_cpu(const at::Tensor& x, const at::Tensor& y,
                                               const at::Tensor& scale,
                                               const std::string& similarity, bool mask_diag,
                                               bool compute_col) {
  const Similarity sim = parsed(similarity);
  return active_cpu_kernels().lse_fwd(x, y, checked_scale(scale), sim, mask_diag, compute_col);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cpu(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, const std::string& similarity, bool mask_diag,
    std::array<bool, 3> output_mask) {
  const Similarity sim = parsed(similarity);
  auto [dx, dy, dscale] = active_cpu_kernels().lse_bwd(grad_row, grad_col, x, y, checked_scale(scale), row_lse,
                                                       col_lse, sim, mask_diag, output_mask);
  auto dscale_t = output_mask[2] ? at::full(scale.sizes(), dscale, scale.options()) : scale.new_empty({0});
  return {dx, dy, dscale_t};
}

std::array<at::Tensor, 6> label_lse_fwd_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                            const at::Tensor& row_ids, const at::Tensor& col_ids,
                                            const std::string& similarity, bool mask_diag, bool compute_col) {
  const Similarity sim = parsed(similarity);
  return active_cpu_kernels().label_lse_fwd(x, y, checked_scale(scale), sim, row_ids, col_ids, mask_diag,
                                            compute_col);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> label_lse_bwd_cpu(
    const std::array<at::Tensor, 6>& grads, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& row_ids, const at::Tensor& col_ids, const std::array<at::Tensor, 4>& lse,
    const std::string& similarity, bool mask_diag, std::array<bool, 3> output_mask) {
  const Similarity sim = parsed(similarity);
  auto [dx, dy, dscale] = active_cpu_kernels().label_lse_bwd(grads, x, y, checked_scale(scale), sim, row_ids,
                                                             col_ids, lse, mask_diag, output_mask);
  auto dscale_t = output_mask[2] ? at::full(scale.sizes(), dscale, scale.options()) : scale.new_empty({0});
  return {dx, dy, dscale_t};
}

}  // namespace mmcl_fast
