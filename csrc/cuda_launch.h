// The CUDA implementations of the operators (cuda_launch.cpp; compiled into CUDA builds, and into
// the host-emulated test backend on CPU tensors).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <tuple>

namespace mmcl_fast {

std::tuple<at::Tensor, at::Tensor> lse_fwd_cuda(const at::Tensor& x, const at::Tensor& y,
                                                const at::Tensor& scale, c10::string_view similarity,
                                                bool mask_diag, bool compute_col, bool checks,
                                                bool deterministic, c10::string_view math_path);

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cuda(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, c10::string_view similarity, bool mask_diag,
    std::array<bool, 3> output_mask, bool checks, c10::string_view math_path);

at::Tensor softplus_fwd_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                             const at::Tensor& bias, c10::string_view similarity, bool mask_diag, bool checks,
                             c10::string_view math_path);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_bwd_cuda(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, c10::string_view similarity, bool mask_diag, std::array<bool, 4> output_mask,
    bool checks, c10::string_view math_path);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_total_cuda(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    c10::string_view similarity, c10::string_view diagonal, std::array<bool, 4> output_mask, bool checks,
    c10::string_view math_path);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_lse_fwd_cuda(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_ids,
    const at::Tensor& col_ids, c10::string_view similarity, bool mask_diag, bool compute_col, bool checks,
    bool deterministic, c10::string_view math_path);

at::Tensor label_softplus_fwd_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                   const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids,
                                   c10::string_view similarity, bool checks, c10::string_view math_path);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_bwd_cuda(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids, c10::string_view similarity,
    std::array<bool, 4> output_mask, bool checks, c10::string_view math_path);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_total_cuda(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const at::Tensor& row_ids, const at::Tensor& col_ids, c10::string_view similarity,
    std::array<bool, 4> output_mask, bool checks, c10::string_view math_path);

std::tuple<at::Tensor, at::Tensor, at::Tensor> label_lse_bwd_cuda(
    at::TensorList grads, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& row_ids, const at::Tensor& col_ids, at::TensorList lse, c10::string_view similarity,
    bool mask_diag, std::array<bool, 3> output_mask, bool checks, c10::string_view math_path);

}  // namespace mmcl_fast
