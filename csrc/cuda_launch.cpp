// The CUDA implementations of lse_fwd / lse_bwd, label_lse_fwd / label_lse_bwd and softplus_fwd /
// softplus_bwd (registered by ops.cpp): check the arguments,
// centre euclidean inputs, make inputs contiguous, allocate outputs and workspace, and pass raw
// pointers plus the current stream to the kernels of csrc/cuda/pairwise_lse.cu.
// The kernel options arrive as op arguments (mmcl_fast/options.py):
// * deterministic: the column LSE by a second pass instead of an atomic merge; also selected by
//   torch.use_deterministic_algorithms(True);
// * math_path (see cuda::MathPath): "simt", "tc" or "auto". auto takes the tensor cores for
//   float16/bfloat16 inputs, and for float32 inputs (as TF32) only when
//   torch.backends.cuda.matmul.allow_tf32 is set, as torch's own float32 matmuls do; tc forces
//   them, TF32 included; l1 runs on the CUDA cores whatever the setting;
// * checks: the checks that read tensor data (finite inputs, a positive scale). Off by default,
//   so that a call does not synchronise the host; see mmcl_fast/validation.py.
// The same file builds the host-emulated test backend (csrc/cuda/emulation), on CPU tensors.
#include "cuda_launch.h"

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/abs.h>
#include <ATen/ops/ones_like.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/sign.h>
#include <ATen/ops/softplus.h>
#include <ATen/ops/sum.h>

#include <algorithm>
#include <string>

#include "cuda/launch_context.h"
#include "cuda/pairwise_lse.cuh"
#include "op_checks.h"
#include "similarity.h"

namespace mmcl_fast {
namespace {

cuda::DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::F32;
    case at::kHalf: return cuda::DType::F16;
    case at::kBFloat16: return cuda::DType::BF16;
    default:
      TORCH_CHECK(false, "lse: the CUDA kernels support float32, float16 and bfloat16, got ", t);
  }
}

// The scale as a one-element float32 tensor on x's device (no sync unless checks are on).
at::Tensor device_scale(const at::Tensor& scale, const at::Tensor& x, bool checks) {
  auto s = scale.to(x.device(), at::kFloat).reshape({1}).contiguous();
  if (checks)
    TORCH_CHECK(s.gt(0).logical_and(s.isfinite()).all().item<bool>(),
                "scale (1/temperature or logit_scale) must be positive and finite, got ", s.item<float>());
  return s;
}

// The bias as a one-element float32 tensor on x's device (checked finite when checks are on).
at::Tensor device_bias(const at::Tensor& bias, const at::Tensor& x, bool checks) {
  TORCH_CHECK(bias.numel() == 1, "bias (logit_bias) must hold exactly one element, got shape ", bias.sizes());
  auto t = bias.to(x.device(), at::kFloat).reshape({1}).contiguous();
  if (checks) TORCH_CHECK(t.isfinite().all().item<bool>(), "bias (logit_bias) must be finite, got ", t.item<float>());
  return t;
}

cuda::MathPath math_path(at::ScalarType t, c10::string_view choice) {
  if (choice == "simt") return cuda::MathPath::Simt;
  if (choice == "tc") return cuda::MathPath::TensorCore;
  TORCH_CHECK(choice == "auto", "math_path must be 'simt', 'tc' or 'auto', got '", std::string(choice), "'");
  if (t == at::kFloat && !at::globalContext().allowTF32CuBLAS()) return cuda::MathPath::Simt;
  return cuda::MathPath::TensorCore;
}

cuda::Problem problem(const at::Tensor& x, const at::Tensor& y, const at::Tensor& s,
                      const std::string& similarity, bool mask_diag, c10::string_view path) {
  Similarity sim;
  TORCH_CHECK(parse_similarity(similarity.c_str(), &sim), "unknown similarity '", similarity, "'");
  return cuda::Problem{x.data_ptr(), y.data_ptr(), x.size(0), y.size(0), x.size(1),
                       dtype_of(x.scalar_type()), static_cast<int>(sim), s.data_ptr<float>(),
                       mask_diag, math_path(x.scalar_type(), path)};
}

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> lse_fwd_cuda(const at::Tensor& x_in, const at::Tensor& y_in,
                                                const at::Tensor& scale, c10::string_view similarity,
                                                bool mask_diag, bool compute_col, bool checks,
                                                bool deterministic, c10::string_view path) {
  const std::string sim(similarity);
  check_common("lse_fwd", x_in, y_in, scale, sim);
  dtype_of(x_in.scalar_type());  // refuses dtypes the kernels lack
  LaunchDeviceGuard guard(x_in.device());
  if (checks) {
    check_finite("lse_fwd", "x", x_in);
    check_finite("lse_fwd", "y", y_in);
  }
  const auto [xc, yc] = centred_if_euclidean(x_in, y_in, sim);
  auto x = xc.contiguous(), y = yc.contiguous();
  auto s = device_scale(scale, x, checks);
  const auto p = problem(x, y, s, sim, mask_diag, path);
  const bool det = deterministic || at::globalContext().deterministicAlgorithms();
  auto opts = x.options().dtype(at::kFloat);
  auto row = at::empty({x.size(0)}, opts);
  auto col = at::empty({compute_col ? y.size(0) : 0}, opts);
  auto ws = at::empty({static_cast<int64_t>(cuda::lse_forward_workspace(p, compute_col, det)) + 1},
                      x.options().dtype(at::kByte));
  check(cuda::lse_forward(p, row.data_ptr<float>(), compute_col ? col.data_ptr<float>() : nullptr,
                          compute_col, det, ws.data_ptr(), current_launch_stream()),
        "lse_forward");
  return {row, col};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lse_bwd_cuda(
    const at::Tensor& grad_row, const at::Tensor& grad_col, const at::Tensor& x_in,
    const at::Tensor& y_in, const at::Tensor& scale, const at::Tensor& row_lse,
    const at::Tensor& col_lse, c10::string_view similarity, bool mask_diag,
    std::array<bool, 3> output_mask, bool checks, c10::string_view path) {
  const std::string sim(similarity);
  check_common("lse_bwd", x_in, y_in, scale, sim);
  dtype_of(x_in.scalar_type());
  check_bwd(grad_row, grad_col, x_in, y_in, row_lse, col_lse, at::kFloat);  // LSEs are float32
  LaunchDeviceGuard guard(x_in.device());
  const auto [xc, yc] = centred_if_euclidean(x_in, y_in, sim);
  auto x = xc.contiguous(), y = yc.contiguous();
  auto s = device_scale(scale, x, checks);
  const auto p = problem(x, y, s, sim, mask_diag, path);
  auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
  auto gr = f32(grad_row), rl = f32(row_lse);
  const bool use_col = grad_col.numel() > 0;
  auto gc = use_col ? f32(grad_col) : at::Tensor(), cl = use_col ? f32(col_lse) : at::Tensor();
  // Outputs not in output_mask stay empty; the kernels skip them (nullptr).
  auto dx = output_mask[0] ? at::empty_like(x) : x.new_empty({0});
  auto dy = output_mask[1] ? at::empty_like(y) : y.new_empty({0});
  auto dscale = at::empty({output_mask[2] ? 1 : 0}, x.options().dtype(at::kFloat));
  auto ws = at::empty({static_cast<int64_t>(cuda::lse_backward_workspace(p)) + 1},
                      x.options().dtype(at::kByte));
  check(cuda::lse_backward(p, gr.data_ptr<float>(), use_col ? gc.data_ptr<float>() : nullptr,
                           rl.data_ptr<float>(), use_col ? cl.data_ptr<float>() : nullptr,
                           output_mask[0] ? dx.data_ptr() : nullptr,
                           output_mask[1] ? dy.data_ptr() : nullptr,
                           output_mask[2] ? dscale.data_ptr<float>() : nullptr, ws.data_ptr(),
                           current_launch_stream()),
        "lse_backward");
  return {dx, dy, output_mask[2] ? dscale.to(scale.scalar_type()).reshape(scale.sizes())
                                  : scale.new_empty({0})};
}

namespace {

// The ids as device pointers (both null without ids: the pairs (i, i) are the positives).
cuda::Labels label_pointers(const at::Tensor& row_ids, const at::Tensor& col_ids) {
  if (row_ids.numel() == 0) return cuda::Labels{nullptr, nullptr};
  return cuda::Labels{row_ids.data_ptr<int64_t>(), col_ids.data_ptr<int64_t>()};
}

// The ids of a softplus launch: none (the plain pair) or the label-aware pair's.
struct SoftplusLabels {
  bool labelled = false;
  at::Tensor row_ids, col_ids;  // contiguous, when labelled
};

SoftplusLabels softplus_labels(const char* op, const at::Tensor& row_ids, const at::Tensor& col_ids,
                               const at::Tensor& x, const at::Tensor& y) {
  check_labels(op, row_ids, col_ids, x, y, false);
  return SoftplusLabels{true, row_ids.contiguous(), col_ids.contiguous()};
}

// The softplus rows of the plain pair (the diagonal left out when mask_diag) or of the label-aware
// one: checks, centring, outputs, workspace and the launch.
at::Tensor softplus_rows(const char* op, const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& scale,
                         const at::Tensor& bias, const SoftplusLabels& labels, const std::string& sim,
                         bool mask_diag, bool checks, c10::string_view path) {
  dtype_of(x_in.scalar_type());
  LaunchDeviceGuard guard(x_in.device());
  if (checks) {
    check_finite(op, "x", x_in);
    check_finite(op, "y", y_in);
  }
  const auto [xc, yc] = centred_if_euclidean(x_in, y_in, sim);
  auto x = xc.contiguous(), y = yc.contiguous();
  auto s = device_scale(scale, x, checks);
  auto t = device_bias(bias, x, checks);
  const auto p = problem(x, y, s, sim, mask_diag, path);
  auto row = at::empty({x.size(0)}, x.options().dtype(at::kFloat));
  auto ws = at::empty({static_cast<int64_t>(cuda::softplus_forward_workspace(p)) + 1}, x.options().dtype(at::kByte));
  const auto stream = current_launch_stream();
  if (labels.labelled) {
    check(cuda::label_softplus_forward(p, label_pointers(labels.row_ids, labels.col_ids), t.data_ptr<float>(),
                                       row.data_ptr<float>(), ws.data_ptr(), stream),
          "label_softplus_forward");
  } else {
    check(cuda::softplus_forward(p, t.data_ptr<float>(), row.data_ptr<float>(), ws.data_ptr(), stream),
          "softplus_forward");
  }
  return row;
}

// dx, dy, dscale, dbias of the plain or the label-aware softplus pair.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_grads(
    const char* op, const at::Tensor& grad_row, const at::Tensor& x_in, const at::Tensor& y_in,
    const at::Tensor& scale, const at::Tensor& bias, const SoftplusLabels& labels, const std::string& sim,
    bool mask_diag, std::array<bool, 4> output_mask, bool checks, c10::string_view path) {
  dtype_of(x_in.scalar_type());
  TORCH_CHECK(grad_row.dim() == 1 && grad_row.numel() == x_in.size(0), op, ": grad_row must have M = ",
              x_in.size(0), " elements, got shape ", grad_row.sizes());
  LaunchDeviceGuard guard(x_in.device());
  const auto [xc, yc] = centred_if_euclidean(x_in, y_in, sim);
  auto x = xc.contiguous(), y = yc.contiguous();
  auto s = device_scale(scale, x, checks);
  auto t = device_bias(bias, x, checks);
  const auto p = problem(x, y, s, sim, mask_diag, path);
  auto gr = grad_row.to(at::kFloat).contiguous();
  auto dx = output_mask[0] ? at::empty_like(x) : x.new_empty({0});
  auto dy = output_mask[1] ? at::empty_like(y) : y.new_empty({0});
  auto f32 = x.options().dtype(at::kFloat);
  auto dscale = at::empty({output_mask[2] ? 1 : 0}, f32);
  auto dbias = at::empty({output_mask[3] ? 1 : 0}, f32);
  auto ws = at::empty({static_cast<int64_t>(cuda::softplus_backward_workspace(p)) + 1}, x.options().dtype(at::kByte));
  void* dxp = output_mask[0] ? dx.data_ptr() : nullptr;
  void* dyp = output_mask[1] ? dy.data_ptr() : nullptr;
  float* dsp = output_mask[2] ? dscale.data_ptr<float>() : nullptr;
  float* dbp = output_mask[3] ? dbias.data_ptr<float>() : nullptr;
  const auto stream = current_launch_stream();
  if (labels.labelled) {
    check(cuda::label_softplus_backward(p, label_pointers(labels.row_ids, labels.col_ids), t.data_ptr<float>(),
                                        gr.data_ptr<float>(), dxp, dyp, dsp, dbp, ws.data_ptr(), stream),
          "label_softplus_backward");
  } else {
    check(cuda::softplus_backward(p, t.data_ptr<float>(), gr.data_ptr<float>(), dxp, dyp, dsp, dbp, ws.data_ptr(),
                                  stream),
          "softplus_backward");
  }
  return {dx, dy,
          output_mask[2] ? dscale.to(scale.scalar_type()).reshape(scale.sizes()) : scale.new_empty({0}),
          output_mask[3] ? dbias.to(bias.scalar_type()).reshape(bias.sizes()) : bias.new_empty({0})};
}

}  // namespace

at::Tensor softplus_fwd_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
                             c10::string_view similarity, bool mask_diag, bool checks, c10::string_view path) {
  const std::string sim(similarity);
  check_common("softplus_fwd", x, y, scale, sim);
  return softplus_rows("softplus_fwd", x, y, scale, bias, SoftplusLabels{}, sim, mask_diag, checks, path);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_bwd_cuda(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, c10::string_view similarity, bool mask_diag, std::array<bool, 4> output_mask,
    bool checks, c10::string_view path) {
  const std::string sim(similarity);
  check_common("softplus_bwd", x, y, scale, sim);
  return softplus_grads("softplus_bwd", grad_row, x, y, scale, bias, SoftplusLabels{}, sim, mask_diag, output_mask,
                        checks, path);
}

// The total and its gradients (op_schema.h). The CUDA kernels have no one-pass form yet: the
// forward, then the backward with an upstream gradient of 1 per row, the diagonal masked when it
// is not a negative; the positives' terms softplus(-(L_ii + t)), O(min(M, N) D), are added here
// with ATen on the device:
//   G_ii = -sigmoid(-(L_ii + t)),  dx_i += s G_ii d sim_ii / d x_i,  dy_i += s G_ii d sim_ii / d y_i,
//   dscale += sum_i G_ii sim_ii,  dbias += sum_i G_ii.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> softplus_total_cuda(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    c10::string_view similarity, c10::string_view diagonal, std::array<bool, 4> output_mask, bool checks,
    c10::string_view path) {
  const bool positive = diagonal == "positive";
  TORCH_CHECK(positive || diagonal == "masked" || diagonal == "negative",
              "diagonal must be 'negative', 'masked' or 'positive', got '", std::string(diagonal), "'");
  const bool mask = diagonal != "negative";
  auto row = softplus_fwd_cuda(x, y, scale, bias, similarity, mask, checks, path);
  auto [dx, dy, dscale, dbias] = softplus_bwd_cuda(at::ones_like(row), x, y, scale, bias, similarity, mask,
                                                   output_mask, checks, path);
  auto total = row.sum();
  if (!positive) return {total, dx, dy, dscale, dbias};
  const std::string sim(similarity);
  const int64_t n = std::min(x.size(0), y.size(0));
  const auto [xc, yc] = centred_if_euclidean(x, y, sim);
  auto xd = xc.narrow(0, 0, n).to(at::kFloat), yd = yc.narrow(0, 0, n).to(at::kFloat);
  auto s = scale.to(x.device(), at::kFloat).reshape({});
  auto t = bias.to(x.device(), at::kFloat).reshape({});
  auto diff = xd - yd;
  auto sim_ii = sim == "dot" ? (xd * yd).sum(1) : (sim == "euclidean" ? -(diff * diff).sum(1) : -diff.abs().sum(1));
  auto z = s * sim_ii + t;
  total = total + at::softplus(-z).sum();
  auto g = -at::sigmoid(-z);  // d softplus(-z) / dz
  // d sim / d x_i: dot y_i, euclidean 2 (y_i - x_i), l1 -sign(x_i - y_i); d sim / d y_i the mirror
  auto ddx = sim == "dot" ? yd : (sim == "euclidean" ? -2 * diff : -at::sign(diff));
  auto ddy = sim == "dot" ? xd : (sim == "euclidean" ? 2 * diff : at::sign(diff));
  if (output_mask[0]) dx.narrow(0, 0, n).add_((s * g.unsqueeze(1) * ddx).to(dx.scalar_type()));
  if (output_mask[1]) dy.narrow(0, 0, n).add_((s * g.unsqueeze(1) * ddy).to(dy.scalar_type()));
  if (output_mask[2]) dscale.add_((g * sim_ii).sum().to(dscale.scalar_type()));
  if (output_mask[3]) dbias.add_(g.sum().to(dbias.scalar_type()));
  return {total, dx, dy, dscale, dbias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_lse_fwd_cuda(
    const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& scale, const at::Tensor& row_ids_in,
    const at::Tensor& col_ids_in, c10::string_view similarity, bool mask_diag, bool compute_col, bool checks,
    bool /*deterministic: the label kernels always are*/, c10::string_view path) {
  const std::string sim(similarity);
  check_common("label_lse_fwd", x_in, y_in, scale, sim);
  check_labels("label_lse_fwd", row_ids_in, col_ids_in, x_in, y_in, mask_diag);
  dtype_of(x_in.scalar_type());
  LaunchDeviceGuard guard(x_in.device());
  if (checks) {
    check_finite("label_lse_fwd", "x", x_in);
    check_finite("label_lse_fwd", "y", y_in);
  }
  const auto [xc, yc] = centred_if_euclidean(x_in, y_in, sim);
  auto x = xc.contiguous(), y = yc.contiguous();
  auto row_ids = row_ids_in.contiguous(), col_ids = col_ids_in.contiguous();
  auto s = device_scale(scale, x, checks);
  const auto p = problem(x, y, s, sim, mask_diag, path);
  auto opts = x.options().dtype(at::kFloat);
  const int64_t nc = compute_col ? y.size(0) : 0;
  auto rn = at::empty({x.size(0)}, opts), rp = at::empty({x.size(0)}, opts), rs = at::empty({x.size(0)}, opts);
  auto cn = at::empty({nc}, opts), cp = at::empty({nc}, opts), cs = at::empty({nc}, opts);
  auto col = [&](at::Tensor& t) { return compute_col ? t.data_ptr<float>() : nullptr; };
  const cuda::LabelStats out{rn.data_ptr<float>(), rp.data_ptr<float>(), rs.data_ptr<float>(),
                             col(cn), col(cp), col(cs)};
  auto ws = at::empty({static_cast<int64_t>(cuda::label_forward_workspace(p)) + 1}, x.options().dtype(at::kByte));
  check(cuda::label_forward(p, label_pointers(row_ids, col_ids), out, compute_col, ws.data_ptr(),
                            current_launch_stream()),
        "label_forward");
  return {rn, cn, rp, cp, rs, cs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> label_lse_bwd_cuda(
    at::TensorList grads, const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& scale,
    const at::Tensor& row_ids_in, const at::Tensor& col_ids_in, at::TensorList lse, c10::string_view similarity,
    bool mask_diag, std::array<bool, 3> output_mask, bool checks, c10::string_view path) {
  const std::string sim(similarity);
  check_common("label_lse_bwd", x_in, y_in, scale, sim);
  check_labels("label_lse_bwd", row_ids_in, col_ids_in, x_in, y_in, mask_diag);
  dtype_of(x_in.scalar_type());
  const bool use_col = check_label_bwd("label_lse_bwd", grads, lse, x_in, y_in, at::kFloat);
  LaunchDeviceGuard guard(x_in.device());
  const auto [xc, yc] = centred_if_euclidean(x_in, y_in, sim);
  auto x = xc.contiguous(), y = yc.contiguous();
  auto row_ids = row_ids_in.contiguous(), col_ids = col_ids_in.contiguous();
  auto s = device_scale(scale, x, checks);
  const auto p = problem(x, y, s, sim, mask_diag, path);
  std::array<at::Tensor, 6> g;
  std::array<at::Tensor, 4> l;
  for (int k = 0; k < 6; ++k) g[k] = grads[k].contiguous();
  for (int k = 0; k < 4; ++k) l[k] = lse[k].contiguous();
  auto ptr = [](const at::Tensor& t, bool present) { return present ? t.data_ptr<float>() : nullptr; };
  const cuda::LabelGrads lg{ptr(g[0], true), ptr(g[1], use_col), ptr(g[2], true), ptr(g[3], use_col),
                            ptr(g[4], true), ptr(g[5], use_col), ptr(l[0], true), ptr(l[1], use_col),
                            ptr(l[2], true), ptr(l[3], use_col)};
  auto dx = output_mask[0] ? at::empty_like(x) : x.new_empty({0});
  auto dy = output_mask[1] ? at::empty_like(y) : y.new_empty({0});
  auto dscale = at::empty({output_mask[2] ? 1 : 0}, x.options().dtype(at::kFloat));
  auto ws = at::empty({static_cast<int64_t>(cuda::label_backward_workspace(p)) + 1}, x.options().dtype(at::kByte));
  check(cuda::label_backward(p, label_pointers(row_ids, col_ids), lg, output_mask[0] ? dx.data_ptr() : nullptr,
                             output_mask[1] ? dy.data_ptr() : nullptr,
                             output_mask[2] ? dscale.data_ptr<float>() : nullptr, ws.data_ptr(),
                             current_launch_stream()),
        "label_backward");
  return {dx, dy, output_mask[2] ? dscale.to(scale.scalar_type()).reshape(scale.sizes())
                                  : scale.new_empty({0})};
}

at::Tensor label_softplus_fwd_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
                                   const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids,
                                   c10::string_view similarity, bool checks, c10::string_view path) {
  const std::string sim(similarity);
  check_common("label_softplus_fwd", x, y, scale, sim);
  const auto labels = softplus_labels("label_softplus_fwd", row_ids, col_ids, x, y);
  return softplus_rows("label_softplus_fwd", x, y, scale, bias, labels, sim, false, checks, path);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_bwd_cuda(
    const at::Tensor& grad_row, const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale,
    const at::Tensor& bias, const at::Tensor& row_ids, const at::Tensor& col_ids, c10::string_view similarity,
    std::array<bool, 4> output_mask, bool checks, c10::string_view path) {
  const std::string sim(similarity);
  check_common("label_softplus_bwd", x, y, scale, sim);
  const auto labels = softplus_labels("label_softplus_bwd", row_ids, col_ids, x, y);
  return softplus_grads("label_softplus_bwd", grad_row, x, y, scale, bias, labels, sim, false, output_mask, checks,
                        path);
}

// The total and its gradients: the forward, then the backward with a unit gradient per row (the
// CUDA kernels have no one-pass form).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> label_softplus_total_cuda(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& scale, const at::Tensor& bias,
    const at::Tensor& row_ids, const at::Tensor& col_ids, c10::string_view similarity,
    std::array<bool, 4> output_mask, bool checks, c10::string_view path) {
  auto row = label_softplus_fwd_cuda(x, y, scale, bias, row_ids, col_ids, similarity, checks, path);
  auto [dx, dy, dscale, dbias] = label_softplus_bwd_cuda(at::ones_like(row), x, y, scale, bias, row_ids, col_ids,
                                                         similarity, output_mask, checks, path);
  return {row.sum(), dx, dy, dscale, dbias};
}

}  // namespace mmcl_fast
