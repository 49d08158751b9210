// What nvcc and the host emulator (emulation/) spell differently, with one spelling for the
// kernels: the kernel launch, __shared__ declarations, unroll hints and a relaxed 64-bit load.
//
//   launch_kernel(kernel, grid, block, stream, args...)  kernel<<<grid, block, 0, stream>>>(args...)
//   MMCL_SHARED(name, float[64][17]);                    __shared__ float name[64][17];
//   MMCL_SHARED_ALIGNED(name, 32, T);                    __shared__ __align__(32) T name;
//   MMCL_UNROLL / MMCL_UNROLL_N(8)                       #pragma unroll / #pragma unroll 8
//   relaxed_load(p)                                      a load that may race with atomics
#pragma once

#include <cuda_runtime.h>

#ifdef MMCL_FAST_CUDA_EMULATION
#include "emulation/cuda_emulation_device.h"
#else
namespace mmcl_fast {
namespace cuda {

template <typename T>
struct type_identity {
  using type = T;
};

template <typename... Params>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream,
                   typename type_identity<Params>::type... args) {
  kernel<<<grid, block, 0, stream>>>(args...);
}

template <typename T>
using shared_array = T;

// A volatile 64-bit load is one ld.volatile.global.u64: it cannot tear and is not cached in a
// register, so a compare-and-swap loop that starts from it re-reads the current value.
__device__ __forceinline__ unsigned long long relaxed_load(const unsigned long long* address) {
  return *reinterpret_cast<const volatile unsigned long long*>(address);
}

}  // namespace cuda
}  // namespace mmcl_fast

#define MMCL_SHARED(name, ...) __shared__ ::mmcl_fast::cuda::shared_array<__VA_ARGS__> name
#define MMCL_SHARED_ALIGNED(name, align, ...) \
  __shared__ __align__(align) ::mmcl_fast::cuda::shared_array<__VA_ARGS__> name
#define MMCL_PRAGMA(text) _Pragma(#text)
#define MMCL_UNROLL MMCL_PRAGMA(unroll)
#define MMCL_UNROLL_N(n) MMCL_PRAGMA(unroll n)
#endif
