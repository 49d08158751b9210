// CPU implementation of the mmcl_fast pairwise softplus operator pair (the sigmoid loss).
#pragma once

#include <ATen/core/Tensor.h>
#include <array>
#include <string>
#include <tuple>

namespace mmcl_fast {

// row [M]: row_i = sum_j softplus(scale * sim(x_i, y_j) + bias), j == i left out when mask_diag.
at::Tensor softplus_fwd_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                            const at::Tensor& bias, const std::string& similarity, bool mask_diag);

// (dx [M, D], dy [N, D], dscale like scale, dbias like bias); an output not requested by
// output_mask is empty (shape [0]) and not computed.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_bwd_cpu(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, const std::string& similarity, bool mask_diag, std::array<bool, 4> output_mask);

// (total, dx, dy, dscale, dbias): the total (0-dim, op_schema.h) and its gradients, in one pass.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_total_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const std::string& similarity, const std::string& diagonal, std::array<bool, 4> output_mask);

// The label-aware pair (op_schema.h): row [M], and (dx, dy, dscale, dbias) for grad_row.
at::Tensor label_softplus_fwd_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                  const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids,
                                  const std::string& similarity);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_bwd_cpu(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids, const std::string& similarity,
    std::array<bool, 4> output_mask);

// (total, dx, dy, dscale, dbias) of the label-aware pair, in one pass.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_total_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const at::Tensor& row_ids, const at::Tensor& col_ids, const std::string& similarity,
    std::array<bool, 4> output_mask);

// "negative" 0, "masked" 1, "positive" 2; anything else is refused naming the argument.
int parsed_diagonal(const std::string& diagonal);

}  // namespace mmcl_fast
