// nvcuda::wmma (warp matrix multiply-accumulate, <mma.h>) of the host CUDA emulation.
//
// What is emulated, with CUDA's rules, so that code correct here is correct on a GPU:
//   * the shapes m16n16k16 (half, bfloat16 operands) and m16n16k8 (precision::tf32 operands),
//     float accumulators; any other combination fails to compile;
//   * fragments are opaque: a lane holds num_elements = rows * cols / 32 elements in x[], and
//     which elements a lane holds is this emulator's own scrambled assignment (a different one
//     for matrix_a, matrix_b and the accumulator), so code that assumes any layout computes
//     garbage here. Element-wise operations on x[] (scaling, __float_to_tf32) are fine;
//   * load/store/mma are warp-collective: every lane of a full warp must call them with the same
//     pointer, ldm and layout (else the run stops: stores check at once, loads when the fragment
//     reaches mma_sync, which compares the source each lane's fragment was loaded from);
//     pointers must be 32-byte aligned and ldm a multiple of 16 bytes (8 half elements, 4 float
//     elements), as the CUDA C++ guide requires;
//   * mma_sync: D = A B + C with each product exact in float (true for half, bfloat16 and TF32
//     operands) summed into float in k order. Hardware sums in another order and with its own
//     internal rounding, so results agree to float rounding, not bit for bit;
//   * TF32: mma_sync reads only the top 19 bits of a float operand (the low 13 mantissa bits are
//     dropped), and __float_to_tf32 rounds to nearest, ties away from zero (cvt.rna.tf32.f32).
#pragma once

#ifndef MMCL_FAST_CUDA_EMULATION
#error "csrc/cuda/emulation is the host emulation of CUDA: build it with -DMMCL_FAST_CUDA_EMULATION"
#endif

#include <bit>
#include <cstdint>
#include <source_location>
#include <type_traits>

#include "cuda_emulation_device.h"
#include "cuda_emulation_half.h"

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

inline float __float_to_tf32(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7f800000u) == 0x7f800000u) return value;  // inf and NaN unchanged
  return std::bit_cast<float>((bits + 0x1000u) & ~0x1fffu);   // nearest, ties away from zero
}

namespace detail {

template <typename T> struct storage { using type = T; };
template <> struct storage<precision::tf32> { using type = float; };

template <typename Use, int M, int N, int K> struct extent;
template <int M, int N, int K> struct extent<matrix_a, M, N, K> { static constexpr int rows = M, cols = K; };
template <int M, int N, int K> struct extent<matrix_b, M, N, K> { static constexpr int rows = K, cols = N; };
template <int M, int N, int K> struct extent<accumulator, M, N, K> { static constexpr int rows = M, cols = N; };

template <typename Use, int M, int N, int K, typename T>
constexpr bool supported() {
  if constexpr (std::is_same_v<Use, accumulator>) {
    return std::is_same_v<T, float> && M == 16 && N == 16 && (K == 16 || K == 8);
  } else if constexpr (std::is_same_v<T, precision::tf32>) {
    return M == 16 && N == 16 && K == 8;
  } else {
    return (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) && M == 16 && N == 16 && K == 16;
  }
}

// The scrambled owner of element e (row-major index in the fragment's matrix): position
// p = (e * stride + offset) mod total, held by lane p % 32 in slot p / 32. stride is odd and total
// a power of two, so this is a bijection.
template <typename Use> struct scramble;
template <> struct scramble<matrix_a> { static constexpr int stride = 37, offset = 11; };
template <> struct scramble<matrix_b> { static constexpr int stride = 101, offset = 5; };
template <> struct scramble<accumulator> { static constexpr int stride = 77, offset = 29; };

template <typename Use, int total>
constexpr int position(int e) { return (e * scramble<Use>::stride + scramble<Use>::offset) % total; }

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float tf32_bits(float v) { return std::bit_cast<float>(std::bit_cast<uint32_t>(v) & ~0x1fffu); }

[[noreturn]] inline void fail(const char* message, const std::source_location& where) {
  ::mmcl_fast::cuda_emulation::fatal(message, where);
}

// Every lane passed the same (pointer, ldm, layout): a warp-collective call with uniform arguments.
inline void check_uniform(const void* ptr, unsigned ldm, int layout, const std::source_location& where) {
  struct Args { uintptr_t ptr; uint32_t ldm; int32_t layout; } mine{reinterpret_cast<uintptr_t>(ptr), ldm, layout}, all[32];
  ::mmcl_fast::cuda_emulation::warp_collect(0xffffffffu, &mine, sizeof(Args), all, where);
  for (const Args& a : all)
    if (a.ptr != mine.ptr || a.ldm != mine.ldm || a.layout != mine.layout)
      fail("wmma: the lanes of a warp passed different pointers, ldm or layouts", where);
}

template <typename E>
void check_address(const E* ptr, unsigned ldm, const std::source_location& where) {
  if (reinterpret_cast<uintptr_t>(ptr) % 32 != 0) fail("wmma: the matrix pointer is not 32-byte aligned", where);
  if ((ldm * sizeof(E)) % 16 != 0) fail("wmma: ldm is not a multiple of 16 bytes", where);
}

}  // namespace detail

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
class fragment {
  static_assert(detail::supported<Use, M, N, K, T>(),
                "wmma fragment shape/type not emulated (m16n16k16 half/bfloat16, m16n16k8 tf32, float accumulators)");
  static_assert(std::is_same_v<Use, accumulator> ? std::is_void_v<Layout>
                                                  : (std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>),
                "matrix_a/matrix_b fragments take row_major or col_major; accumulators take no layout");

 public:
  using element_type = typename detail::storage<T>::type;
  static constexpr int rows = detail::extent<Use, M, N, K>::rows, cols = detail::extent<Use, M, N, K>::cols;
  static constexpr int num_elements = rows * cols / 32;
  element_type x[num_elements];
  // Emulator bookkeeping (not part of CUDA's fragment): where the last load read from, so that
  // mma_sync can check that every lane loaded the same matrix. 0: filled or computed, not loaded.
  uintptr_t emu_source = 0;
  uint32_t emu_ldm = 0;
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f, const typename fragment<Use, M, N, K, T, Layout>::element_type& v) {
  for (auto& e : f.x) e = v;
  f.emu_source = 0;
  f.emu_ldm = 0;
}

namespace detail {

// Reads (load) or writes (store) this lane's elements of a rows x cols matrix at ptr.
template <typename Use, typename Frag, typename E>
void move_elements(Frag& f, E* ptr, unsigned ldm, bool row_major_memory, bool load) {
  constexpr int total = Frag::rows * Frag::cols;
  const int lane = ::mmcl_fast::cuda_emulation::lane_id();
  for (int e = 0; e < total; ++e) {
    const int p = position<Use, total>(e);
    if (p % 32 != lane) continue;
    const int r = e / Frag::cols, c = e % Frag::cols;
    E* at = row_major_memory ? ptr + size_t(r) * ldm + c : ptr + size_t(c) * ldm + r;
    if (load) f.x[p / 32] = *at;
    else *at = f.x[p / 32];
  }
  if (load) {
    f.emu_source = reinterpret_cast<uintptr_t>(ptr) * 2 + (row_major_memory ? 1 : 0);
    f.emu_ldm = ldm;
  }
}

template <typename Frag>
bool same_source(const Frag& f, const Frag& g) { return f.emu_source == g.emu_source && f.emu_ldm == g.emu_ldm; }

}  // namespace detail

// matrix_a / matrix_b: the layout is the fragment's.
template <typename Use, int M, int N, int K, typename T, typename Layout, typename E>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const E* ptr, unsigned ldm,
                      std::source_location where = std::source_location::current()) {
  using Frag = fragment<Use, M, N, K, T, Layout>;
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
  static_assert(std::is_same_v<std::remove_cv_t<E>, typename Frag::element_type>,
                "wmma::load_matrix_sync: the pointer's type is not the fragment's element type");
  detail::check_address(ptr, ldm, where);
  detail::move_elements<Use>(f, const_cast<E*>(ptr), ldm, std::is_same_v<Layout, row_major>, true);
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* ptr, unsigned ldm, layout_t layout,
                      std::source_location where = std::source_location::current()) {
  detail::check_address(ptr, ldm, where);
  detail::move_elements<accumulator>(f, const_cast<float*>(ptr), ldm, layout == mem_row_major, true);
}

template <int M, int N, int K>
void store_matrix_sync(float* ptr, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout,
                       std::source_location where = std::source_location::current()) {
  detail::check_address(ptr, ldm, where);
  detail::check_uniform(ptr, ldm, layout, where);
  auto& mutable_f = const_cast<fragment<accumulator, M, N, K, float>&>(f);
  detail::move_elements<accumulator>(mutable_f, ptr, ldm, layout == mem_row_major, false);
}

// D = A B + C over the whole warp (D may be C).
template <int M, int N, int K, typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LayoutA>& a,
              const fragment<matrix_b, M, N, K, T, LayoutB>& b, const fragment<accumulator, M, N, K, float>& c,
              std::source_location where = std::source_location::current()) {
  using FragA = fragment<matrix_a, M, N, K, T, LayoutA>;
  using FragB = fragment<matrix_b, M, N, K, T, LayoutB>;
  using FragC = fragment<accumulator, M, N, K, float>;
  struct Lane { FragA a; FragB b; FragC c; };
  const Lane mine{a, b, c};  // copied first: d may be c, and is written only after the exchange
  Lane all[32];
  ::mmcl_fast::cuda_emulation::warp_collect(0xffffffffu, &mine, sizeof(Lane), all, where);
  for (const Lane& l : all)
    if (!detail::same_source(l.a, mine.a) || !detail::same_source(l.b, mine.b) || !detail::same_source(l.c, mine.c))
      detail::fail("wmma: the lanes of a warp passed different pointers, ldm or layouts to load_matrix_sync", where);
  // The full matrices, as float (TF32 operands read without their low 13 bits).
  float A[M][K], B[K][N], C[M][N];
  auto value = [](auto v) {
    const float f = detail::to_float(v);
    return std::is_same_v<T, precision::tf32> ? detail::tf32_bits(f) : f;
  };
  for (int e = 0; e < M * K; ++e) {
    const int p = detail::position<matrix_a, M * K>(e);
    A[e / K][e % K] = value(all[p % 32].a.x[p / 32]);
  }
  for (int e = 0; e < K * N; ++e) {
    const int p = detail::position<matrix_b, K * N>(e);
    B[e / N][e % N] = value(all[p % 32].b.x[p / 32]);
  }
  for (int e = 0; e < M * N; ++e) {
    const int p = detail::position<accumulator, M * N>(e);
    C[e / N][e % N] = all[p % 32].c.x[p / 32];
  }
  const int lane = ::mmcl_fast::cuda_emulation::lane_id();
  for (int e = 0; e < M * N; ++e) {
    const int p = detail::position<accumulator, M * N>(e);
    if (p % 32 != lane) continue;
    const int r = e / N, col = e % N;
    float acc = C[r][col];
    for (int k = 0; k < K; ++k) acc = std::fma(A[r][k], B[k][col], acc);
    d.x[p / 32] = acc;
  }
  d.emu_source = 0;
  d.emu_ldm = 0;
}

}  // namespace wmma
}  // namespace nvcuda
