// Torch-free CUDA entry points of the pairwise operators (raw pointers + stream).
//
// Formulas (L_ij = s * sim(x_i, y_j), see ../similarity.h), log-sum-exp pair:
//   forward:  row_lse_i = log sum_j exp(L_ij), col_lse_j = log sum_i exp(L_ij)  (j == i masked)
//   backward: G_ij = gr_i exp(L_ij - row_lse_i) + gc_j exp(L_ij - col_lse_j)
//             dx_i = s sum_j G_ij d sim_ij/d x_i,  dy_j = s sum_i G_ij d sim_ij/d y_j,
//             dscale = sum_ij G_ij sim_ij
// label-aware pair (positives P(i) = {j : row_ids_i == col_ids_j}, the pair (i, i) without ids;
// negatives the other entries; (i, i) in neither set when masked):
//   forward:  row_neg_i = log sum_{N(i)} exp(L_ij), row_pos_i = log sum_{P(i)} exp(L_ij),
//             row_sum_i = sum_{P(i)} L_ij, and the same of the columns
//   backward: G_ij = gRN_i exp(L_ij - row_neg_i) + gCN_j exp(L_ij - col_neg_j)             (negatives)
//             G_ij = gRP_i exp(L_ij - row_pos_i) + gCP_j exp(L_ij - col_pos_j) + gRS_i + gCS_j (positives)
// softplus pair (the sigmoid loss, t = bias):
//   forward:  row_i = sum_j softplus(L_ij + t)   (j == i masked)
//   backward: G_ij = gr_i sigmoid(L_ij + t), dx, dy and dscale as above, dbias = sum_ij G_ij
// Inputs may be float32, float16 or bfloat16; all arithmetic, statistics, dscale and dbias are
// float32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mmcl_fast {
namespace cuda {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2 };

// Which units compute the tile products. Simt: CUDA cores, float32 FMAs, every similarity.
// TensorCore: WMMA tiles with float16/bfloat16 operands as given, float32 inputs as TF32, float32
// accumulation; dot and euclidean only (l1 has no matrix-product form and always runs Simt).
enum class MathPath : int { Simt = 0, TensorCore = 1 };

struct Problem {
  const void* x;      // M x D, row-major
  const void* y;      // N x D, row-major
  int64_t M, N, D;
  DType dtype;
  int similarity;     // mmcl_fast::Similarity
  const float* scale; // device pointer to s (> 0)
  bool mask_diag;
  MathPath path = MathPath::Simt;
};

// The path the kernels take for p: TensorCore requested for l1, or on a device older than sm_80,
// gives Simt.
MathPath effective_path(const Problem& p);

// Bytes of device workspace lse_forward needs (column (max, sum) pairs), 0 when !compute_col.
size_t lse_forward_workspace(const Problem& p, bool compute_col, bool deterministic);

// row_lse [M]; col_lse [N] when compute_col. deterministic: the column LSE is a second pass over
// the swapped problem instead of an atomic merge of per-block (max, sum) pairs.
cudaError_t lse_forward(const Problem& p, float* row_lse, float* col_lse, bool compute_col,
                        bool deterministic, void* workspace, cudaStream_t stream);

// Bytes of device workspace lse_backward needs (float accumulators + dscale partials).
size_t lse_backward_workspace(const Problem& p);

// dx [M x D], dy [N x D] in the input dtype; dscale [1] float32. grad_col may be null (then the
// column term is absent). A null dx, dy or dscale is not computed (its kernel pass is skipped).
// Deterministic: no floating-point atomics.
cudaError_t lse_backward(const Problem& p, const float* grad_row, const float* grad_col,
                         const float* row_lse, const float* col_lse, void* dx, void* dy,
                         float* dscale, void* workspace, cudaStream_t stream);

// Bytes of device workspace of softplus_forward / softplus_backward.
size_t softplus_forward_workspace(const Problem& p);
size_t softplus_backward_workspace(const Problem& p);

// row [M] float32; bias: device pointer to t.
cudaError_t softplus_forward(const Problem& p, const float* bias, float* row, void* workspace,
                             cudaStream_t stream);

// dx [M x D], dy [N x D] in the input dtype; dscale, dbias [1] float32. A null output is not
// computed (its kernel pass is skipped). Deterministic: no floating-point atomics.
cudaError_t softplus_backward(const Problem& p, const float* bias, const float* grad_row, void* dx, void* dy,
                              float* dscale, float* dbias, void* workspace, cudaStream_t stream);

// The ids of the label-aware pair: int64 device pointers [M] and [N], both null for the pairs (i, i).
struct Labels {
  const int64_t* row_ids;
  const int64_t* col_ids;
};

// The label-aware statistics, float32 device pointers: rows [M]; columns [N] (unused without
// compute_col).
struct LabelStats {
  float* row_neg;
  float* row_pos;
  float* row_sum;
  float* col_neg;
  float* col_pos;
  float* col_sum;
};

// The label-aware backward's inputs, float32 device pointers: the six upstream gradients (the
// three column ones null together when the columns have no gradient) and the four LSEs.
struct LabelGrads {
  const float* row_neg;
  const float* col_neg;
  const float* row_pos;
  const float* col_pos;
  const float* row_sum;
  const float* col_sum;
  const float* lse_row_neg;
  const float* lse_col_neg;
  const float* lse_row_pos;
  const float* lse_col_pos;
};

// Bytes of device workspace of label_forward / label_backward.
size_t label_forward_workspace(const Problem& p);
size_t label_backward_workspace(const Problem& p);

// The statistics of the rows, and of the columns when compute_col (a second launch on the swapped
// problem: deterministic either way).
cudaError_t label_forward(const Problem& p, const Labels& ids, const LabelStats& out, bool compute_col,
                          void* workspace, cudaStream_t stream);

// dx [M x D], dy [N x D] in the input dtype; dscale [1] float32; a null output is not computed.
// Deterministic: no floating-point atomics.
cudaError_t label_backward(const Problem& p, const Labels& ids, const LabelGrads& g, void* dx, void* dy,
                           float* dscale, void* workspace, cudaStream_t stream);

// The label-aware sigmoid terms (workspaces as softplus_forward / softplus_backward):
//   row_i = sum_j softplus(-z_ij (L_ij + t)), z_ij = +1 for the pairs ids lists, -1 elsewhere;
//   G_ij = -z_ij g_i sigmoid(-z_ij (L_ij + t)).
cudaError_t label_softplus_forward(const Problem& p, const Labels& ids, const float* bias, float* row,
                                   void* workspace, cudaStream_t stream);
cudaError_t label_softplus_backward(const Problem& p, const Labels& ids, const float* bias, const float* grad_row,
                                    void* dx, void* dy, float* dscale, float* dbias, void* workspace,
                                    cudaStream_t stream);

}  // namespace cuda
}  // namespace mmcl_fast
