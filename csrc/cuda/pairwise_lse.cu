// CUDA kernels of the pairwise operators: exact, deterministic-capable, with the tile products on
// the CUDA cores (SIMT, fp32 FMAs) or on the tensor cores (WMMA), see MathPath. Three reductions of
// the same tiles, a compile-time parameter RED of the same kernels: the log-sum-exp (kLse, the
// softmax losses), the softplus sums of the sigmoid loss (kSoftplus):
//   row_i = sum_j softplus(L_ij + t),  G_ij = g_i sigmoid(L_ij + t),  dbias = sum_ij G_ij,
// and the label-aware log-sum-exp (kLabel): with P(i) = {j : id_a[i] == id_b[j]} (the pair (i, i)
// without ids) and N(i) the other unmasked entries,
//   row_neg_i = log sum_{j in N(i)} exp(L_ij),  row_pos_i = log sum_{j in P(i)} exp(L_ij),
//   row_sum_i = sum_{j in P(i)} L_ij,
//   G_ij = gN_i e^{L_ij - row_neg_i} (+ the column terms)               for j in N(i),
//   G_ij = gP_i e^{L_ij - row_pos_i} + gS_i (+ the column terms)        for j in P(i).
//
// Formulas: see pairwise_lse.cuh. Everything is built from two generic "row" kernels over
// (A, B) = (X, Y) or (Y, X), which is possible because the problem is symmetric:
// col_lse(X, Y) = row_lse(Y, X), and the backward's G for the swapped problem (with the row and
// column gradients and LSEs swapped) is G^T, so dY = "dA" of the swapped launch.
//
//   rows_kernel:      one block per 64 rows of A, streaming 64-column tiles of B; each logit tile
//                     is computed once into shared memory and feeds the online row LSE and, in the
//                     default mode, per-tile column (max, sum) pairs merged exactly into a global
//                     64-bit (max, sum) word with a compare-and-swap loop:
//                       (m, s) + (m', s') = (M, s e^{m-M} + s' e^{m'-M}),  M = max(m, m')
//                     (no fixed-max shortcut, so logit_scale 100 cannot underflow).
//                     deterministic mode: the column LSE is a second launch on (Y, X).
//                     kSoftplus: the row sums of softplus(L + t), no column pass.
//                     kLabel: the three row statistics; the columns' are always the second
//                     launch on (Y, X) with the ids swapped (deterministic in both modes).
//   grad_rows_kernel: recomputes the tiles, G_ij = ga_i e^{L_ij - lse_a_i} + gb_j e^{L_ij - lse_b_j}
//                     (kSoftplus: G_ij = g sigmoid(L_ij + t), g = ga_i, or gb_j in the swapped launch),
//                     and accumulates dA_ik += sum_j G_ij phi(a_ik, b_jk) into float rows the block
//                     owns (no atomics), with phi = b (dot), 2 (b - a) (euclidean), -sign(a - b) (l1);
//                     per-block partial sums of G_ij L_ij give dscale (reduced in block order).
// Both kernels take the path and the reduction as template parameters; only the tile products
// differ between paths (logit_tile_*, grad_tile_*) and only the row statistic and G between
// reductions (row_stat_*, grad_entry): masks, NaN propagation, dscale and dbias are shared.
// The same source runs on the CPU under the host emulator of emulation/ (see kernel_launch.cuh),
// whose nvcuda::wmma keeps fragment layouts opaque (cuda_emulation_wmma.h).
//
// Tile sizes, shared memory, registers, occupancy, the expected ceiling and what to tune first:
// docs/design.md ("CUDA kernels").
#include "pairwise_lse.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <cmath>
#include <type_traits>

#include "../similarity.h"
#include "kernel_launch.cuh"

namespace mmcl_fast {
namespace cuda {
namespace {

namespace wmma = nvcuda::wmma;

// The tensor-core kernels need sm_80 (bf16 and TF32 WMMA). Device code compiled for an older
// architecture keeps them as traps, and effective_path() never launches them there.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define MMCL_FAST_TC_COMPILED 1
#else
#define MMCL_FAST_TC_COMPILED 0
#endif

constexpr int BM = 64, BN = 64, BK = 16, BKD = 32, THREADS = 256;
constexpr int LDS = BN + 4;  // row stride of the logit tile: a multiple of 4 floats, as wmma's ldm needs
constexpr int kSimt = static_cast<int>(MathPath::Simt), kTensorCore = static_cast<int>(MathPath::TensorCore);
constexpr int kSimDot = static_cast<int>(Similarity::Dot);
constexpr int kSimEuclid = static_cast<int>(Similarity::Euclidean);
constexpr int kSimL1 = static_cast<int>(Similarity::L1);
constexpr int kLse = 0, kSoftplus = 1, kLabel = 2;  // the reductions (RED)

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// exp(v - m) with a running max m = -inf (nothing seen yet) treated as 0, so exp(-inf) = 0.
__device__ __forceinline__ float exp_offset(float m) { return m == -INFINITY ? 0.f : m; }

// log(sum) from a running (max, sum): -inf for an empty sum, NaN when a NaN logit reached the sum
// (fmaxf skips NaN, so the max alone cannot carry it).
__device__ __forceinline__ float finish_lse(float m, float s) {
  return s > 0.f ? m + logf(s) : (s == 0.f ? -INFINITY : __int_as_float(0x7fffffff));
}

__device__ __forceinline__ unsigned long long pack_pair(float m, float s) {
  return (static_cast<unsigned long long>(__float_as_uint(s)) << 32) | __float_as_uint(m);
}

__device__ void merge_pair(unsigned long long* addr, float m, float s) {
  unsigned long long old = relaxed_load(addr), assumed;
  do {
    assumed = old;
    const float m0 = __uint_as_float(static_cast<unsigned>(assumed & 0xffffffffu));
    const float s0 = __uint_as_float(static_cast<unsigned>(assumed >> 32));
    const float mx = fmaxf(m0, m);
    const float off = exp_offset(mx);
    const float ns = s0 * expf(m0 - off) + s * expf(m - off);
    old = atomicCAS(addr, assumed, pack_pair(mx, ns));
  } while (old != assumed);
}

// softplus(z) = max(z, 0) + log1p(exp(-|z|)) and sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e),
// e = exp(-|z|): exp of a non-positive number only, so nothing overflows at any scale or bias.
__device__ __forceinline__ float softplus_f(float z) { return fmaxf(z, 0.f) + log1pf(expf(-fabsf(z))); }
__device__ __forceinline__ float sigmoid_f(float z) {
  const float e = expf(-fabsf(z));
  return (z >= 0.f ? 1.f : e) / (1.f + e);
}

// Whether the unmasked entry (gr, gc) of the matrix is a positive pair (kLabel): equal ids, or
// gr == gc without ids.
__device__ __forceinline__ bool positive_pair(const int64_t* ids_a, const int64_t* ids_b, int64_t gr, int64_t gc) {
  return ids_a != nullptr ? ids_a[gr] == ids_b[gc] : gr == gc;
}

// What G is made of: the upstream gradients of the row (ga) and column (gb) statistics, the LSEs
// (kLse; kLabel: those of the negatives) and the bias (kSoftplus, set by the kernel); kLabel adds
// the positives' gradients and LSEs, the gradients of the positive sums and the ids (null: the
// pairs (i, i)). A null pointer: that term is absent.
struct GradSource {
  const float* ga;
  const float* gb;
  const float* lse_a;
  const float* lse_b;
  float bias = 0.f;
  const float* ga_pos = nullptr;
  const float* gb_pos = nullptr;
  const float* lse_a_pos = nullptr;
  const float* lse_b_pos = nullptr;
  const float* ga_sum = nullptr;
  const float* gb_sum = nullptr;
  const int64_t* ids_a = nullptr;
  const int64_t* ids_b = nullptr;
  bool labels = false;  // kSoftplus: the pairs positive_pair lists are positives (else all negatives)
};

// G_ij of one tile entry (0 for -inf: masked or outside the matrix). kLse: ga_i e^{L - lse_a_i} +
// gb_j e^{L - lse_b_j}. kSoftplus (exactly one of ga, gb: gb in the swapped launch of dY):
// g sigmoid(L + t), and -g sigmoid(-(L + t)) for a positive when g.labels. kLabel: kLse's terms for a negative; for a positive
// ga_pos_i e^{L - lse_a_pos_i} + ga_sum_i (+ the same of the column when gb_pos is given).
template <int RED>
__device__ __forceinline__ float grad_entry(float l, int64_t gr, int64_t gc, const GradSource& g) {
  if (l == -INFINITY) return 0.f;
  if constexpr (RED == kLabel) {
    float v = 0.f;
    if (positive_pair(g.ids_a, g.ids_b, gr, gc)) {
      if (g.ga_pos != nullptr) v += g.ga_pos[gr] * expf(l - g.lse_a_pos[gr]) + g.ga_sum[gr];
      if (g.gb_pos != nullptr) v += g.gb_pos[gc] * expf(l - g.lse_b_pos[gc]) + g.gb_sum[gc];
      return v;
    }
  }
  if constexpr (RED == kLse || RED == kLabel) {
    float v = 0.f;
    if (g.ga != nullptr) v += g.ga[gr] * expf(l - exp_offset(g.lse_a[gr]));
    if (g.gb != nullptr) v += g.gb[gc] * expf(l - exp_offset(g.lse_b[gc]));
    return v;
  } else {
    const float w = g.ga != nullptr ? g.ga[gr] : g.gb[gc];
    if (g.labels && positive_pair(g.ids_a, g.ids_b, gr, gc)) return -w * sigmoid_f(-(l + g.bias));
    return w * sigmoid_f(l + g.bias);
  }
}

// A thread's running sums over its G entries: sum G L (dscale * s) and sum G (dbias).
struct GradSums {
  float gl = 0.f;
  float g = 0.f;
};

// The logit of a tile entry from its raw product acc (a.b, or sum |a - b| for l1):
// s * sim(a_gr, b_gc), or -inf outside the matrix and on the masked diagonal.
template <int SIM>
__device__ __forceinline__ float logit_value(float acc, int64_t gr, int64_t gc, int64_t na, int64_t nb,
                                             bool mask, float s, const float* an, const float* bn) {
  if (gr >= na || gc >= nb || (mask && gr == gc)) return -INFINITY;
  if (SIM == kSimDot) return s * acc;
  if (SIM == kSimEuclid) return s * (2.f * acc - an[gr] - bn[gc]);
  return -s * acc;
}

// SIMT: Ls[r][c] = s * sim(a_{r0+r}, b_{c0+c}), each thread a 4 x 4 register block, fp32 FMAs.
template <typename T, int SIM>
__device__ void logit_tile_simt(const T* __restrict__ a, const T* __restrict__ b, int64_t na, int64_t nb,
                                int64_t D, int64_t r0, int64_t c0, float s, const float* an,
                                const float* bn, bool mask, float (*Ls)[LDS]) {
  MMCL_SHARED(As, float[BM][BK + 1]);
  MMCL_SHARED(Bs, float[BN][BK + 1]);
  const int tid = threadIdx.x, tr = tid / 16, tc = tid % 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < D; k0 += BK) {
    for (int e = tid; e < BM * BK; e += THREADS) {
      const int r = e / BK, k = e % BK;
      As[r][k] = (r0 + r < na && k0 + k < D) ? to_f(a[(r0 + r) * D + k0 + k]) : 0.f;
      Bs[r][k] = (c0 + r < nb && k0 + k < D) ? to_f(b[(c0 + r) * D + k0 + k]) : 0.f;
    }
    __syncthreads();
MMCL_UNROLL
    for (int kk = 0; kk < BK; ++kk) {
MMCL_UNROLL
      for (int i = 0; i < 4; ++i) {
        const float av = As[tr + 16 * i][kk];
MMCL_UNROLL
        for (int j = 0; j < 4; ++j) {
          const float bv = Bs[tc + 16 * j][kk];
          acc[i][j] += SIM == kSimL1 ? fabsf(av - bv) : av * bv;
        }
      }
    }
    __syncthreads();
  }
MMCL_UNROLL
  for (int i = 0; i < 4; ++i) {
MMCL_UNROLL
    for (int j = 0; j < 4; ++j) {
      const int r = tr + 16 * i, c = tc + 16 * j;
      Ls[r][c] = logit_value<SIM>(acc[i][j], r0 + r, c0 + c, na, nb, mask, s, an, bn);
    }
  }
}

#if MMCL_FAST_TC_COMPILED
// --- tensor-core tiles (WMMA) ---------------------------------------------------------------
// The operand type the tensor cores read: the input's own half type, or TF32 for float32 (one
// mma step then covers 8 instead of 16 features).
template <typename T> struct TcOperand { using type = T; static constexpr int K = 16; };
template <> struct TcOperand<float> { using type = wmma::precision::tf32; static constexpr int K = 8; };

constexpr int KT = 32;  // features staged per step (tensor-core path)
// 16 bytes of row padding: keeps every ldm a multiple of 16 bytes and each 16-row fragment start
// 32-byte aligned, and shifts consecutive rows by 4 banks.
template <typename T> constexpr int kPad = 16 / static_cast<int>(sizeof(T));
template <typename T> using StageRows = T[BM][KT + kPad<T>];

// The two staging buffers of the tensor-core path, one pair per block, shared by the logit tile
// and the gradient product (which runs after the tile is complete).
template <typename T>
__device__ __forceinline__ StageRows<T>& stage_a() {
  MMCL_SHARED_ALIGNED(stage_a_rows, 32, StageRows<T>);
  return stage_a_rows;
}
template <typename T>
__device__ __forceinline__ StageRows<T>& stage_b() {
  MMCL_SHARED_ALIGNED(stage_b_rows, 32, StageRows<T>);
  return stage_b_rows;
}

// dst[r][k] = src[r0 + r][k0 + k] (zero outside the matrix), in the input type.
template <typename T>
__device__ void stage_rows(const T* __restrict__ src, int64_t n, int64_t D, int64_t r0, int64_t k0, StageRows<T>& dst) {
  for (int e = threadIdx.x; e < BM * KT; e += THREADS) {
    const int r = e / KT, k = e % KT;
    dst[r][k] = (r0 + r < n && k0 + k < D) ? src[(r0 + r) * D + k0 + k] : from_f<T>(0.f);
  }
}

// TF32 operands are rounded to nearest (the tensor cores would drop the low bits); half types
// are used as loaded. Element-wise, so independent of the fragment layout.
template <typename Frag>
__device__ __forceinline__ void round_operand(Frag& f) {
  if constexpr (std::is_same_v<typename Frag::element_type, float>) {
MMCL_UNROLL
    for (int i = 0; i < f.num_elements; ++i) f.x[i] = wmma::__float_to_tf32(f.x[i]);
  }
}

// Tensor cores: Ls = the raw products a.b of the tile (64 x 64), then the logits in place.
// Warp w computes rows 16 (w % 4) .. +16 and columns 32 (w / 4) .. +32 (two accumulators).
template <typename T, int SIM>
__device__ void logit_tile_tc(const T* __restrict__ a, const T* __restrict__ b, int64_t na, int64_t nb,
                              int64_t D, int64_t r0, int64_t c0, float s, const float* an,
                              const float* bn, bool mask, float (*Ls)[LDS]) {
  using Op = TcOperand<T>;
  StageRows<T>& As = stage_a<T>();
  StageRows<T>& Bs = stage_b<T>();
  const int warp = threadIdx.x / 32, wr = warp % 4, wc = warp / 4;
  wmma::fragment<wmma::accumulator, 16, 16, Op::K, float> acc[2];
  wmma::fill_fragment(acc[0], 0.f);
  wmma::fill_fragment(acc[1], 0.f);
  for (int64_t k0 = 0; k0 < D; k0 += KT) {
    stage_rows(a, na, D, r0, k0, As);
    stage_rows(b, nb, D, c0, k0, Bs);
    __syncthreads();
    const int64_t left = D - k0;  // skip the all-zero steps of a last partial slice
    const int steps = static_cast<int>(left >= KT ? KT / Op::K : (left + Op::K - 1) / Op::K);
    for (int st = 0; st < steps; ++st) {
      const int kk = st * Op::K;
      wmma::fragment<wmma::matrix_a, 16, 16, Op::K, typename Op::type, wmma::row_major> fa;
      wmma::load_matrix_sync(fa, &As[16 * wr][kk], KT + kPad<T>);
      round_operand(fa);
MMCL_UNROLL
      for (int f = 0; f < 2; ++f) {
        wmma::fragment<wmma::matrix_b, 16, 16, Op::K, typename Op::type, wmma::col_major> fb;
        wmma::load_matrix_sync(fb, &Bs[32 * wc + 16 * f][kk], KT + kPad<T>);
        round_operand(fb);
        wmma::mma_sync(acc[f], fa, fb, acc[f]);
      }
    }
    __syncthreads();
  }
  wmma::store_matrix_sync(&Ls[16 * wr][32 * wc], acc[0], LDS, wmma::mem_row_major);
  wmma::store_matrix_sync(&Ls[16 * wr][32 * wc + 16], acc[1], LDS, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < BM * BN; e += THREADS) {
    const int r = e / BN, c = e % BN;
    Ls[r][c] = logit_value<SIM>(Ls[r][c], r0 + r, c0 + c, na, nb, mask, s, an, bn);
  }
}

#else  // device code for an architecture without bf16/TF32 WMMA: never launched there
template <typename T, int SIM>
__device__ void logit_tile_tc(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, float, const float*,
                              const float*, bool, float (*)[LDS]) {
  __trap();
}
#endif  // MMCL_FAST_TC_COMPILED

template <typename T, int SIM, int PATH>
__device__ __forceinline__ void logit_tile(const T* __restrict__ a, const T* __restrict__ b, int64_t na,
                                           int64_t nb, int64_t D, int64_t r0, int64_t c0, float s,
                                           const float* an, const float* bn, bool mask, float (*Ls)[LDS]) {
  if constexpr (PATH == kTensorCore) logit_tile_tc<T, SIM>(a, b, na, nb, D, r0, c0, s, an, bn, mask, Ls);
  else logit_tile_simt<T, SIM>(a, b, na, nb, D, r0, c0, s, an, bn, mask, Ls);
}

// kLabel's ids (null: the pairs (i, i) are the positives) and its two further row outputs; for
// kSoftplus, `active` makes the pairs with equal ids positives (their term softplus(-(L + t))).
struct LabelRows {
  const int64_t* ids_a = nullptr;
  const int64_t* ids_b = nullptr;
  float* pos_out = nullptr;  // LSE over the positives [na]
  float* sum_out = nullptr;  // sum of the positive logits [na]
  bool active = false;
};

// The label-aware statistics of row `grp` of the tile in Ls (4 threads q = 0..3 per row, 16 entries
// each): the online LSEs over the negatives (rmax, rsum) and over the positives (pmax, psum) and
// the sum of the positive logits (plsum), updated by thread q = 0.
__device__ __forceinline__ void label_row_update(const float (*Ls)[LDS], int grp, int q, int64_t gr, int64_t c0,
                                                 const LabelRows& lab, float* rmax, float* rsum, float* pmax,
                                                 float* psum, float* plsum) {
  unsigned positive = 0;  // bit k: entry q * 16 + k is a positive
  float mn = -INFINITY, mp = -INFINITY, ls = 0.f;
  for (int k = 0; k < 16; ++k) {
    const float l = Ls[grp][q * 16 + k];
    if (l == -INFINITY) continue;  // masked or outside the matrix: in neither set
    if (positive_pair(lab.ids_a, lab.ids_b, gr, c0 + q * 16 + k)) {
      positive |= 1u << k;
      mp = fmaxf(mp, l);
      ls += l;
    } else {
      mn = fmaxf(mn, l);
    }
  }
  mn = fmaxf(mn, __shfl_xor_sync(0xffffffffu, mn, 1));
  mn = fmaxf(mn, __shfl_xor_sync(0xffffffffu, mn, 2));
  mp = fmaxf(mp, __shfl_xor_sync(0xffffffffu, mp, 1));
  mp = fmaxf(mp, __shfl_xor_sync(0xffffffffu, mp, 2));
  ls += __shfl_xor_sync(0xffffffffu, ls, 1);
  ls += __shfl_xor_sync(0xffffffffu, ls, 2);
  const float nmn = fmaxf(rmax[grp], mn), offn = exp_offset(nmn);
  const float nmp = fmaxf(pmax[grp], mp), offp = exp_offset(nmp);
  float an = 0.f, ap = 0.f;
  for (int k = 0; k < 16; ++k) {
    const float l = Ls[grp][q * 16 + k];
    if ((positive >> k) & 1u) ap += expf(l - offp);
    else an += expf(l - offn);  // -inf entries add exp(-inf) = 0
  }
  an += __shfl_xor_sync(0xffffffffu, an, 1);
  an += __shfl_xor_sync(0xffffffffu, an, 2);
  ap += __shfl_xor_sync(0xffffffffu, ap, 1);
  ap += __shfl_xor_sync(0xffffffffu, ap, 2);
  __syncwarp();
  if (q == 0) {
    rsum[grp] = rsum[grp] * expf(rmax[grp] - offn) + an;
    rmax[grp] = nmn;
    psum[grp] = psum[grp] * expf(pmax[grp] - offp) + ap;
    pmax[grp] = nmp;
    plsum[grp] += ls;
  }
}

// The row statistic of A's rows over B (one block per 64 rows): kLse the online row LSE (and, with
// col_pairs, the per-tile column (max, sum) pairs), kSoftplus sum_j softplus(L_ij + bias), kLabel
// the LSE over the negatives into row_out and lab's LSE over the positives and positive sum.
template <typename T, int SIM, int PATH, int RED>
__global__ void __launch_bounds__(THREADS)
rows_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t na, int64_t nb, int64_t D,
            const float* __restrict__ scale, const float* bias, const float* an, const float* bn, bool mask,
            float* __restrict__ row_out, unsigned long long* col_pairs, LabelRows lab) {
  MMCL_SHARED_ALIGNED(Ls, 32, float[BM][LDS]);
  MMCL_SHARED(rmax, float[BM]);
  MMCL_SHARED(rsum, float[BM]);
  MMCL_SHARED(pmax, float[BM]);   // kLabel: the positives' running LSE and logit sum
  MMCL_SHARED(psum, float[BM]);
  MMCL_SHARED(plsum, float[BM]);
  const int tid = threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * BM;
  const float s = *scale;
  const float t = RED == kSoftplus ? *bias : 0.f;
  if (tid < BM) { rmax[tid] = -INFINITY; rsum[tid] = 0.f; pmax[tid] = -INFINITY; psum[tid] = 0.f; plsum[tid] = 0.f; }
  __syncthreads();
  const int grp = tid >> 2, q = tid & 3;  // 4 threads per row (or column), 16 entries each
  for (int64_t c0 = 0; c0 < nb; c0 += BN) {
    logit_tile<T, SIM, PATH>(a, b, na, nb, D, r0, c0, s, an, bn, mask, Ls);
    __syncthreads();
    if constexpr (RED == kSoftplus) {  // softplus sum of row `grp` (-inf entries add softplus(-inf) = 0)
      float acc = 0.f;
      for (int c = q * 16; c < q * 16 + 16; ++c) {
        const float l = Ls[grp][c];
        const bool pos = lab.active && l != -INFINITY && positive_pair(lab.ids_a, lab.ids_b, r0 + grp, c0 + c);
        acc += softplus_f(pos ? -(l + t) : l + t);
      }
      acc += __shfl_xor_sync(0xffffffffu, acc, 1);
      acc += __shfl_xor_sync(0xffffffffu, acc, 2);
      if (q == 0) rsum[grp] += acc;  // only this thread reads rsum[grp] before the next __syncthreads
    } else if constexpr (RED == kLabel) {
      label_row_update(Ls, grp, q, r0 + grp, c0, lab, rmax, rsum, pmax, psum, plsum);
    } else {  // online row LSE of row `grp`
      float m = -INFINITY;
      for (int c = q * 16; c < q * 16 + 16; ++c) m = fmaxf(m, Ls[grp][c]);
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      const float old_m = rmax[grp], old_s = rsum[grp];
      const float nm = fmaxf(old_m, m), off = exp_offset(nm);
      float acc = 0.f;
      for (int c = q * 16; c < q * 16 + 16; ++c) acc += expf(Ls[grp][c] - off);
      acc += __shfl_xor_sync(0xffffffffu, acc, 1);
      acc += __shfl_xor_sync(0xffffffffu, acc, 2);
      __syncwarp();
      if (q == 0) { rsum[grp] = old_s * expf(old_m - off) + acc; rmax[grp] = nm; }
    }
    if (RED == kLse && col_pairs != nullptr) {  // this tile's (max, sum) of column `grp`, merged exactly
      float m = -INFINITY;
      for (int r = q * 16; r < q * 16 + 16; ++r) m = fmaxf(m, Ls[r][grp]);
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
      const float off = exp_offset(m);
      float acc = 0.f;
      for (int r = q * 16; r < q * 16 + 16; ++r) acc += expf(Ls[r][grp] - off);
      acc += __shfl_xor_sync(0xffffffffu, acc, 1);
      acc += __shfl_xor_sync(0xffffffffu, acc, 2);
      // an all-masked tile adds nothing; a NaN (acc NaN, m -inf) must still reach the column
      if (q == 0 && c0 + grp < nb && (m != -INFINITY || acc != 0.f)) merge_pair(&col_pairs[c0 + grp], m, acc);
    }
    __syncthreads();
  }
  if (tid < BM && r0 + tid < na) {
    row_out[r0 + tid] = RED == kSoftplus ? rsum[tid] : finish_lse(rmax[tid], rsum[tid]);
    if (RED == kLabel) {
      lab.pos_out[r0 + tid] = finish_lse(pmax[tid], psum[tid]);
      lab.sum_out[r0 + tid] = plsum[tid];
    }
  }
}

template <int SIM>
__device__ __forceinline__ float phi(float av, float bv) {
  if (SIM == kSimDot) return bv;
  if (SIM == kSimEuclid) return 2.f * (bv - av);
  return av > bv ? -1.f : (av < bv ? 1.f : 0.f);
}

// SIMT: G in place of L, then dA_ik += sum_j G_ij phi(a_ik, b_jk) in float32 FMAs. Adds this
// thread's share of sum_ij G_ij L_ij and sum_ij G_ij to *sums.
template <typename T, int SIM, int RED>
__device__ void grad_tile_simt(const T* __restrict__ a, const T* __restrict__ b, int64_t na, int64_t nb,
                               int64_t D, int64_t r0, int64_t c0, const GradSource& src, float (*Ls)[LDS],
                               float* __restrict__ da_acc, GradSums* sums) {
  MMCL_SHARED(Ad, float[BM][BKD + 1]);
  MMCL_SHARED(Bd, float[BN][BKD + 1]);
  const int tid = threadIdx.x;
  for (int e = tid; e < BM * BN; e += THREADS) {  // G in place of L
    const int r = e / BN, c = e % BN;
    const float l = Ls[r][c];
    const float g = grad_entry<RED>(l, r0 + r, c0 + c, src);
    if (l != -INFINITY) {
      sums->gl += g * l;
      sums->g += g;
    }
    Ls[r][c] = g;
  }
  __syncthreads();
  for (int64_t k0 = 0; k0 < D; k0 += BKD) {
    for (int e = tid; e < BM * BKD; e += THREADS) {
      const int r = e / BKD, k = e % BKD;
      Ad[r][k] = (r0 + r < na && k0 + k < D) ? to_f(a[(r0 + r) * D + k0 + k]) : 0.f;
      Bd[r][k] = (c0 + r < nb && k0 + k < D) ? to_f(b[(c0 + r) * D + k0 + k]) : 0.f;
    }
    __syncthreads();
    for (int e = tid; e < BM * BKD; e += THREADS) {
      const int r = e / BKD, k = e % BKD;
      if (r0 + r >= na || k0 + k >= D) continue;
      const float av = Ad[r][k];
      float acc = 0.f;
MMCL_UNROLL_N(8)
      for (int c = 0; c < BN; ++c) acc += Ls[r][c] * phi<SIM>(av, Bd[c][k]);
      da_acc[(r0 + r) * D + k0 + k] += acc;
    }
    __syncthreads();
  }
}

#if MMCL_FAST_TC_COMPILED
// Tensor cores (dot, euclidean): G row by row (4 threads per row) with its row sums, then
// dA += G B per 64 x 32 slice of features on the tensor cores, G as the operand type:
//   float16:  each row of G is scaled by 2^e_r, chosen so that the row's largest |G| lies in
//             [2^14, 2^15): G is of order 1/B, which float16 would flush into its subnormals; the
//             power of two is exact and is undone on the float32 product;
//   bfloat16: G as bfloat16 (float32's range, 8 bits of mantissa);
//   float32:  G read from Ls as TF32.
// euclidean: phi = 2 (b - a), so dA_i = 2 (G B)_i - 2 a_i sum_j G_ij, the second term in float32.
// Adds this thread's share of sum_ij G_ij L_ij and sum_ij G_ij to *sums.
template <typename T, int SIM, int RED>
__device__ void grad_tile_tc(const T* __restrict__ a, const T* __restrict__ b, int64_t na, int64_t nb,
                             int64_t D, int64_t r0, int64_t c0, const GradSource& src, float (*Ls)[LDS],
                             float* __restrict__ da_acc, GradSums* sums) {
  using Op = TcOperand<T>;
  constexpr bool kOwnG = !std::is_same_v<T, float>;  // float32's G operand is Ls itself
  static_assert(BN + kPad<float> == LDS, "float32 G is read from Ls with the G operand's stride");
  MMCL_SHARED_ALIGNED(Out, 32, float[BM][KT + 4]);
  MMCL_SHARED(row_sum, float[BM]);
  MMCL_SHARED(row_exp, int[BM]);
  T (*Gs)[BN + kPad<T>];
  if constexpr (kOwnG) {
    MMCL_SHARED_ALIGNED(Gh, 32, T[BM][BN + kPad<T>]);
    Gs = Gh;
  } else {
    Gs = Ls;
  }
  const int tid = threadIdx.x, grp = tid >> 2, q = tid & 3;
  const int64_t gr = r0 + grp;
  float gmax = 0.f, gsum = 0.f;
  for (int c = q * 16; c < q * 16 + 16; ++c) {
    const float l = Ls[grp][c];
    const float g = grad_entry<RED>(l, gr, c0 + c, src);  // (rows and columns outside the matrix are -inf)
    if (l != -INFINITY) sums->gl += g * l;
    Ls[grp][c] = g;
    gmax = fmaxf(gmax, fabsf(g));
    gsum += g;
  }
  sums->g += gsum;  // this thread's 16 entries, before the row's shuffle sum
  gmax = fmaxf(gmax, __shfl_xor_sync(0xffffffffu, gmax, 1));
  gmax = fmaxf(gmax, __shfl_xor_sync(0xffffffffu, gmax, 2));
  gsum += __shfl_xor_sync(0xffffffffu, gsum, 1);
  gsum += __shfl_xor_sync(0xffffffffu, gsum, 2);
  int e = 0;
  if (std::is_same_v<T, __half> && gmax > 0.f && gmax <= 3.0e38f) {
    frexpf(gmax, &e);
    e = 15 - e;
  }
  if constexpr (kOwnG) {
    for (int c = q * 16; c < q * 16 + 16; ++c) Gs[grp][c] = from_f<T>(ldexpf(Ls[grp][c], e));
  }
  if (q == 0) { row_sum[grp] = gsum; row_exp[grp] = e; }
  StageRows<T>& Bs = stage_b<T>();
  const int warp = tid / 32, wr = warp % 4, wc = warp / 4;
  for (int64_t d0 = 0; d0 < D; d0 += KT) {
    stage_rows(b, nb, D, c0, d0, Bs);  // Bs[j][k] = b[c0 + j][d0 + k]
    __syncthreads();
    wmma::fragment<wmma::accumulator, 16, 16, Op::K, float> acc;
    wmma::fill_fragment(acc, 0.f);
    for (int jj = 0; jj < BN; jj += Op::K) {
      wmma::fragment<wmma::matrix_a, 16, 16, Op::K, typename Op::type, wmma::row_major> fg;
      wmma::load_matrix_sync(fg, &Gs[16 * wr][jj], BN + kPad<T>);
      round_operand(fg);
      wmma::fragment<wmma::matrix_b, 16, 16, Op::K, typename Op::type, wmma::row_major> fb;
      wmma::load_matrix_sync(fb, &Bs[jj][16 * wc], KT + kPad<T>);
      round_operand(fb);
      wmma::mma_sync(acc, fg, fb, acc);
    }
    wmma::store_matrix_sync(&Out[16 * wr][16 * wc], acc, KT + 4, wmma::mem_row_major);
    __syncthreads();
    for (int i = tid; i < BM * KT; i += THREADS) {
      const int r = i / KT, k = i % KT;
      if (r0 + r >= na || d0 + k >= D) continue;
      float v = ldexpf(Out[r][k], -row_exp[r]);
      if (SIM == kSimEuclid) v = 2.f * v - 2.f * to_f(a[(r0 + r) * D + d0 + k]) * row_sum[r];
      da_acc[(r0 + r) * D + d0 + k] += v;
    }
    __syncthreads();
  }
}

#else
template <typename T, int SIM, int RED>
__device__ void grad_tile_tc(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t, const GradSource&,
                             float (*)[LDS], float*, GradSums*) {
  __trap();
}
#endif  // MMCL_FAST_TC_COMPILED

// The block's sum of v over its threads, in a fixed order (deterministic); valid in thread 0.
__device__ float block_sum(float v, float* red) {
  const int tid = threadIdx.x;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((tid & 31) == 0) red[tid >> 5] = v;
  __syncthreads();
  float t = 0.f;
  if (tid == 0)
    for (int w = 0; w < THREADS / 32; ++w) t += red[w];
  __syncthreads();
  return t;
}

// dA (float accumulators the block's rows own) from the recomputed tiles of A's rows over B, and
// the block's partial sums of G L (dscale_part) and of G (dbias_part, kSoftplus), when not null.
template <typename T, int SIM, int PATH, int RED>
__global__ void __launch_bounds__(THREADS)
grad_rows_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t na, int64_t nb, int64_t D,
                 const float* __restrict__ scale, const float* bias, const float* an, const float* bn, bool mask,
                 GradSource src, float* __restrict__ da_acc, float* dscale_part, float* dbias_part) {
  MMCL_SHARED_ALIGNED(Ls, 32, float[BM][LDS]);
  MMCL_SHARED(red, float[THREADS / 32]);
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * BM;
  const float s = *scale;
  if (RED == kSoftplus) src.bias = *bias;
  GradSums sums;  // over this thread's entries
  for (int64_t c0 = 0; c0 < nb; c0 += BN) {
    logit_tile<T, SIM, PATH>(a, b, na, nb, D, r0, c0, s, an, bn, mask, Ls);
    __syncthreads();
    if constexpr (PATH == kTensorCore) grad_tile_tc<T, SIM, RED>(a, b, na, nb, D, r0, c0, src, Ls, da_acc, &sums);
    else grad_tile_simt<T, SIM, RED>(a, b, na, nb, D, r0, c0, src, Ls, da_acc, &sums);
  }
  if (dscale_part != nullptr) {
    const float t = block_sum(sums.gl, red);
    if (threadIdx.x == 0) dscale_part[blockIdx.x] = t;
  }
  if (dbias_part != nullptr) {
    const float t = block_sum(sums.g, red);
    if (threadIdx.x == 0) dbias_part[blockIdx.x] = t;
  }
}

template <typename T>
__global__ void sq_norms_kernel(const T* __restrict__ a, int64_t n, int64_t D, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float acc = 0.f;
  for (int64_t k = 0; k < D; ++k) { const float v = to_f(a[i * D + k]); acc += v * v; }
  out[i] = acc;
}

__global__ void fill_pairs_kernel(unsigned long long* p, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) p[i] = pack_pair(-INFINITY, 0.f);
}

__global__ void finish_pairs_kernel(const unsigned long long* p, int64_t n, float* lse) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float m = __uint_as_float(static_cast<unsigned>(p[i] & 0xffffffffu));
  const float s = __uint_as_float(static_cast<unsigned>(p[i] >> 32));
  lse[i] = finish_lse(m, s);
}

template <typename T>
__global__ void scale_out_kernel(const float* __restrict__ acc, int64_t n, const float* scale, T* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = from_f<T>(*scale * acc[i]);
}

// *out = sum of the n partials (in a fixed order: deterministic), divided by *divisor if given.
__global__ void sum_parts_kernel(const float* part, int64_t n, const float* divisor, float* out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double t = 0.0;
  for (int64_t i = 0; i < n; ++i) t += part[i];
  *out = static_cast<float>(divisor != nullptr ? t / *divisor : t);
}

inline unsigned blocks(int64_t n, int per) { return static_cast<unsigned>((n + per - 1) / per); }
inline size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

template <int V> using Constant = std::integral_constant<int, V>;

// Calls f(T{}, Constant<SIM>{}, Constant<PATH>{}) for the runtime dtype, similarity and path
// (l1 has no tensor-core instantiation).
template <typename F>
cudaError_t dispatch(DType dt, int sim, MathPath path, F&& f) {
  const bool tc = path == MathPath::TensorCore;
  auto by_sim = [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    switch (sim) {
      case kSimDot:
        if (tc) f(T{}, Constant<kSimDot>{}, Constant<kTensorCore>{});
        else f(T{}, Constant<kSimDot>{}, Constant<kSimt>{});
        return cudaSuccess;
      case kSimEuclid:
        if (tc) f(T{}, Constant<kSimEuclid>{}, Constant<kTensorCore>{});
        else f(T{}, Constant<kSimEuclid>{}, Constant<kSimt>{});
        return cudaSuccess;
      case kSimL1: f(T{}, Constant<kSimL1>{}, Constant<kSimt>{}); return cudaSuccess;
      default: return cudaErrorInvalidValue;
    }
  };
  switch (dt) {
    case DType::F32: return by_sim(float{});
    case DType::F16: return by_sim(__half{});
    case DType::BF16: return by_sim(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

struct Norms { float* x; float* y; };

template <typename T>
Norms launch_norms(const Problem& p, float* ws, cudaStream_t st) {
  Norms n{ws, ws + p.M};
  launch_kernel(sq_norms_kernel<T>, blocks(p.M, 256), 256, st, static_cast<const T*>(p.x), p.M, p.D, n.x);
  launch_kernel(sq_norms_kernel<T>, blocks(p.N, 256), 256, st, static_cast<const T*>(p.y), p.N, p.D, n.y);
  return n;
}

}  // namespace

// Whether the current device has sm_80's tensor-core operations (cached per device).
bool tensor_cores_supported() {
#ifdef MMCL_FAST_CUDA_EMULATION
  return true;
#else
  static int cached[64] = {};  // 0 unknown, 1 no, 2 yes (a benign race: every writer writes the same)
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0) return false;
  if (device < 64 && cached[device] != 0) return cached[device] == 2;
  int major = 0;
  const bool yes = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 8;
  if (device < 64) cached[device] = yes ? 2 : 1;
  return yes;
#endif
}

MathPath effective_path(const Problem& p) {
  return p.path == MathPath::TensorCore && p.similarity != kSimL1 && tensor_cores_supported() ? MathPath::TensorCore
                                                                                                : MathPath::Simt;
}

size_t lse_forward_workspace(const Problem& p, bool compute_col, bool deterministic) {
  size_t b = align256(sizeof(float) * size_t(p.M + p.N));
  if (compute_col && !deterministic) b += align256(sizeof(unsigned long long) * size_t(p.N));
  return b;
}

cudaError_t lse_forward(const Problem& p, float* row_lse, float* col_lse, bool compute_col,
                        bool deterministic, void* workspace, cudaStream_t st) {
  char* ws = static_cast<char*>(workspace);
  float* norms_ws = reinterpret_cast<float*>(ws);
  auto* pairs = reinterpret_cast<unsigned long long*>(ws + align256(sizeof(float) * size_t(p.M + p.N)));
  const bool atomic_cols = compute_col && !deterministic;
  cudaError_t err = dispatch(p.dtype, p.similarity, effective_path(p), [&](auto tag, auto sim_c, auto path_c) {
    using T = decltype(tag);
    constexpr int SIM = decltype(sim_c)::value, PATH = decltype(path_c)::value;
    Norms n{nullptr, nullptr};
    if (SIM == kSimEuclid) n = launch_norms<T>(p, norms_ws, st);
    if (atomic_cols) launch_kernel(fill_pairs_kernel, blocks(p.N, 256), 256, st, pairs, p.N);
    const T* x = static_cast<const T*>(p.x);
    const T* y = static_cast<const T*>(p.y);
    launch_kernel(rows_kernel<T, SIM, PATH, kLse>, blocks(p.M, BM), THREADS, st,
        x, y, p.M, p.N, p.D, p.scale, nullptr, n.x, n.y, p.mask_diag, row_lse, atomic_cols ? pairs : nullptr,
        LabelRows{});
    if (atomic_cols) {
      launch_kernel(finish_pairs_kernel, blocks(p.N, 256), 256, st, pairs, p.N, col_lse);
    } else if (compute_col) {
      launch_kernel(rows_kernel<T, SIM, PATH, kLse>, blocks(p.N, BM), THREADS, st,
          y, x, p.N, p.M, p.D, p.scale, nullptr, n.y, n.x, p.mask_diag, col_lse, nullptr, LabelRows{});
    }
  });
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

namespace {

// The backwards' workspace, carved in this order: euclidean norms, the float dX and dY
// accumulators, the per-block dscale partials and (with bias_parts) the per-block dbias partials.
struct BackwardBuffers {
  float* norms;
  float* dx_acc;
  float* dy_acc;
  float* scale_parts;
  float* bias_parts;
};

size_t backward_bytes(const Problem& p, bool bias_parts) {
  const size_t parts = align256(sizeof(float) * size_t(blocks(p.M, BM)));
  return align256(sizeof(float) * size_t(p.M + p.N)) + align256(sizeof(float) * size_t(p.M) * size_t(p.D)) +
         align256(sizeof(float) * size_t(p.N) * size_t(p.D)) + parts + (bias_parts ? parts : 0);
}

// The buffers in `workspace`, with the dX and dY accumulators zeroed on the stream.
cudaError_t backward_buffers(const Problem& p, void* workspace, cudaStream_t st, BackwardBuffers* out) {
  char* ws = static_cast<char*>(workspace);
  auto take = [&](size_t bytes) {
    float* f = reinterpret_cast<float*>(ws);
    ws += align256(bytes);
    return f;
  };
  out->norms = take(sizeof(float) * size_t(p.M + p.N));
  out->dx_acc = take(sizeof(float) * size_t(p.M) * size_t(p.D));
  out->dy_acc = take(sizeof(float) * size_t(p.N) * size_t(p.D));
  out->scale_parts = take(sizeof(float) * size_t(blocks(p.M, BM)));
  out->bias_parts = reinterpret_cast<float*>(ws);  // only inside the workspace when it was sized for it
  cudaError_t err = cudaMemsetAsync(out->dx_acc, 0, sizeof(float) * size_t(p.M) * size_t(p.D), st);
  if (err == cudaSuccess) err = cudaMemsetAsync(out->dy_acc, 0, sizeof(float) * size_t(p.N) * size_t(p.D), st);
  return err;
}

}  // namespace

size_t lse_backward_workspace(const Problem& p) { return backward_bytes(p, false); }

cudaError_t lse_backward(const Problem& p, const float* grad_row, const float* grad_col,
                         const float* row_lse, const float* col_lse, void* dx, void* dy,
                         float* dscale, void* workspace, cudaStream_t st) {
  BackwardBuffers buf;
  cudaError_t err = backward_buffers(p, workspace, st, &buf);
  if (err != cudaSuccess) return err;
  float *norms_ws = buf.norms, *dx_acc = buf.dx_acc, *dy_acc = buf.dy_acc, *parts = buf.scale_parts;
  err = dispatch(p.dtype, p.similarity, effective_path(p), [&](auto tag, auto sim_c, auto path_c) {
    using T = decltype(tag);
    constexpr int SIM = decltype(sim_c)::value, PATH = decltype(path_c)::value;
    Norms n{nullptr, nullptr};
    if (SIM == kSimEuclid) n = launch_norms<T>(p, norms_ws, st);
    const T* x = static_cast<const T*>(p.x);
    const T* y = static_cast<const T*>(p.y);
    // dX and dscale: rows of X against Y (skipped when neither is requested).
    if (dx != nullptr || dscale != nullptr)
      launch_kernel(grad_rows_kernel<T, SIM, PATH, kLse>, blocks(p.M, BM), THREADS, st,
          x, y, p.M, p.N, p.D, p.scale, nullptr, n.x, n.y, p.mask_diag,
          GradSource{grad_row, grad_col, row_lse, col_lse}, dx_acc, parts, nullptr);
    // dY: the swapped problem, whose G is G^T (skipped when not requested).
    if (dy != nullptr)
      launch_kernel(grad_rows_kernel<T, SIM, PATH, kLse>, blocks(p.N, BM), THREADS, st,
          y, x, p.N, p.M, p.D, p.scale, nullptr, n.y, n.x, p.mask_diag,
          GradSource{grad_col, grad_row, col_lse, row_lse}, dy_acc, nullptr, nullptr);
    if (dx != nullptr)
      launch_kernel(scale_out_kernel<T>, blocks(p.M * p.D, 256), 256, st, dx_acc, p.M * p.D, p.scale, static_cast<T*>(dx));
    if (dy != nullptr)
      launch_kernel(scale_out_kernel<T>, blocks(p.N * p.D, 256), 256, st, dy_acc, p.N * p.D, p.scale, static_cast<T*>(dy));
    if (dscale != nullptr) launch_kernel(sum_parts_kernel, 1, 32, st, parts, blocks(p.M, BM), p.scale, dscale);
  });
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

size_t softplus_forward_workspace(const Problem& p) { return align256(sizeof(float) * size_t(p.M + p.N)); }

namespace {

// The softplus row sums; with `labels`, the pairs with equal ids are positives.
cudaError_t softplus_rows(const Problem& p, const Labels* labels, const float* bias, float* row, void* workspace,
                          cudaStream_t st) {
  float* norms_ws = static_cast<float*>(workspace);
  LabelRows lab;
  if (labels != nullptr) lab = LabelRows{labels->row_ids, labels->col_ids, nullptr, nullptr, true};
  cudaError_t err = dispatch(p.dtype, p.similarity, effective_path(p), [&](auto tag, auto sim_c, auto path_c) {
    using T = decltype(tag);
    constexpr int SIM = decltype(sim_c)::value, PATH = decltype(path_c)::value;
    Norms n{nullptr, nullptr};
    if (SIM == kSimEuclid) n = launch_norms<T>(p, norms_ws, st);
    launch_kernel(rows_kernel<T, SIM, PATH, kSoftplus>, blocks(p.M, BM), THREADS, st,
        static_cast<const T*>(p.x), static_cast<const T*>(p.y), p.M, p.N, p.D, p.scale, bias, n.x, n.y,
        p.mask_diag, row, nullptr, lab);
  });
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

}  // namespace

cudaError_t softplus_forward(const Problem& p, const float* bias, float* row, void* workspace, cudaStream_t st) {
  return softplus_rows(p, nullptr, bias, row, workspace, st);
}

cudaError_t label_softplus_forward(const Problem& p, const Labels& ids, const float* bias, float* row,
                                   void* workspace, cudaStream_t st) {
  return softplus_rows(p, &ids, bias, row, workspace, st);
}

size_t softplus_backward_workspace(const Problem& p) { return backward_bytes(p, true); }

namespace {

// The softplus backward; with `labels`, the pairs with equal ids are positives.
cudaError_t softplus_grads(const Problem& p, const Labels* labels, const float* bias, const float* grad_row,
                           void* dx, void* dy, float* dscale, float* dbias, void* workspace, cudaStream_t st) {
  BackwardBuffers buf;
  cudaError_t err = backward_buffers(p, workspace, st, &buf);
  if (err != cudaSuccess) return err;
  float *norms_ws = buf.norms, *dx_acc = buf.dx_acc, *dy_acc = buf.dy_acc;
  float *scale_parts = buf.scale_parts, *bias_parts = buf.bias_parts;
  GradSource rows{grad_row, nullptr, nullptr, nullptr}, cols{nullptr, grad_row, nullptr, nullptr};
  if (labels != nullptr) {
    rows.ids_a = cols.ids_b = labels->row_ids;
    rows.ids_b = cols.ids_a = labels->col_ids;
    rows.labels = cols.labels = true;
  }
  err = dispatch(p.dtype, p.similarity, effective_path(p), [&](auto tag, auto sim_c, auto path_c) {
    using T = decltype(tag);
    constexpr int SIM = decltype(sim_c)::value, PATH = decltype(path_c)::value;
    Norms n{nullptr, nullptr};
    if (SIM == kSimEuclid) n = launch_norms<T>(p, norms_ws, st);
    const T* x = static_cast<const T*>(p.x);
    const T* y = static_cast<const T*>(p.y);
    // dX, dscale, dbias: rows of X against Y, G = g_i sigmoid(L + t).
    if (dx != nullptr || dscale != nullptr || dbias != nullptr)
      launch_kernel(grad_rows_kernel<T, SIM, PATH, kSoftplus>, blocks(p.M, BM), THREADS, st,
          x, y, p.M, p.N, p.D, p.scale, bias, n.x, n.y, p.mask_diag, rows, dx_acc,
          dscale != nullptr ? scale_parts : nullptr, dbias != nullptr ? bias_parts : nullptr);
    // dY: the swapped problem, whose G is G^T: the row gradient becomes the column one.
    if (dy != nullptr)
      launch_kernel(grad_rows_kernel<T, SIM, PATH, kSoftplus>, blocks(p.N, BM), THREADS, st,
          y, x, p.N, p.M, p.D, p.scale, bias, n.y, n.x, p.mask_diag, cols, dy_acc,
          nullptr, nullptr);
    if (dx != nullptr)
      launch_kernel(scale_out_kernel<T>, blocks(p.M * p.D, 256), 256, st, dx_acc, p.M * p.D, p.scale, static_cast<T*>(dx));
    if (dy != nullptr)
      launch_kernel(scale_out_kernel<T>, blocks(p.N * p.D, 256), 256, st, dy_acc, p.N * p.D, p.scale, static_cast<T*>(dy));
    if (dscale != nullptr) launch_kernel(sum_parts_kernel, 1, 32, st, scale_parts, blocks(p.M, BM), p.scale, dscale);
    if (dbias != nullptr) launch_kernel(sum_parts_kernel, 1, 32, st, bias_parts, blocks(p.M, BM), nullptr, dbias);
  });
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

}  // namespace

cudaError_t softplus_backward(const Problem& p, const float* bias, const float* grad_row, void* dx, void* dy,
                              float* dscale, float* dbias, void* workspace, cudaStream_t st) {
  return softplus_grads(p, nullptr, bias, grad_row, dx, dy, dscale, dbias, workspace, st);
}

cudaError_t label_softplus_backward(const Problem& p, const Labels& ids, const float* bias, const float* grad_row,
                                    void* dx, void* dy, float* dscale, float* dbias, void* workspace,
                                    cudaStream_t st) {
  return softplus_grads(p, &ids, bias, grad_row, dx, dy, dscale, dbias, workspace, st);
}

size_t label_forward_workspace(const Problem& p) { return align256(sizeof(float) * size_t(p.M + p.N)); }

cudaError_t label_forward(const Problem& p, const Labels& ids, const LabelStats& out, bool compute_col,
                          void* workspace, cudaStream_t st) {
  float* norms_ws = static_cast<float*>(workspace);
  cudaError_t err = dispatch(p.dtype, p.similarity, effective_path(p), [&](auto tag, auto sim_c, auto path_c) {
    using T = decltype(tag);
    constexpr int SIM = decltype(sim_c)::value, PATH = decltype(path_c)::value;
    Norms n{nullptr, nullptr};
    if (SIM == kSimEuclid) n = launch_norms<T>(p, norms_ws, st);
    const T* x = static_cast<const T*>(p.x);
    const T* y = static_cast<const T*>(p.y);
    launch_kernel(rows_kernel<T, SIM, PATH, kLabel>, blocks(p.M, BM), THREADS, st,
        x, y, p.M, p.N, p.D, p.scale, nullptr, n.x, n.y, p.mask_diag, out.row_neg, nullptr,
        LabelRows{ids.row_ids, ids.col_ids, out.row_pos, out.row_sum});
    if (compute_col)  // the swapped problem: the columns' statistics are the rows' of (Y, X)
      launch_kernel(rows_kernel<T, SIM, PATH, kLabel>, blocks(p.N, BM), THREADS, st,
          y, x, p.N, p.M, p.D, p.scale, nullptr, n.y, n.x, p.mask_diag, out.col_neg, nullptr,
          LabelRows{ids.col_ids, ids.row_ids, out.col_pos, out.col_sum});
  });
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

size_t label_backward_workspace(const Problem& p) { return backward_bytes(p, false); }

cudaError_t label_backward(const Problem& p, const Labels& ids, const LabelGrads& g, void* dx, void* dy,
                           float* dscale, void* workspace, cudaStream_t st) {
  BackwardBuffers buf;
  cudaError_t err = backward_buffers(p, workspace, st, &buf);
  if (err != cudaSuccess) return err;
  float *norms_ws = buf.norms, *dx_acc = buf.dx_acc, *dy_acc = buf.dy_acc, *parts = buf.scale_parts;
  const GradSource rows{g.row_neg, g.col_neg, g.lse_row_neg, g.lse_col_neg, 0.f, g.row_pos, g.col_pos,
                        g.lse_row_pos, g.lse_col_pos, g.row_sum, g.col_sum, ids.row_ids, ids.col_ids};
  const GradSource cols{g.col_neg, g.row_neg, g.lse_col_neg, g.lse_row_neg, 0.f, g.col_pos, g.row_pos,
                        g.lse_col_pos, g.lse_row_pos, g.col_sum, g.row_sum, ids.col_ids, ids.row_ids};
  err = dispatch(p.dtype, p.similarity, effective_path(p), [&](auto tag, auto sim_c, auto path_c) {
    using T = decltype(tag);
    constexpr int SIM = decltype(sim_c)::value, PATH = decltype(path_c)::value;
    Norms n{nullptr, nullptr};
    if (SIM == kSimEuclid) n = launch_norms<T>(p, norms_ws, st);
    const T* x = static_cast<const T*>(p.x);
    const T* y = static_cast<const T*>(p.y);
    if (dx != nullptr || dscale != nullptr)
      launch_kernel(grad_rows_kernel<T, SIM, PATH, kLabel>, blocks(p.M, BM), THREADS, st,
          x, y, p.M, p.N, p.D, p.scale, nullptr, n.x, n.y, p.mask_diag, rows, dx_acc, parts, nullptr);
    if (dy != nullptr)  // the swapped problem, whose G is G^T
      launch_kernel(grad_rows_kernel<T, SIM, PATH, kLabel>, blocks(p.N, BM), THREADS, st,
          y, x, p.N, p.M, p.D, p.scale, nullptr, n.y, n.x, p.mask_diag, cols, dy_acc, nullptr, nullptr);
    if (dx != nullptr)
      launch_kernel(scale_out_kernel<T>, blocks(p.M * p.D, 256), 256, st, dx_acc, p.M * p.D, p.scale, static_cast<T*>(dx));
    if (dy != nullptr)
      launch_kernel(scale_out_kernel<T>, blocks(p.N * p.D, 256), 256, st, dy_acc, p.N * p.D, p.scale, static_cast<T*>(dy));
    if (dscale != nullptr) launch_kernel(sum_parts_kernel, 1, 32, st, parts, blocks(p.M, BM), p.scale, dscale);
  });
  if (err != cudaSuccess) return err;
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace mmcl_fast
