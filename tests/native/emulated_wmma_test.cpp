// The emulator's nvcuda::wmma (csrc/cuda/emulation/cuda_emulation_wmma.h) against a float64
// matrix product, for every fragment type and layout the kernels may use, plus the rules it
// enforces. One warp per launch.
//
//   emulated_wmma_test                    every case; exit 0 when all match
//   emulated_wmma_test --misaligned       a load from a pointer 16 bytes off: the run must stop
//   emulated_wmma_test --divergent        lanes pass different pointers: the run must stop
//   emulated_wmma_test --assume-layout    a kernel that fills x[] as if lane l held elements
//                                         8l..8l+7 row-major: must print MISMATCH (the emulator's
//                                         layout is opaque, so layout-dependent code fails)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <type_traits>

#include "aborts_in_child.h"
#include "cuda/emulation/cuda_emulation_device.h"
#include "cuda/kernel_launch.cuh"

namespace {

namespace wmma = nvcuda::wmma;

template <typename T> using Storage = std::conditional_t<std::is_same_v<T, wmma::precision::tf32>, float, T>;

enum class Mode { Normal, Misaligned, Divergent, AssumeLayout };

template <typename T, typename LA, typename LB, int K>
void mma_kernel(const Storage<T>* a, const Storage<T>* b, const float* c, float* d, unsigned lda, unsigned ldb,
                int mode) {
  wmma::fragment<wmma::matrix_a, 16, 16, K, T, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, K, T, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, K, float> fc;
  const int lane = threadIdx.x % 32;
  if (mode == static_cast<int>(Mode::Misaligned)) {
    wmma::load_matrix_sync(fa, a + 16 / sizeof(Storage<T>), lda);
  } else if (mode == static_cast<int>(Mode::Divergent)) {
    wmma::load_matrix_sync(fa, lane == 3 ? a + 32 : a, lda);
  } else if (mode == static_cast<int>(Mode::AssumeLayout)) {
    // wrong on purpose: treats the fragment as row-major slices of 8 consecutive elements per lane
    for (int i = 0; i < fa.num_elements; ++i) {
      const int e = lane * fa.num_elements + i, r = e / K, k = e % K;
      fa.x[i] = std::is_same_v<LA, wmma::row_major> ? a[r * lda + k] : a[k * lda + r];
    }
  } else {
    wmma::load_matrix_sync(fa, a, lda);
  }
  wmma::load_matrix_sync(fb, b, ldb);
  wmma::load_matrix_sync(fc, c, 16, wmma::mem_row_major);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(d, fc, 16, wmma::mem_row_major);
}

struct Aligned {
  explicit Aligned(size_t bytes) : p(::operator new(bytes, std::align_val_t(32))) { std::memset(p, 0, bytes); }
  ~Aligned() { ::operator delete(p, std::align_val_t(32)); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  void* p;
};

float stored(float v, const wmma::precision::tf32*) { return v; }
float stored(float v, const __half*) { return __half2float(__float2half(v)); }
float stored(float v, const __nv_bfloat16*) { return __bfloat162float(__float2bfloat16(v)); }
Storage<wmma::precision::tf32> encode(float v, const wmma::precision::tf32*) { return v; }
__half encode(float v, const __half*) { return __float2half(v); }
__nv_bfloat16 encode(float v, const __nv_bfloat16*) { return __float2bfloat16(v); }
double operand(float v, const wmma::precision::tf32*) {  // the tensor cores read the top 19 bits
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits &= ~0x1fffu;
  float t;
  std::memcpy(&t, &bits, 4);
  return t;
}
double operand(float v, const void*) { return v; }

template <typename T, typename LA, typename LB, int K>
bool run(const char* name, Mode mode, std::mt19937& rng) {
  using S = Storage<T>;
  const T* tag = nullptr;
  std::normal_distribution<float> normal(0.f, 1.f);
  const unsigned lda = std::is_same_v<LA, wmma::row_major> ? K + 16 / sizeof(S) : 16 + 16 / sizeof(S);
  const unsigned ldb = std::is_same_v<LB, wmma::row_major> ? 16 + 16 / sizeof(S) : K + 16 / sizeof(S);
  Aligned a(sizeof(S) * 64 * lda), b(sizeof(S) * 64 * ldb), c(4 * 256), d(4 * 256);
  S* as = static_cast<S*>(a.p);
  S* bs = static_cast<S*>(b.p);
  float* cs = static_cast<float*>(c.p);
  double A[16][16], B[16][16], C[16][16];
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < K; ++k) {
      const float v = stored(normal(rng), tag);
      (std::is_same_v<LA, wmma::row_major> ? as[r * lda + k] : as[k * lda + r]) = encode(v, tag);
      A[r][k] = operand(v, tag);
    }
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < 16; ++n) {
      const float v = stored(normal(rng), tag);
      (std::is_same_v<LB, wmma::row_major> ? bs[k * ldb + n] : bs[n * ldb + k]) = encode(v, tag);
      B[k][n] = operand(v, tag);
    }
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) cs[r * 16 + n] = normal(rng), C[r][n] = cs[r * 16 + n];
  mmcl_fast::cuda::launch_kernel(mma_kernel<T, LA, LB, K>, dim3(1), dim3(32), nullptr, as, bs, cs,
                                 static_cast<float*>(d.p), lda, ldb, static_cast<int>(mode));
  double worst = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      double want = C[r][n], scale = std::fabs(C[r][n]);
      for (int k = 0; k < K; ++k) want += A[r][k] * B[k][n], scale += std::fabs(A[r][k] * B[k][n]);
      worst = std::max(worst, std::fabs(static_cast<float*>(d.p)[r * 16 + n] - want) / scale);
    }
  const bool ok = worst < 4e-6;  // float32 sums of at most 17 terms
  std::printf("%-34s max error / sum |terms| %.1e  %s\n", name, worst, ok ? "ok" : "MISMATCH");
  return ok;
}

bool tf32_rounding() {
  struct { float in, out; } cases[] = {
      {1.f + 0x1p-11f, 1.f + 0x1p-10f},               // a tie: away from zero
      {-(1.f + 0x1p-11f), -(1.f + 0x1p-10f)},
      {1.f + 0x1p-11f - 0x1p-23f, 1.f},               // just below the tie
      {1.f + 0x1p-10f + 0x1p-12f, 1.f + 0x1p-10f},    // below half an ulp
      {3.f, 3.f}};
  bool ok = true;
  for (const auto& c : cases) ok = ok && wmma::__float_to_tf32(c.in) == c.out;
  ok = ok && std::isnan(wmma::__float_to_tf32(NAN)) && wmma::__float_to_tf32(INFINITY) == INFINITY;
  std::printf("%-34s %s\n", "__float_to_tf32 rounding", ok ? "ok" : "MISMATCH");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  Mode mode = Mode::Normal;
  for (int i = 1; i < argc; ++i) {
    const std::string arg(argv[i]);
    if (arg == "--misaligned") mode = Mode::Misaligned;
    else if (arg == "--divergent") mode = Mode::Divergent;
    else if (arg == "--assume-layout") mode = Mode::AssumeLayout;
    else { std::fprintf(stderr, "unknown argument %s\n", argv[i]); return 2; }
  }
  std::mt19937 rng(7);
  using wmma::col_major;
  using wmma::row_major;
  using tf32 = wmma::precision::tf32;
  bool ok = true;
  if (mode == Mode::Misaligned || mode == Mode::Divergent) {  // the emulator must stop the run
    const bool stopped = aborts_in_child([&] { run<__half, row_major, col_major, 16>("half row x col", mode, rng); });
    std::printf("%s\n", stopped ? "the run stopped (abort), as required" : "THE RUN WAS NOT STOPPED");
    return stopped ? 0 : 1;
  }
  if (mode != Mode::Normal) {
    ok = run<__half, row_major, col_major, 16>("half row x col", mode, rng);
    ok = run<tf32, row_major, row_major, 8>("tf32 row x row", mode, rng) && ok;
  } else {
    ok = run<__half, row_major, col_major, 16>("half row x col", mode, rng) && ok;
    ok = run<__half, row_major, row_major, 16>("half row x row", mode, rng) && ok;
    ok = run<__half, col_major, col_major, 16>("half col x col", mode, rng) && ok;
    ok = run<__nv_bfloat16, row_major, col_major, 16>("bfloat16 row x col", mode, rng) && ok;
    ok = run<__nv_bfloat16, row_major, row_major, 16>("bfloat16 row x row", mode, rng) && ok;
    ok = run<tf32, row_major, col_major, 8>("tf32 row x col (low bits dropped)", mode, rng) && ok;
    ok = run<tf32, row_major, row_major, 8>("tf32 row x row (low bits dropped)", mode, rng) && ok;
    ok = tf32_rounding() && ok;
  }
  std::printf("%s\n", ok ? "all wmma cases match" : "SOME WMMA CASES FAILED");
  return ok ? 0 : 1;
}
