// CPU kernels of the operands op pair (see ops.cpp for the schema).
//
// With a in R^{M x D}, b in R^{N x D}, M <= N, and the loss's similarity:
//   forward:  cosine: n_i = ||a_i||, ka_i = a_i / max(n_i, eps)   (eps = 1e-12, as F.normalize),
//                     kb_j likewise, pos_i = <ka_i, kb_i>
//             dot / euclidean / l1: ka = a, kb = b (copies), pos_i = sim(a_i, b_i) with
//                     sim = <.,.>, -||.-.||^2 or -||.-.||_1
//   backward: given gka, gkb (may be empty: zero) and gpos (may be empty: zero),
//             ga_i = gka_i + gpos_i d pos_i / d ka_i          (i < M)
//             gb_j = gkb_j + [j < M] gpos_j d pos_j / d kb_j
//             d pos/d ka = kb, -2 (ka - kb) or -sign(ka - kb); d pos/d kb = ka, 2 (ka - kb) or
//             sign(ka - kb)
//             cosine then maps through the normalisation: da_i = (ga_i - ka_i <ka_i, ga_i>) / n_i
//             when n_i >= eps, else ga_i / eps (the clamped denominator is a constant).
//
// Each row is one pass over its D features (row reductions accumulate in float64); rows are split
// into contiguous ranges on the kernels' worker pool (worker_pool.h). No OpenMP region opens:
// beside a busy process, each of the ATen elementwise ops these kernels replace could leave the
// caller spin-waiting for a descheduled OpenMP thread.
#include "operands_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "../similarity.h"
#include "runtime/worker_pool.h"

namespace mmcl_fast {
namespace {

constexpr double kNormEps = 1e-12;
constexpr int64_t kGrainElements = 16384;  // features per range, at least

// The loss's similarity as the kernels' (cosine is dot on normalised rows) and whether to normalise.
std::pair<Similarity, bool> parse_loss_similarity(const std::string& similarity) {
  if (similarity == "cosine") return {Similarity::Dot, true};
  Similarity sim;
  TORCH_CHECK(parse_similarity(similarity.c_str(), &sim), "operands: unknown similarity '", similarity,
              "' (expected cosine, dot, euclidean or l1)");
  return {sim, false};
}

template <typename T>
T sign_of(T v) { return T((v > T(0)) - (v < T(0))); }

template <typename T>
double positive_sim(Similarity kind, const T* x, const T* y, int64_t D) {
  double acc = 0;
  switch (kind) {
    case Similarity::Dot:
      for (int64_t k = 0; k < D; ++k) acc += double(x[k]) * double(y[k]);
      return acc;
    case Similarity::Euclidean:
      for (int64_t k = 0; k < D; ++k) { const double d = double(x[k]) - double(y[k]); acc += d * d; }
      return -acc;
    case Similarity::L1:
      for (int64_t k = 0; k < D; ++k) acc += std::abs(double(x[k]) - double(y[k]));
      return -acc;
  }
  return acc;
}

// Writes k = x / max(||x||, eps) and returns ||x||.
template <typename T>
double normalise_row(const T* x, T* k, int64_t D) {
  double sq = 0;
  for (int64_t i = 0; i < D; ++i) sq += double(x[i]) * double(x[i]);
  const double n = std::sqrt(sq);
  const double inv = 1.0 / std::max(n, kNormEps);
  for (int64_t i = 0; i < D; ++i) k[i] = T(double(x[i]) * inv);  // rounded once, as x / n is
  return n;
}

// g += gpos * d pos / d own, where pos = sim(own, other): every similarity here is symmetric,
// so the same expression serves the ka and the kb side.
template <typename T>
void add_positive_grad(Similarity kind, T gpos, const T* own, const T* other, T* g, int64_t D) {
  switch (kind) {
    case Similarity::Dot:
      for (int64_t k = 0; k < D; ++k) g[k] += gpos * other[k];
      return;
    case Similarity::Euclidean:
      for (int64_t k = 0; k < D; ++k) g[k] -= T(2) * gpos * (own[k] - other[k]);
      return;
    case Similarity::L1:
      for (int64_t k = 0; k < D; ++k) g[k] -= gpos * sign_of(own[k] - other[k]);
      return;
  }
}

// In place: g <- (g - k <k, g>) / n, or g / eps when the norm was clamped.
template <typename T>
void through_normalisation(const T* k, double n, T* g, int64_t D) {
  if (n < kNormEps) {
    for (int64_t i = 0; i < D; ++i) g[i] = T(double(g[i]) / kNormEps);
    return;
  }
  double kg = 0;
  for (int64_t i = 0; i < D; ++i) kg += double(k[i]) * double(g[i]);
  const T inv = T(1.0 / n), c = T(kg);
  for (int64_t i = 0; i < D; ++i) g[i] = (g[i] - k[i] * c) * inv;
}

void check_matrix(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 2, op, ": ", name, " must be 2-D (batch, dim), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64 on CPU, got ", t.scalar_type());
}

void check_vector_or_empty(const char* op, const char* name, const at::Tensor& t, int64_t n,
                           at::ScalarType dtype) {
  TORCH_CHECK(t.numel() == 0 || (t.dim() == 1 && t.size(0) == n), op, ": ", name,
              " must be empty or have ", n, " elements, got ", t.sizes());
  TORCH_CHECK(t.numel() == 0 || t.scalar_type() == dtype, op, ": ", name, " must be ", dtype,
              ", got ", t.scalar_type());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> operands_fwd_cpu(
    const at::Tensor& a_in, const at::Tensor& b_in, const std::string& similarity) {
  const auto parsed = parse_loss_similarity(similarity);  // (kernel similarity, normalise)
  const Similarity kind = parsed.first;
  const bool cosine = parsed.second;
  check_matrix("operands_fwd", "a", a_in);
  check_matrix("operands_fwd", "b", b_in);
  TORCH_CHECK(a_in.scalar_type() == b_in.scalar_type(), "operands_fwd: a and b must have the same dtype, got ",
              a_in.scalar_type(), " and ", b_in.scalar_type());
  TORCH_CHECK(a_in.size(1) == b_in.size(1), "operands_fwd: a and b must share the feature dimension, got ",
              a_in.sizes(), " and ", b_in.sizes());
  TORCH_CHECK(a_in.size(0) <= b_in.size(0), "operands_fwd: a may not have more rows than b, got ",
              a_in.sizes(), " and ", b_in.sizes());
  const auto a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t M = a.size(0), N = b.size(0), D = a.size(1);
  auto ka = at::empty_like(a), kb = at::empty_like(b);
  auto pos = at::empty({M}, a.options());
  auto norm_a = at::empty({cosine ? M : 0}, a.options().dtype(at::kDouble));
  auto norm_b = at::empty({cosine ? N : 0}, a.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "operands_fwd_cpu", [&] {
    using T = scalar_t;
    const T* pa = a.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    T* pka = ka.data_ptr<T>();
    T* pkb = kb.data_ptr<T>();
    T* ppos = pos.data_ptr<T>();
    double* pna = cosine ? norm_a.data_ptr<double>() : nullptr;
    double* pnb = cosine ? norm_b.data_ptr<double>() : nullptr;
    run_ranges(N, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(D, 1)), at::get_num_threads(),
               [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        if (j < M) {
          if (cosine) pna[j] = normalise_row(pa + j * D, pka + j * D, D);
          else std::copy(pa + j * D, pa + (j + 1) * D, pka + j * D);
        }
        if (cosine) pnb[j] = normalise_row(pb + j * D, pkb + j * D, D);
        else std::copy(pb + j * D, pb + (j + 1) * D, pkb + j * D);
        if (j < M) ppos[j] = T(positive_sim(kind, pka + j * D, pkb + j * D, D));
      }
    });
  });
  return {ka, kb, pos, norm_a, norm_b};
}

std::tuple<at::Tensor, at::Tensor> operands_bwd_cpu(
    const at::Tensor& grad_ka, const at::Tensor& grad_kb, const at::Tensor& grad_pos,
    const at::Tensor& ka_in, const at::Tensor& kb_in, const at::Tensor& norm_a,
    const at::Tensor& norm_b, const std::string& similarity, std::array<bool, 2> output_mask) {
  const auto parsed = parse_loss_similarity(similarity);  // (kernel similarity, normalise)
  const Similarity kind = parsed.first;
  const bool cosine = parsed.second;
  check_matrix("operands_bwd", "ka", ka_in);
  check_matrix("operands_bwd", "kb", kb_in);
  const auto ka = ka_in.contiguous(), kb = kb_in.contiguous();
  const int64_t M = ka.size(0), N = kb.size(0), D = ka.size(1);
  const auto dtype = ka.scalar_type();
  TORCH_CHECK(kb.scalar_type() == dtype && kb.size(1) == D && M <= N,
              "operands_bwd: ka and kb must share dtype and features, with M <= N, got ", ka.sizes(),
              " and ", kb.sizes());
  TORCH_CHECK(grad_ka.numel() == 0 || grad_ka.sizes() == ka.sizes(),
              "operands_bwd: grad_ka must be empty or shaped like ka ", ka.sizes(), ", got ", grad_ka.sizes());
  TORCH_CHECK(grad_kb.numel() == 0 || grad_kb.sizes() == kb.sizes(),
              "operands_bwd: grad_kb must be empty or shaped like kb ", kb.sizes(), ", got ", grad_kb.sizes());
  TORCH_CHECK(grad_ka.numel() == 0 || grad_ka.scalar_type() == dtype, "operands_bwd: grad_ka must be ", dtype);
  TORCH_CHECK(grad_kb.numel() == 0 || grad_kb.scalar_type() == dtype, "operands_bwd: grad_kb must be ", dtype);
  check_vector_or_empty("operands_bwd", "grad_pos", grad_pos, M, dtype);
  if (cosine) {
    check_vector_or_empty("operands_bwd", "norm_a", norm_a, M, at::kDouble);
    check_vector_or_empty("operands_bwd", "norm_b", norm_b, N, at::kDouble);
    TORCH_CHECK(norm_a.numel() == M && norm_b.numel() == N,
                "operands_bwd: cosine needs norm_a [M] and norm_b [N] from operands_fwd");
  }
  const bool need_a = output_mask[0], need_b = output_mask[1];
  const auto gka = grad_ka.numel() ? grad_ka.contiguous() : grad_ka;
  const auto gkb = grad_kb.numel() ? grad_kb.contiguous() : grad_kb;
  const auto gpos = grad_pos.numel() ? grad_pos.contiguous() : grad_pos;
  auto da = need_a ? at::empty_like(ka) : at::empty({0}, ka.options());
  auto db = need_b ? at::empty_like(kb) : at::empty({0}, kb.options());
  if (!need_a && !need_b) return {da, db};
  AT_DISPATCH_FLOATING_TYPES(dtype, "operands_bwd_cpu", [&] {
    using T = scalar_t;
    const T* pka = ka.data_ptr<T>();
    const T* pkb = kb.data_ptr<T>();
    const T* pga = gka.numel() ? gka.data_ptr<T>() : nullptr;
    const T* pgb = gkb.numel() ? gkb.data_ptr<T>() : nullptr;
    const T* pgp = gpos.numel() ? gpos.data_ptr<T>() : nullptr;
    const double* pna = cosine ? norm_a.data_ptr<double>() : nullptr;
    const double* pnb = cosine ? norm_b.data_ptr<double>() : nullptr;
    T* pda = need_a ? da.data_ptr<T>() : nullptr;
    T* pdb = need_b ? db.data_ptr<T>() : nullptr;
    run_ranges(N, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(D, 1)), at::get_num_threads(),
               [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const T gp = (pgp != nullptr && j < M) ? pgp[j] : T(0);
        if (need_a && j < M) {
          T* g = pda + j * D;
          if (pga) std::copy(pga + j * D, pga + (j + 1) * D, g);
          else std::fill(g, g + D, T(0));
          if (gp != T(0)) add_positive_grad(kind, gp, pka + j * D, pkb + j * D, g, D);
          if (cosine) through_normalisation(pka + j * D, pna[j], g, D);
        }
        if (need_b) {
          T* g = pdb + j * D;
          if (pgb) std::copy(pgb + j * D, pgb + (j + 1) * D, g);
          else std::fill(g, g + D, T(0));
          if (gp != T(0)) add_positive_grad(kind, gp, pkb + j * D, pka + j * D, g, D);
          if (cosine) through_normalisation(pkb + j * D, pnb[j], g, D);
        }
      }
    });
  });
  return {da, db};
}

}  // namespace mmcl_fast
