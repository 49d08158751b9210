// ATen-side launchers of the torch-free CUDA kernels (compiled only into CUDA builds).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <tuple>

namespace mmcl_fast {

std::tuple<at::Tensor, at::Tensor> lse_fwd_cuda(const at::Tensor& x, const at::Tensor& y,
                                                const at::Tensor& scale,
                                                const std::string& similarity, bool mask_diag,
                                                bool compute_col);

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cuda(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
    const at::Tensor& y, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, const std::string& similarity, bool mask_diag,
    std::array<bool, 3> output_mask);

}  // namespace mmcl_fast
