// The CUDA kernels of csrc/cuda run by the host emulator (csrc/cuda/emulation) on small problems
// and compared with a float64 reference of the formulas in csrc/cuda/pairwise_lse.cuh: both
// reductions, the log-sum-exp pair and the softplus pair.
// Torch-free, so CMakeLists.txt also builds it with ThreadSanitizer and AddressSanitizer.
//
//   emulated_kernels_test [--quick] [--concurrent-blocks K] [--overrun] [--path simt|tc|both]
//   emulated_kernels_test --deadlock
//
// --quick runs one case per similarity and dtype; --path picks the SIMT kernels, the tensor-core
// (WMMA) kernels, or both (the default; l1 runs SIMT on either); --overrun tells the kernels that x has one row
// more than was allocated (AddressSanitizer must report it); --deadlock launches a kernel whose
// threads wait for each other (the fiber emulator must stop it). Exit status 0 when every case is
// within tolerance.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "aborts_in_child.h"
#include "cuda/emulation/cuda_emulation_device.h"
#include "cuda/pairwise_lse.cuh"
#include "similarity.h"

namespace {

using mmcl_fast::Similarity;
using mmcl_fast::cuda::DType;

struct Case {
  int M, N, D;
  DType dtype;
  Similarity sim;
  bool mask_diag, deterministic;
  float scale;
  mmcl_fast::cuda::MathPath path;
};

const char* dtype_name(DType d) { return d == DType::F32 ? "f32" : d == DType::F16 ? "f16" : "bf16"; }
const char* sim_name(Similarity s) { return s == Similarity::Dot ? "dot" : s == Similarity::Euclidean ? "euclidean" : "l1"; }

// Values representable in the case's dtype, stored as that dtype.
struct Operand {
  std::vector<double> exact;          // the stored values, as float64
  std::vector<unsigned char> bytes;   // exactly the stored values (heap buffer of exact size)
};

Operand make_operand(int rows, int D, DType dt, double spread, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  const size_t n = size_t(rows) * D, width = dt == DType::F32 ? 4 : 2;
  Operand op{std::vector<double>(n), std::vector<unsigned char>(n * width)};
  for (size_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(normal(rng) * spread);
    if (dt == DType::F32) {
      std::memcpy(&op.bytes[4 * i], &v, 4);
      op.exact[i] = v;
    } else if (dt == DType::F16) {
      const __half h = __float2half(v);
      std::memcpy(&op.bytes[2 * i], &h, 2);
      op.exact[i] = __half2float(h);
    } else {
      const __nv_bfloat16 h = __float2bfloat16(v);
      std::memcpy(&op.bytes[2 * i], &h, 2);
      op.exact[i] = __bfloat162float(h);
    }
  }
  return op;
}

double read_value(const std::vector<unsigned char>& bytes, size_t i, DType dt) {
  if (dt == DType::F32) { float v; std::memcpy(&v, &bytes[4 * i], 4); return v; }
  unsigned short bits;
  std::memcpy(&bits, &bytes[2 * i], 2);
  return dt == DType::F16 ? __half2float(__ushort_as_half(bits)) : __bfloat162float(__ushort_as_bfloat16(bits));
}

double rel_err(const std::vector<double>& out, const std::vector<double>& ref, double floor) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) { num += (out[i] - ref[i]) * (out[i] - ref[i]); den += ref[i] * ref[i]; }
  return std::sqrt(num) / std::max(std::sqrt(den), floor);
}

double similarity(const double* a, const double* b, int D, Similarity s) {
  double acc = 0;
  for (int k = 0; k < D; ++k) {
    const double d = a[k] - b[k];
    acc += s == Similarity::Dot ? a[k] * b[k] : s == Similarity::Euclidean ? -d * d : -std::fabs(d);
  }
  return acc;
}

double dsim_da(double a, double b, Similarity s) {  // d sim / d a_k
  if (s == Similarity::Dot) return b;
  if (s == Similarity::Euclidean) return 2 * (b - a);
  return a > b ? -1 : (a < b ? 1 : 0);
}

double softplus(double z) { return std::max(z, 0.0) + std::log1p(std::exp(-std::fabs(z))); }

// The softplus pair on the case's problem p (logits L in float64, -inf where masked) against
// float64, with bias t and a random row gradient; prints one line.
bool run_softplus(const Case& c, const mmcl_fast::cuda::Problem& p, const Operand& x, const Operand& y,
                  const std::vector<double>& L, std::mt19937& rng, bool tc) {
  const int M = c.M, N = c.N, D = c.D;
  const double scale = c.scale, t = -1.5;
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  std::vector<float> grad_row(M);
  for (auto& g : grad_row) g = uni(rng);
  std::vector<double> row(M, 0), dx(size_t(M) * D, 0), dy(size_t(N) * D, 0);
  double dscale = 0, dbias = 0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      const double l = L[size_t(i) * N + j];
      if (l == -INFINITY) continue;
      row[i] += softplus(l + t);
      const double g = grad_row[i] / (1 + std::exp(-(l + t)));
      dscale += g * l / scale;
      dbias += g;
      for (int k = 0; k < D; ++k) {
        const double a = x.exact[size_t(i) * D + k], b = y.exact[size_t(j) * D + k];
        dx[size_t(i) * D + k] += scale * g * dsim_da(a, b, c.sim);
        dy[size_t(j) * D + k] += scale * g * dsim_da(b, a, c.sim);
      }
    }
  std::vector<float> bias_buf{static_cast<float>(t)}, row_out(M);
  std::vector<unsigned char> ws_f(mmcl_fast::cuda::softplus_forward_workspace(p));
  cudaError_t err = mmcl_fast::cuda::softplus_forward(p, bias_buf.data(), row_out.data(), ws_f.data(), nullptr);
  if (err != cudaSuccess) { std::printf("softplus_forward: %s\n", cudaGetErrorString(err)); return false; }
  const size_t width = c.dtype == DType::F32 ? 4 : 2;
  std::vector<unsigned char> dx_out(size_t(M) * D * width), dy_out(size_t(N) * D * width);
  std::vector<float> dscale_out(1), dbias_out(1);
  std::vector<unsigned char> ws_b(mmcl_fast::cuda::softplus_backward_workspace(p));
  err = mmcl_fast::cuda::softplus_backward(p, bias_buf.data(), grad_row.data(), dx_out.data(), dy_out.data(),
                                           dscale_out.data(), dbias_out.data(), ws_b.data(), nullptr);
  if (err != cudaSuccess) { std::printf("softplus_backward: %s\n", cudaGetErrorString(err)); return false; }
  std::vector<double> row_d(row_out.begin(), row_out.end()), dx_d(dx.size()), dy_d(dy.size());
  for (size_t i = 0; i < dx.size(); ++i) dx_d[i] = read_value(dx_out, i, c.dtype);
  for (size_t i = 0; i < dy.size(); ++i) dy_d[i] = read_value(dy_out, i, c.dtype);
  const double tol = c.dtype == DType::F32 ? (tc ? 5e-3 : 1e-4) : 1e-2;
  const double errs[5] = {rel_err(row_d, row, 1.0), rel_err(dx_d, dx, 1e-3), rel_err(dy_d, dy, 1e-3),
                          std::fabs(dscale_out[0] - dscale) / std::max(std::fabs(dscale), 1e-3),
                          std::fabs(dbias_out[0] - dbias) / std::max(std::fabs(dbias), 1e-3)};
  bool ok = true;
  for (double e : errs) ok = ok && e < tol;
  std::printf("%-4s %-4s %-9s M=%d N=%d D=%d mask=%d softplus t=%g  rel err row %.1e dx %.1e dy %.1e dscale %.1e "
              "dbias %.1e  %s\n", tc ? "tc" : "simt", dtype_name(c.dtype), sim_name(c.sim), M, N, D, c.mask_diag, t,
              errs[0], errs[1], errs[2], errs[3], errs[4], ok ? "ok" : "FAIL");
  return ok;
}

bool run_case(const Case& c, std::mt19937& rng, bool overrun) {
  const double spread = c.sim == Similarity::L1 ? 1.0 / c.D : 1.0 / std::sqrt(double(c.D));
  const Operand x = make_operand(c.M, c.D, c.dtype, spread, rng), y = make_operand(c.N, c.D, c.dtype, spread, rng);
  const float scale = c.scale;
  const int M = c.M, N = c.N, D = c.D;

  // float64 reference
  std::vector<double> L(size_t(M) * N), row(M, 0), col(N, 0);
  const double NEG = -INFINITY;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      L[size_t(i) * N + j] = (c.mask_diag && i == j) ? NEG : scale * similarity(&x.exact[size_t(i) * D], &y.exact[size_t(j) * D], D, c.sim);
  for (int i = 0; i < M; ++i) {
    double m = NEG, s = 0;
    for (int j = 0; j < N; ++j) m = std::max(m, L[size_t(i) * N + j]);
    for (int j = 0; j < N; ++j) s += std::exp(L[size_t(i) * N + j] - m);
    row[i] = m + std::log(s);
  }
  for (int j = 0; j < N; ++j) {
    double m = NEG, s = 0;
    for (int i = 0; i < M; ++i) m = std::max(m, L[size_t(i) * N + j]);
    for (int i = 0; i < M; ++i) s += std::exp(L[size_t(i) * N + j] - m);
    col[j] = m + std::log(s);
  }
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::vector<float> grad_row(M), grad_col(N);
  for (auto& g : grad_row) g = uni(rng);
  for (auto& g : grad_col) g = uni(rng);
  std::vector<double> dx(size_t(M) * D, 0), dy(size_t(N) * D, 0);
  double dscale = 0;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      const double l = L[size_t(i) * N + j];
      if (l == NEG) continue;
      const double g = grad_row[i] * std::exp(l - row[i]) + grad_col[j] * std::exp(l - col[j]);
      dscale += g * l / scale;
      for (int k = 0; k < D; ++k) {
        const double a = x.exact[size_t(i) * D + k], b = y.exact[size_t(j) * D + k];
        dx[size_t(i) * D + k] += scale * g * dsim_da(a, b, c.sim);
        dy[size_t(j) * D + k] += scale * g * dsim_da(b, a, c.sim);
      }
    }

  // emulated kernels
  std::vector<float> scale_buf{scale};
  mmcl_fast::cuda::Problem p{x.bytes.data(), y.bytes.data(), M + (overrun ? 1 : 0), N, D, c.dtype,
                             static_cast<int>(c.sim), scale_buf.data(), c.mask_diag, c.path};
  const bool tc = mmcl_fast::cuda::effective_path(p) == mmcl_fast::cuda::MathPath::TensorCore;
  std::vector<float> row_out(p.M), col_out(N);
  std::vector<unsigned char> ws_f(mmcl_fast::cuda::lse_forward_workspace(p, true, c.deterministic));
  cudaError_t err = mmcl_fast::cuda::lse_forward(p, row_out.data(), col_out.data(), true, c.deterministic,
                                                 ws_f.data(), nullptr);
  if (err != cudaSuccess) { std::printf("lse_forward: %s\n", cudaGetErrorString(err)); return false; }
  std::vector<float> row_lse(row_out.begin(), row_out.begin() + M), col_lse(col_out);
  if (overrun) return true;
  const size_t width = c.dtype == DType::F32 ? 4 : 2;
  std::vector<unsigned char> dx_out(size_t(M) * D * width), dy_out(size_t(N) * D * width);
  std::vector<float> dscale_out(1);
  std::vector<unsigned char> ws_b(mmcl_fast::cuda::lse_backward_workspace(p));
  err = mmcl_fast::cuda::lse_backward(p, grad_row.data(), grad_col.data(), row_lse.data(), col_lse.data(),
                                      dx_out.data(), dy_out.data(), dscale_out.data(), ws_b.data(), nullptr);
  if (err != cudaSuccess) { std::printf("lse_backward: %s\n", cudaGetErrorString(err)); return false; }

  std::vector<double> row_d(row_lse.begin(), row_lse.end()), col_d(col_lse.begin(), col_lse.end());
  std::vector<double> dx_d(dx.size()), dy_d(dy.size());
  for (size_t i = 0; i < dx.size(); ++i) dx_d[i] = read_value(dx_out, i, c.dtype);
  for (size_t i = 0; i < dy.size(); ++i) dy_d[i] = read_value(dy_out, i, c.dtype);
  // TF32 keeps 10 mantissa bits of float32 inputs (and of G in the backward)
  const double tol = c.dtype == DType::F32 ? (tc ? 5e-3 : 1e-4) : 1e-2;
  const double errs[5] = {rel_err(row_d, row, 1.0), rel_err(col_d, col, 1.0), rel_err(dx_d, dx, 1e-3),
                          rel_err(dy_d, dy, 1e-3), std::fabs(dscale_out[0] - dscale) / std::max(std::fabs(dscale), 1e-3)};
  bool ok = true;
  for (double e : errs) ok = ok && e < tol;
  std::printf("%-4s %-4s %-9s M=%d N=%d D=%d mask=%d det=%d scale=%g  rel err row %.1e col %.1e dx %.1e dy %.1e dscale %.1e  %s\n",
              tc ? "tc" : "simt", dtype_name(c.dtype), sim_name(c.sim), M, N, D, c.mask_diag, c.deterministic, scale, errs[0],
              errs[1], errs[2], errs[3], errs[4], ok ? "ok" : "FAIL");
  // the softplus reduction of the same tiles (it has no column pass: once per problem)
  if (!c.deterministic) ok = run_softplus(c, p, x, y, L, rng, tc) && ok;
  return ok;
}

// A block whose threads wait for each other in a cycle: lanes 0-15 of warp 0 wait at __syncwarp()
// for lanes 16-31, which wait at __syncthreads() for the whole block. On a GPU this hangs; the
// fiber emulator must stop it with its deadlock message instead.
__global__ void deadlocking_kernel() {
  if (threadIdx.x < 16) __syncwarp();
  else __syncthreads();
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, overrun = false;
  std::vector<mmcl_fast::cuda::MathPath> paths{mmcl_fast::cuda::MathPath::Simt, mmcl_fast::cuda::MathPath::TensorCore};
  for (int i = 1; i < argc; ++i) {
    const std::string arg(argv[i]);
    if (arg == "--deadlock") {  // in a child process: the emulator's stop is an abort
      const bool stopped = aborts_in_child([] {
        mmcl_fast::cuda::launch_kernel(deadlocking_kernel, dim3(1), dim3(64), nullptr);
        std::printf("the deadlocking kernel returned\n");
      });
      std::printf("%s\n", stopped ? "the emulator stopped the deadlocked block" : "the deadlock was not stopped");
      return stopped ? 0 : 1;
    }
    if (arg == "--quick") quick = true;
    else if (arg == "--overrun") overrun = true;
    else if (arg == "--path" && i + 1 < argc) {
      const std::string v(argv[++i]);
      if (v == "simt") paths = {mmcl_fast::cuda::MathPath::Simt};
      else if (v == "tc") paths = {mmcl_fast::cuda::MathPath::TensorCore};
      else if (v != "both") { std::fprintf(stderr, "--path takes simt, tc or both\n"); return 2; }
    }
    else if (arg == "--concurrent-blocks" && i + 1 < argc) mmcl_fast::cuda_emulation::set_concurrent_blocks(std::atoi(argv[++i]));
    else { std::fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
  }
  std::mt19937 rng(1234);
  std::vector<Case> cases;
  const DType dtypes[] = {DType::F32, DType::F16, DType::BF16};
  const Similarity sims[] = {Similarity::Dot, Similarity::Euclidean, Similarity::L1};
  int n = 0;
  for (auto path : paths)
    for (DType dt : dtypes)
      for (Similarity s : sims) {
        ++n;
        if (path == mmcl_fast::cuda::MathPath::TensorCore && s == Similarity::L1) continue;  // SIMT either way
        if (quick) cases.push_back({70, 70, 20, dt, s, n % 2 == 0, n % 3 == 0, 3.f, path});
        else
          for (int det = 0; det < 2; ++det)
            cases.push_back({70, 130, 20, dt, s, false, det == 1, 3.f, path}),
                cases.push_back({67, 67, 5, dt, s, true, det == 1, 3.f, path});
      }
  if (overrun) cases.resize(1);
  bool ok = true;
  for (const Case& c : cases) ok = run_case(c, rng, overrun) && ok;
  std::printf("%s\n", ok ? "all cases within tolerance" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
