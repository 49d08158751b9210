// Column-major GEMM for the CPU kernels: C = alpha op(A) op(B) + beta C (BLAS conventions).
//
// Calls the Fortran sgemm_/dgemm_ that torch's MKL/OpenBLAS exports (weakly bound, single
// threaded inside at::parallel_for regions). If a torch build does not export them, the same
// product runs through ATen's addmm_ on borrowed (from_blob) views.
#pragma once

#include <ATen/ATen.h>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
            const float*, const int*, const float*, const int*, const float*, float*,
            const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
            const double*, const int*, const double*, const int*, const double*, double*,
            const int*) __attribute__((weak));
}

namespace mmcl_fast {

template <typename T>
void gemm_fallback(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
                   int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  // A column-major (r x c, ld) matrix is the row-major tensor of shape (c, r), strides (ld, 1),
  // transposed. C^T = op(B)^T op(A)^T in row-major terms.
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* p, int64_t rows, int64_t cols, int64_t ld) {
    return at::from_blob(const_cast<T*>(p), {cols, rows}, {ld, 1}, opts);
  };
  auto at_ = view(a, ta ? k : m, ta ? m : k, lda);  // = A^T
  auto bt_ = view(b, tb ? n : k, tb ? k : n, ldb);  // = B^T
  auto ct_ = view(c, m, n, ldc);                    // = C^T
  auto opa_t = ta ? at_.t() : at_;                  // op(A)^T
  auto opb_t = tb ? bt_.t() : bt_;                  // op(B)^T
  if (beta == T(0)) ct_.zero_();
  ct_.addmm_(opb_t, opa_t, beta == T(0) ? T(1) : beta, alpha);
}

inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (!sgemm_) return gemm_fallback(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const char tra = ta ? 'T' : 'N', trb = tb ? 'T' : 'N';
  const int im = int(m), in = int(n), ik = int(k), ila = int(lda), ilb = int(ldb), ilc = int(ldc);
  sgemm_(&tra, &trb, &im, &in, &ik, &alpha, a, &ila, b, &ilb, &beta, c, &ilc);
}

inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                 int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  if (!dgemm_) return gemm_fallback(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const char tra = ta ? 'T' : 'N', trb = tb ? 'T' : 'N';
  const int im = int(m), in = int(n), ik = int(k), ila = int(lda), ilb = int(ldb), ilc = int(ldc);
  dgemm_(&tra, &trb, &im, &in, &ik, &alpha, a, &ila, b, &ilb, &beta, c, &ilc);
}

// True when the BLAS symbols were found (reported by backend_info()).
inline bool have_blas() { return sgemm_ != nullptr && dgemm_ != nullptr; }

}  // namespace mmcl_fast
