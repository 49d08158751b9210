// Column-major GEMM for the CPU kernels: C = alpha op(A) op(B) + beta C (BLAS conventions).
//
// Calls the Fortran sgemm_/dgemm_ that torch's MKL/OpenBLAS exports (weakly bound). If a torch
// build does not export them, the same product runs through ATen's addmm_ on borrowed (from_blob)
// views. The kernels call gemm from their worker slots (worker_pool.h), each on a small tile, so
// every slot holds a SequentialBlasScope: MKL otherwise starts an OpenMP team per call, whose
// spinning threads collapse throughput as soon as another process competes for the cores.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>

extern "C" {
int MKL_Set_Num_Threads_Local(int) __attribute__((weak));  // MKL's C API (mkl_service.h)
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

// Makes BLAS calls on this thread single-threaded for the scope's lifetime (MKL's thread-local
// setting; 0 restores the global one). OpenBLAS and the ATen fallback already run sequentially
// inside an OpenMP parallel region.
class SequentialBlasScope {
 public:
  SequentialBlasScope() : previous_(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
  ~SequentialBlasScope() {
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous_);
  }
  SequentialBlasScope(const SequentialBlasScope&) = delete;
  SequentialBlasScope& operator=(const SequentialBlasScope&) = delete;

 private:
  int previous_;
};

// True when the BLAS symbols were found (reported by backend_info()).
inline bool have_blas() { return sgemm_ != nullptr && dgemm_ != nullptr; }

}  // namespace mmcl_fast
