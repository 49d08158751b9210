// CPU implementation of the operands op pair: the O((M + N) D) work of a contrastive loss around
// the pairwise log-sum-exp (the cosine normalisation and the positive-pair similarities), in one
// pass per direction on the kernels' worker pool instead of a dozen ATen elementwise ops.
#pragma once

#include <ATen/core/Tensor.h>
#include <array>
#include <string>
#include <tuple>

namespace mmcl_fast {

// Returns (ka [M,D], kb [N,D], pos [M], norm_a [M] or [0], norm_b [N] or [0]); M <= N.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> operands_fwd_cpu(
    const at::Tensor& a, const at::Tensor& b, const std::string& similarity);

// Returns (da [M,D], db [N,D]); an output not requested by output_mask is empty (shape [0]).
std::tuple<at::Tensor, at::Tensor> operands_bwd_cpu(
    const at::Tensor& grad_ka, const at::Tensor& grad_kb, const at::Tensor& grad_pos,
    const at::Tensor& ka, const at::Tensor& kb, const at::Tensor& norm_a, const at::Tensor& norm_b,
    const std::string& similarity, std::array<bool, 2> output_mask);

}  // namespace mmcl_fast
