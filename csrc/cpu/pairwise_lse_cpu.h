// CPU implementation of the mmcl_fast pairwise log-sum-exp operator pair.
#pragma once

#include <ATen/core/Tensor.h>
#include <array>
#include <string>
#include <tuple>

namespace mmcl_fast {

// Returns (row_lse [M], col_lse [N] or [0] when !compute_col).
std::tuple<at::Tensor, at::Tensor> lse_fwd_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const std::string& similarity, bool mask_diag, bool compute_col);

// Returns (dx [M,D], dy [N,D], dscale like scale); an output not requested by output_mask is
// empty (shape [0]) and not computed. grad_col may be empty (numel 0).
std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cpu(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, const std::string& similarity, bool mask_diag,
    std::array<bool, 3> output_mask);

// The label-aware pair (op_schema.h): (row_neg, col_neg, row_pos, col_pos, row_sum, col_sum).
std::array<at::Tensor, 6> label_lse_fwd_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                            const at::Tensor& row_ids, const at::Tensor& col_ids,
                                            const std::string& similarity, bool mask_diag, bool compute_col);

// (dx, dy, dscale) from grads (gRN, gCN, gRP, gCP, gRS, gCS) and lse (row_neg, col_neg, row_pos,
// col_pos); outputs not in output_mask empty.
std::tuple<at::Tensor, at::Tensor, at::Tensor> label_lse_bwd_cpu(
    const std::array<at::Tensor, 6>& grads, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& row_ids, const at::Tensor& col_ids, const std::array<at::Tensor, 4>& lse,
    const std::string& similarity, bool mask_diag, std::array<bool, 3> output_mask);

}  // namespace mmcl_fast
