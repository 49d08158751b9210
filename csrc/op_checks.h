// Argument checks and input preparation shared by every device's implementation of the operators
// (see ops.cpp for the schemas): each failed check names the argument.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

namespace mmcl_fast {

// similarity, shapes, dtypes, devices and the scale's size (`op` prefixes every message).
void check_common(const char* op, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                  const std::string& similarity);

// "<op>: <name> contains NaN or Inf" unless every element of t is finite (a host sync).
void check_finite(const char* op, const char* name, const at::Tensor& t);

// Sizes and dtypes of lse_bwd's gradient and LSE arguments; `lse_dtype` is the dtype of the LSEs
// (float32 for half-precision x, else the dtype of x).
void check_bwd(const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
               const at::Tensor& y, const at::Tensor& row_lse, const at::Tensor& col_lse,
               at::ScalarType lse_dtype);

// row_ids [M] and col_ids [N]: 1-D int64 on the device of x (the label-aware ops), or both empty
// (shape [0]: the positives are the pairs (i, i)).
void check_labels(const char* op, const at::Tensor& row_ids, const at::Tensor& col_ids, const at::Tensor& x,
                  const at::Tensor& y, bool mask_diag);

// label_lse_bwd's lists: grads (gRN, gCN, gRP, gCP, gRS, gCS: rows [M], columns all [N] or all
// empty) and lse (row_neg, col_neg, row_pos, col_pos), every tensor of dtype `stat_dtype` (the
// statistics' dtype on that device). Returns whether the columns have gradients.
bool check_label_bwd(const char* op, at::ArrayRef<at::Tensor> grads, at::ArrayRef<at::Tensor> lse,
                     const at::Tensor& x, const at::Tensor& y, at::ScalarType stat_dtype);

// -||x_i - y_j||^2 and its gradients are invariant to a common shift of x and y. The kernels
// expand it as 2 x.y - |x|^2 - |y|^2, which cancels catastrophically when |x|^2 >> ||x - y||^2
// (embeddings sharing an offset). For "euclidean", both inputs are therefore shifted by their
// joint mean (accumulated in float64), which keeps every term at the scale of the data's spread.
// Other similarities pass unchanged.
std::pair<at::Tensor, at::Tensor> centred_if_euclidean(const at::Tensor& x, const at::Tensor& y,
                                                       const std::string& similarity);

}  // namespace mmcl_fast
