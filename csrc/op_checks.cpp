// Argument checks and input preparation of the operators (see op_checks.h).
#include "op_checks.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/isfinite.h>

#include <cmath>
#include <utility>
#include <vector>

#include "similarity.h"

namespace mmcl_fast {

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

void check_labels(const char* op, const at::Tensor& row_ids, const at::Tensor& col_ids, const at::Tensor& x,
                  const at::Tensor& y, bool mask_diag) {
  auto check = [&](const char* name, const at::Tensor& ids, int64_t n) {
    TORCH_CHECK(ids.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", ids.scalar_type());
    TORCH_CHECK(ids.dim() == 1 && ids.size(0) == n, op, ": ", name, " must have shape [", n, "], got ",
                ids.sizes());
    TORCH_CHECK(ids.device() == x.device(), op, ": ", name, " must be on the device of x (", x.device(),
                "), got ", ids.device());
  };
  if (row_ids.numel() == 0 && col_ids.numel() == 0 && row_ids.dim() == 1 && col_ids.dim() == 1) {
    // no ids: the positives are the pairs (i, i), which a masked diagonal would contradict
    TORCH_CHECK(!mask_diag, op, ": mask_diag needs row_ids and col_ids (without ids the pairs (i, i) are the "
                "positives)");
    return;
  }
  check("row_ids", row_ids, x.size(0));
  check("col_ids", col_ids, y.size(0));
}

bool check_label_bwd(const char* op, at::ArrayRef<at::Tensor> grads, at::ArrayRef<at::Tensor> lse,
                     const at::Tensor& x, const at::Tensor& y, at::ScalarType stat_dtype) {
  TORCH_CHECK(grads.size() == 6, op, ": grads must hold 6 tensors (gRN, gCN, gRP, gCP, gRS, gCS), got ",
              grads.size());
  TORCH_CHECK(lse.size() == 4, op, ": lse must hold 4 tensors (row_neg, col_neg, row_pos, col_pos), got ",
              lse.size());
  const int64_t M = x.size(0), N = y.size(0);
  const bool use_col = grads[1].numel() > 0;
  static const char* const kNames[6] = {"grad_row_neg", "grad_col_neg", "grad_row_pos", "grad_col_pos",
                                        "grad_row_sum", "grad_col_sum"};
  for (int k = 0; k < 6; ++k) {
    const int64_t want = k % 2 == 1 ? (use_col ? N : 0) : M;
    TORCH_CHECK(grads[k].dim() == 1 && grads[k].numel() == want, op, ": ", kNames[k], " must have ", want,
                " elements, got shape ", grads[k].sizes());
    TORCH_CHECK(grads[k].scalar_type() == stat_dtype, op, ": ", kNames[k], " must be ", stat_dtype, ", got ",
                grads[k].scalar_type());
    TORCH_CHECK(grads[k].device() == x.device(), op, ": ", kNames[k], " must be on the device of x");
  }
  static const char* const kLseNames[4] = {"row_neg", "col_neg", "row_pos", "col_pos"};
  for (int k = 0; k < 4; ++k) {
    const int64_t want = k % 2 == 1 ? (use_col ? N : lse[k].numel()) : M;
    TORCH_CHECK(lse[k].dim() == 1 && lse[k].numel() == want && lse[k].scalar_type() == stat_dtype, op, ": ",
                kLseNames[k], " must be a [", want, "] ", stat_dtype, " tensor, got ", lse[k].sizes(), " ",
                lse[k].scalar_type());
    TORCH_CHECK(lse[k].device() == x.device(), op, ": ", kLseNames[k], " must be on the device of x");
  }
  return use_col;
}

namespace {

// One serial pass on the calling thread for CPU float/double tensors (ATen's isfinite().all()
// would open OpenMP regions); every other case goes through ATen.
bool all_finite(const at::Tensor& t) {
  if (t.is_cpu() && t.is_contiguous() &&
      (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble)) {
    return AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "all_finite", [&] {
      const scalar_t* p = t.data_ptr<scalar_t>();
      bool finite = true;
      for (int64_t i = 0, n = t.numel(); i < n; ++i) finite &= std::isfinite(p[i]);
      return finite;
    });
  }
  return at::isfinite(t).all().item<bool>();
}

}  // namespace

void check_finite(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(all_finite(t), op, ": ", name, " contains NaN or Inf; the loss would be NaN");
}

void check_bwd(const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x,
               const at::Tensor& y, const at::Tensor& row_lse, const at::Tensor& col_lse,
               at::ScalarType lse_dtype) {
  TORCH_CHECK(grad_row.numel() == x.size(0) && row_lse.numel() == x.size(0),
              "lse_bwd: grad_row and row_lse must have M = ", x.size(0), " elements");
  TORCH_CHECK(grad_col.numel() == 0 || (grad_col.numel() == y.size(0) && col_lse.numel() == y.size(0)),
              "lse_bwd: grad_col must be empty or have N = ", y.size(0),
              " elements, with col_lse computed");
  TORCH_CHECK(grad_row.scalar_type() == lse_dtype && row_lse.scalar_type() == lse_dtype,
              "lse_bwd: grad_row and row_lse must have the LSE dtype ", lse_dtype, ", got ",
              grad_row.scalar_type(), " and ", row_lse.scalar_type());
}

std::pair<at::Tensor, at::Tensor> centred_if_euclidean(const at::Tensor& x, const at::Tensor& y,
                                                       const std::string& similarity) {
  if (similarity != "euclidean") return {x, y};
  if (x.is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble)) {
    // Serial loops on the calling thread (the ATen expression below opens OpenMP regions).
    const auto xc = x.contiguous(), yc = y.contiguous();
    const int64_t D = x.size(1);
    return AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "centred_if_euclidean", [&] {
      std::vector<double> centre(D, 0.0);
      for (const auto* t : {&xc, &yc}) {
        const scalar_t* p = t->data_ptr<scalar_t>();
        for (int64_t i = 0; i < t->size(0); ++i)
          for (int64_t k = 0; k < D; ++k) centre[k] += double(p[i * D + k]);
      }
      std::vector<scalar_t> c(D);
      for (int64_t k = 0; k < D; ++k) c[k] = scalar_t(centre[k] / double(x.size(0) + y.size(0)));
      auto shifted = [&](const at::Tensor& t) {
        auto out = at::empty_like(t);
        const scalar_t* p = t.data_ptr<scalar_t>();
        scalar_t* o = out.data_ptr<scalar_t>();
        for (int64_t i = 0; i < t.size(0); ++i)
          for (int64_t k = 0; k < D; ++k) o[i * D + k] = p[i * D + k] - c[k];
        return out;
      };
      return std::make_pair(shifted(xc), shifted(yc));
    });
  }
  const double count = double(x.size(0) + y.size(0));
  const auto centre =
      x.sum(0, false, at::kDouble).add_(y.sum(0, false, at::kDouble)).div_(count).to(x.scalar_type());
  return {x.sub(centre), y.sub(centre)};
}

}  // namespace mmcl_fast
