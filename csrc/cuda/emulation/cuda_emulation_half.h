// __half and __nv_bfloat16 of the host CUDA emulation: storage types with CUDA's conversions.
//
//   float -> half:     IEEE binary16, round to nearest even (subnormals kept, overflow to inf),
//                      NaN -> 0x7fff as CUDA's __float2half;
//   float -> bfloat16: the upper 16 bits rounded to nearest even, NaN -> 0x7fff;
//   half/bfloat16 -> float: exact.
// Only conversions are emulated: arithmetic on these types does not compile, so a kernel that
// starts using it fails the emulated build instead of computing something else.
#pragma once

#ifndef MMCL_FAST_CUDA_EMULATION
#error "csrc/cuda/emulation is the host emulation of CUDA: build it with -DMMCL_FAST_CUDA_EMULATION"
#endif

#include <bit>
#include <cmath>
#include <cstdint>

struct __half {
  unsigned short __x;
};
struct __nv_bfloat16 {
  unsigned short __x;
};

inline __half __ushort_as_half(unsigned short bits) { return __half{bits}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short bits) { return __nv_bfloat16{bits}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }

inline __half __float2half_rn(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const uint32_t mag = bits & 0x7fffffffu;
  if (mag > 0x7f800000u) return __half{0x7fff};                                   // NaN
  if (mag >= 0x477ff000u) return __half{static_cast<unsigned short>(sign | 0x7c00u)};  // >= 65520: inf
  if (mag < 0x38800000u) {  // below 2^-14: a subnormal half m * 2^-24, m rounded to nearest even
    const float scaled = std::bit_cast<float>(mag) * 16777216.0f;  // exact (power of two)
    return __half{static_cast<unsigned short>(sign | static_cast<uint32_t>(std::nearbyint(scaled)))};
  }
  uint32_t h = ((((mag >> 23) - 127u + 15u) << 10) | ((mag & 0x7fffffu) >> 13));
  const uint32_t rest = mag & 0x1fffu;  // the 13 mantissa bits dropped
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
  return __half{static_cast<unsigned short>(sign | h)};
}
inline __half __float2half(float value) { return __float2half_rn(value); }

inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.__x & 0x8000u) << 16;
  const uint32_t exponent = (h.__x >> 10) & 0x1fu, mantissa = h.__x & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    const float v = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent - 15u + 127u) << 23) | (mantissa << 13));
}

inline __nv_bfloat16 __float2bfloat16_rn(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};  // NaN
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return __nv_bfloat16{static_cast<unsigned short>(rounded >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float value) { return __float2bfloat16_rn(value); }

inline float __bfloat162float(__nv_bfloat16 h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h.__x) << 16);
}
