// The exponential arithmetic of the CPU LSE engine, on at::vec vectors: horizontal reductions,
// sums of exp(v - offset), and the rules that decide how many exponentials a tile needs.
//
// Every exponent is taken against an offset that is at least the largest logit of its row or
// column, so each term is <= 1 and a sum never overflows. Two rules cut the exponentials:
// * shared_exp_offsets: when a tile's row and column offsets lie close enough, one exponential
//   per logit serves both the row and the column sums (formula below);
// * all_negligible: a vector whose every exponent lies below the type's smallest normal number
//   contributes nothing representable and is skipped.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace mmcl_fast::tile_engine {
inline namespace CPU_CAPABILITY {  // one copy per ISA (csrc/cpu/isa/isa_target.h)

using at::vec::Vectorized;

template <typename T>
constexpr T neg_inf() { return -std::numeric_limits<T>::infinity(); }

// Offset used inside exp(v - offset): a running max of -inf (nothing seen yet) becomes 0 so that
// exp(-inf - offset) is 0 rather than NaN.
template <typename T>
inline T exp_offset(T m) { return m == neg_inf<T>() ? T(0) : m; }

template <typename T>
T horizontal_sum(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T s = 0;
  for (int64_t l = 0; l < Vectorized<T>::size(); ++l) s += lanes[l];
  return s;
}

template <typename T>
T horizontal_max(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T m = neg_inf<T>();
  for (int64_t l = 0; l < Vectorized<T>::size(); ++l) m = std::max(m, lanes[l]);
  return m;
}

// sum_c exp(p[c] - off)
template <typename T>
T sum_exp(const T* p, int64_t n, T off) {
  using V = Vectorized<T>;
  const V voff(off);
  int64_t c = 0;
  V acc(T(0));
  for (; c + V::size() <= n; c += V::size()) acc = acc + (V::loadu(p + c) - voff).exp_u20();
  T s = horizontal_sum(acc);
  for (; c < n; ++c) s += std::exp(p[c] - off);
  return s;
}

// out[c] = exp(sign * (a[c] - b)) for c < n (a vectorised exp of offsets).
template <typename T>
void exp_of_offsets(const T* a, T b, T sign, int64_t n, T* out) {
  using V = Vectorized<T>;
  const V vb(b), vsign(sign);
  int64_t c = 0;
  for (; c + V::size() <= n; c += V::size()) (vsign * (V::loadu(a + c) - vb)).exp_u20().store(out + c);
  for (; c < n; ++c) out[c] = std::exp(sign * (a[c] - b));
}

// One exponential per logit serves both the row and the column sums of a tile. With r_i the row
// offsets, c_j the column offsets (each >= every logit of its row / column), lowest = min_j c_j,
// per-row exponent offsets o_i = min(r_i, lowest + spread) and t = max_i o_i:
//   exp(L_ij - r_i) = exp(L_ij - o_i) * exp(o_i - r_i)                      (row sums)
//   exp(L_ij - c_j) = exp(L_ij - o_i) * exp(o_i - t) * exp(t - c_j)         (column sums)
// * o_i - c_j <= spread and t - c_j <= spread: exp(t - c_j) < e^70 is finite, and a term
//   exp(L_ij - o_i) lost to underflow (below e^-87 in float) weighs less than e^-(87 - 70) =
//   e^-17 of its column's total (and less than e^-87 of its row's), under float32's epsilon
//   e^-15.9;
// * r_i - o_i <= headroom: exp(L_ij - o_i) <= e^80, and kTileM (128) of them sum below float's
//   e^88.7.
// That holds whenever max_i r_i - lowest <= spread + headroom; tiles with a wider spread use two
// exponentials per logit. The bounds say nothing of exp(t - c_j) (or a gradient times exp(o_i - r_i))
// falling below the smallest normal number, where the kernels' flush to zero would drop terms that
// exp(L_ij - o_i) <= e^80 makes visible: the callers form those factors in double or fall back.
template <typename T>
constexpr T shared_exp_spread() { return std::is_same_v<T, float> ? T(70) : T(600); }
template <typename T>
constexpr T shared_exp_headroom() { return std::is_same_v<T, float> ? T(80) : T(100); }

// o_i = min(r_i, lowest + spread) for i < n and t = max_i o_i (above), or false when the tile's
// spread is too wide for one exponential per logit.
template <typename T>
bool shared_exp_offsets(const T* r, int64_t n, T lowest, T* o, T* t) {
  T top = neg_inf<T>();
  for (int64_t i = 0; i < n; ++i) top = std::max(top, r[i]);
  if (!(top - lowest <= shared_exp_spread<T>() + shared_exp_headroom<T>())) return false;
  const T cap = lowest + shared_exp_spread<T>();
  *t = neg_inf<T>();
  for (int64_t i = 0; i < n; ++i) {
    o[i] = std::min(r[i], cap);
    *t = std::max(*t, o[i]);
  }
  return true;
}

// Exponents below which exp() is under the type's smallest normal number (float e^-87.3, double
// e^-708.4). Every offset used here is at least its row's or column's largest logit, whose term is
// >= e^0 in the same sum, so a term below e^negligible_exponent is lost to rounding either way.
// The two-exponential paths skip vectors whose every exponent lies below it: with a wide logit
// spread (euclidean or unnormalised dot at a low temperature) that is most of the tile.
template <typename T>
constexpr T negligible_exponent() { return std::is_same_v<T, float> ? T(-88) : T(-709); }

// True when every lane of max(a, b) is below negligible_exponent.
template <typename T>
inline bool all_negligible(const Vectorized<T>& a, const Vectorized<T>& b) {
  constexpr int all_lanes = (1 << Vectorized<T>::size()) - 1;
  return (at::vec::maximum(a, b) > Vectorized<T>(negligible_exponent<T>())).zero_mask() == all_lanes;
}

}  // namespace CPU_CAPABILITY
}  // namespace mmcl_fast::tile_engine
