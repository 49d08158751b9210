// Device side of the host CUDA emulation: the SIMT execution model and the built-ins that
// csrc/cuda's kernels use, so that the same .cu source compiles with g++ and runs on the CPU.
//
// Execution model (cuda_emulation.cpp):
//   * a launch runs its blocks one after another, or `concurrent_blocks()` blocks at a time, each
//     running block on an OS thread of its own (so blocks really race on global memory);
//   * the threads of a block are fibers on their block's OS thread: each runs until it waits at
//     a barrier or returns, then the next one, so a thread runs as far ahead as the barriers let
//     it; a block whose live threads all wait at barriers the others never reach stops the run;
//   * __syncthreads() is a real barrier over the block's live threads (threads that returned
//     have left it, as on Volta and later); all threads must wait at the same call site, else
//     the run stops naming both sites;
//   * shared memory (MMCL_SHARED) is one heap allocation per declaration and running block,
//     filled with 0xff bytes (NaN as float) so a read before any write shows up, and exactly
//     sized so AddressSanitizer catches out-of-bounds accesses;
//   * warp collectives exchange values through a per-warp barrier; they need the full mask of a
//     warp whose lanes are all alive (anything else stops the run with a message). Under
//     ThreadSanitizer their internal synchronisation is hidden, because a shuffle orders no
//     memory on a GPU: a missing __syncwarp() stays visible as a race;
//   * atomics are std::atomic_ref operations with relaxed ordering, as CUDA's atomics;
//   * expf/logf/... are the host libm's (CUDA's expf differs by at most 2 ulp; __expf is
//     emulated as expf, not with the GPU's reduced accuracy).
// What is not declared here does not exist: a kernel using it does not compile.
#pragma once

#include "cuda_emulation_runtime.h"

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <source_location>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace mmcl_fast {
namespace cuda_emulation {

struct BlockContext;

// The built-in variables of the emulated thread running now on this OS thread.
struct ThreadContext {
  uint3 thread_idx{0, 0, 0}, block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  int linear_tid = 0;
  BlockContext* block = nullptr;
};
extern thread_local ThreadContext this_thread;

[[noreturn]] void fatal(const char* message, const std::source_location& where);

// Runs body() once per thread of every block of the grid (see the execution model above).
void run_grid(dim3 grid, dim3 block, const std::function<void()>& body);

// How many blocks run at once (1 by default; also set by MMCL_FAST_EMU_CONCURRENT_BLOCKS).
void set_concurrent_blocks(int blocks);
int concurrent_blocks();

void sync_block(const std::source_location& where);
void sync_warp(unsigned mask, const std::source_location& where);
// Every lane publishes `bits`; returns the bits published by lane `src_lane` (or its own when
// src_lane is outside the warp), or, with gather_all, the ballot of (bits != 0) over the warp.
uint64_t warp_exchange(unsigned mask, uint64_t bits, int src_lane, bool gather_all,
                       const std::source_location& where);
// Every lane of the (full, converged) warp passes `bytes` bytes at `mine`; each lane receives all
// 32 lanes' bytes in lane order at `all` (32 * bytes). The warp-level tensor-core operations
// (cuda_emulation_wmma.h) exchange their fragments this way; like a shuffle, the exchange is
// hidden from ThreadSanitizer, since on a GPU the registers move inside one instruction.
void warp_collect(unsigned mask, const void* mine, size_t bytes, void* all, const std::source_location& where);
// The storage of one MMCL_SHARED declaration (`key` identifies it) in the running block.
void* block_shared(const void* key, size_t bytes, size_t alignment, const std::source_location& where);

template <typename T>
using shared_array = T;

template <typename T>
struct type_identity {
  using type = T;
};

template <typename T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffle of this type is not emulated");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}

inline int lane_id() { return this_thread.linear_tid & 31; }

// The value of v held by lane `src_lane` (a full-width shuffle: width must be 32).
template <typename T>
T shuffle_from(unsigned mask, T v, int src_lane, int width, const std::source_location& where) {
  if (width != 32) fatal("warp shuffles with width != 32 are not emulated", where);
  return from_bits<T>(warp_exchange(mask, to_bits(v), src_lane, false, where));
}

}  // namespace cuda_emulation
}  // namespace mmcl_fast

#define threadIdx (::mmcl_fast::cuda_emulation::this_thread.thread_idx)
#define blockIdx (::mmcl_fast::cuda_emulation::this_thread.block_idx)
#define blockDim (::mmcl_fast::cuda_emulation::this_thread.block_dim)
#define gridDim (::mmcl_fast::cuda_emulation::this_thread.grid_dim)
constexpr int warpSize = 32;

// --- kernel launch and shared memory (the spelling csrc/cuda/kernel_launch.cuh provides) ---
namespace mmcl_fast {
namespace cuda {
template <typename... Params>
void launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t /*stream*/,
                   typename cuda_emulation::type_identity<Params>::type... args) {
  cuda_emulation::run_grid(grid, block, [&] { kernel(args...); });
}
}  // namespace cuda
}  // namespace mmcl_fast

#define MMCL_SHARED(name, ...) MMCL_SHARED_ALIGNED(name, 1, __VA_ARGS__)
// Shared storage aligned to at least `align` bytes (and to 16, the emulator's floor, which is
// what an unannotated __shared__ array may get on a GPU: wmma's 32-byte rule needs the annotation).
#define MMCL_SHARED_ALIGNED(name, align, ...)                                                       \
  static const char mmcl_shared_key_##name = 0;                                                     \
  auto& name = *static_cast<::mmcl_fast::cuda_emulation::shared_array<__VA_ARGS__>*>(               \
      ::mmcl_fast::cuda_emulation::block_shared(                                                    \
          &mmcl_shared_key_##name, sizeof(__VA_ARGS__),                                             \
          (align) > alignof(__VA_ARGS__) ? (align) : alignof(__VA_ARGS__), std::source_location::current()))
#define MMCL_UNROLL
#define MMCL_UNROLL_N(n)

// --- synchronisation and warp collectives ---
inline void __syncthreads(std::source_location where = std::source_location::current()) {
  ::mmcl_fast::cuda_emulation::sync_block(where);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location where = std::source_location::current()) {
  ::mmcl_fast::cuda_emulation::sync_warp(mask, where);
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize,
              std::source_location where = std::source_location::current()) {
  return ::mmcl_fast::cuda_emulation::shuffle_from(mask, v, src_lane & 31, width, where);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize,
                  std::source_location where = std::source_location::current()) {
  namespace e = ::mmcl_fast::cuda_emulation;
  if (lane_mask < 0 || lane_mask > 31) e::fatal("__shfl_xor_sync lane mask outside [0, 31]", where);
  return e::shuffle_from(mask, v, e::lane_id() ^ lane_mask, width, where);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                   std::source_location where = std::source_location::current()) {
  namespace e = ::mmcl_fast::cuda_emulation;
  const int src = e::lane_id() + static_cast<int>(delta);
  return e::shuffle_from(mask, v, src > 31 ? e::lane_id() : src, width, where);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                 std::source_location where = std::source_location::current()) {
  namespace e = ::mmcl_fast::cuda_emulation;
  const int src = e::lane_id() - static_cast<int>(delta);
  return e::shuffle_from(mask, v, src < 0 ? e::lane_id() : src, width, where);
}
inline unsigned __ballot_sync(unsigned mask, int predicate,
                              std::source_location where = std::source_location::current()) {
  return static_cast<unsigned>(
      ::mmcl_fast::cuda_emulation::warp_exchange(mask, predicate != 0, 0, true, where));
}

// --- atomics on host memory (relaxed, like CUDA's) ---
template <typename T>
T mmcl_emu_atomic_add(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}
inline float atomicAdd(float* address, float value) { return mmcl_emu_atomic_add(address, value); }
inline double atomicAdd(double* address, double value) { return mmcl_emu_atomic_add(address, value); }
inline int atomicAdd(int* address, int value) { return mmcl_emu_atomic_add(address, value); }
inline unsigned atomicAdd(unsigned* address, unsigned value) { return mmcl_emu_atomic_add(address, value); }
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return mmcl_emu_atomic_add(address, value);
}
template <typename T>
T mmcl_emu_atomic_cas(T* address, T compare, T value) {
  std::atomic_ref<T>(*address).compare_exchange_strong(compare, value, std::memory_order_relaxed);
  return compare;  // the old value, whether or not the exchange happened
}
inline int atomicCAS(int* address, int compare, int value) { return mmcl_emu_atomic_cas(address, compare, value); }
inline unsigned atomicCAS(unsigned* address, unsigned compare, unsigned value) {
  return mmcl_emu_atomic_cas(address, compare, value);
}
inline unsigned long long atomicCAS(unsigned long long* address, unsigned long long compare,
                                    unsigned long long value) {
  return mmcl_emu_atomic_cas(address, compare, value);
}
inline int atomicMax(int* address, int value) {
  std::atomic_ref<int> ref(*address);
  int old = ref.load(std::memory_order_relaxed);
  while (old < value && !ref.compare_exchange_weak(old, value, std::memory_order_relaxed)) {
  }
  return old;
}
inline unsigned long long atomicExch(unsigned long long* address, unsigned long long value) {
  return std::atomic_ref<unsigned long long>(*address).exchange(value, std::memory_order_relaxed);
}

namespace mmcl_fast {
namespace cuda {
// A load that may race with atomics of other blocks (a CAS loop re-checks the value it read).
inline unsigned long long relaxed_load(const unsigned long long* address) {
  return std::atomic_ref<unsigned long long>(*const_cast<unsigned long long*>(address))
      .load(std::memory_order_relaxed);
}
}  // namespace cuda
}  // namespace mmcl_fast

// --- bit casts and fast-math intrinsics ---
inline unsigned __float_as_uint(float v) { return std::bit_cast<unsigned>(v); }
inline float __uint_as_float(unsigned v) { return std::bit_cast<float>(v); }
inline int __float_as_int(float v) { return std::bit_cast<int>(v); }
inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
inline float __expf(float v) { return std::exp(v); }
inline float __logf(float v) { return std::log(v); }
inline float __fdividef(float a, float b) { return a / b; }
