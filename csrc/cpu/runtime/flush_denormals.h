// Flush-to-zero for the CPU kernels' worker slots: results below the smallest normal number
// (float 1.2e-38, double 2.2e-308) become 0 on the calling thread while the scope lives.
//
// The fused LSE's exponentials of logits far below their row or column offset land in that range
// (a wide logit spread: euclidean or unnormalised dot at a low temperature), and arithmetic on
// subnormal numbers, in the kernel's loops and in the BLAS products with G, takes a slow path.
// A flushed term is below e^-87 of its row's sum and below e^-17 of its column's (the bound
// shared_exp_offsets in tile_engine/vec_exp.h already works with), under float32's epsilon either
// way. Only flush-to-zero is set, not denormals-are-zero: subnormal inputs keep their values.
// x86 only (MXCSR); elsewhere the scope does nothing.
#pragma once

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <xmmintrin.h>
#define MMCL_FAST_HAVE_MXCSR 1
#endif

namespace mmcl_fast {

class FlushDenormalsScope {
 public:
#ifdef MMCL_FAST_HAVE_MXCSR
  FlushDenormalsScope() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | _MM_FLUSH_ZERO_ON); }
  ~FlushDenormalsScope() { _mm_setcsr(saved_); }
#else
  FlushDenormalsScope() = default;
#endif
  FlushDenormalsScope(const FlushDenormalsScope&) = delete;
  FlushDenormalsScope& operator=(const FlushDenormalsScope&) = delete;

 private:
#ifdef MMCL_FAST_HAVE_MXCSR
  unsigned int saved_;
#endif
};

}  // namespace mmcl_fast
