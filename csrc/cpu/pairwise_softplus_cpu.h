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

// (total, dx, dy, dscale, dbias): total = sum_i row_i (0-dim) and its gradients, in one pass.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_total_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const std::string& similarity, bool mask_diag, std::array<bool, 4> output_mask);

}  // namespace mmcl_fast
