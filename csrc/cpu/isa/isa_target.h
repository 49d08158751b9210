// Sets the code generation target for one ISA copy of the CPU engine. The including file defines
// exactly one of MMCL_FAST_ISA_DEFAULT, MMCL_FAST_ISA_AVX2, MMCL_FAST_ISA_AVX512 and includes
// this header first, then the engine, then isa_target_end.h (which restores the baseline target).
//
// Everything that is not ISA-specific is included here *before* the target switches, so its inline
// functions keep the baseline target: the linker keeps one copy of each such function for the
// whole extension, and that copy must run on every CPU. Only what is declared afterwards (at::vec,
// whose classes live in the inline namespace at::vec::CPU_CAPABILITY, and the engine, in
// mmcl_fast::tile_engine::CPU_CAPABILITY) is compiled for the ISA, under names of its own.
// tests/test_cpu_isa.py disassembles the extension and checks that no AVX instruction lies outside
// those namespaces.
#pragma once

#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/NumericUtils.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <ATen/native/quantized/AffineQuantizerBase.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/Load.h>
#include <c10/util/MathConstants.h>
#include <c10/util/copysign.h>

#include <algorithm>
#include <array>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../../similarity.h"
#include "../runtime/blas.h"
#include "../runtime/flush_denormals.h"
#include "../runtime/worker_pool.h"
#include "cpu_isa.h"

#if defined(__x86_64__)
#include <immintrin.h>  // (sleef.h follows the target switch: it declares per-ISA functions only)
#endif

#if defined(MMCL_FAST_ISA_AVX512) + defined(MMCL_FAST_ISA_AVX2) + defined(MMCL_FAST_ISA_DEFAULT) != 1
#error "define exactly one of MMCL_FAST_ISA_DEFAULT, MMCL_FAST_ISA_AVX2, MMCL_FAST_ISA_AVX512"
#endif

// The target lists match what PyTorch compiles its own AVX2 / AVX512 kernels for. Neither GCC's
// C++ front end nor clang updates the ISA macros (__AVX2__, ...) at a target pragma, and headers
// that follow (sleef.h, at::vec) test them, so the branches define them too.
#if (defined(MMCL_FAST_ISA_AVX512) || defined(MMCL_FAST_ISA_AVX2)) && defined(__x86_64__) && \
    !defined(__GNUC__)
#error "the AVX copies need GCC or clang (#pragma target)"
#endif

#if defined(MMCL_FAST_ISA_AVX512) && defined(__x86_64__)
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#define MMCL_FAST_ISA_NAME "avx512"
#define MMCL_FAST_ISA_TARGETED
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#endif
#elif defined(MMCL_FAST_ISA_AVX2) && defined(__x86_64__)
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define MMCL_FAST_ISA_NAME "avx2"
#define MMCL_FAST_ISA_TARGETED
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#endif
#elif defined(MMCL_FAST_ISA_DEFAULT)
#define CPU_CAPABILITY DEFAULT
#define MMCL_FAST_ISA_NAME "default"
#else
#define MMCL_FAST_ISA_UNAVAILABLE  // an AVX copy in a non-x86 build: the file returns nullptr
#endif

// The ISA macros of the target set above: AVX2's for both AVX copies, AVX-512's for its own.
#ifdef MMCL_FAST_ISA_TARGETED
#ifndef __SSE3__
#define __SSE3__ 1
#endif
#ifndef __SSSE3__
#define __SSSE3__ 1
#endif
#ifndef __SSE4_1__
#define __SSE4_1__ 1
#endif
#ifndef __SSE4_2__
#define __SSE4_2__ 1
#endif
#ifndef __POPCNT__
#define __POPCNT__ 1
#endif
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#ifndef __BMI__
#define __BMI__ 1
#endif
#ifndef __BMI2__
#define __BMI2__ 1
#endif
#ifndef __LZCNT__
#define __LZCNT__ 1
#endif
#endif
#ifdef CPU_CAPABILITY_AVX512
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#endif
