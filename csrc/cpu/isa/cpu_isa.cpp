// Picks the ISA copy of the CPU engine (see cpu_isa.h for the rule).
#include "cpu_isa.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <mutex>

namespace mmcl_fast {
namespace {

// Levels narrowest first; index = rank.
constexpr const char* kLevels[] = {"default", "avx2", "avx512"};

const CpuKernels* kernels_of(int rank) {
  switch (rank) {
    case 0: return cpu_kernels_default();
    case 1: return cpu_kernels_avx2();
    case 2: return cpu_kernels_avx512();
  }
  return nullptr;
}

// What the running CPU executes (cpuid through the compiler's runtime), as a rank.
int cpu_rank() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2") &&
                    __builtin_cpu_supports("popcnt");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return avx512 ? 2 : avx2 ? 1 : 0;
#else
  return 0;
#endif
}

// torch's capability (ATEN_CPU_CAPABILITY honoured) as a rank; anything unknown counts as default.
int torch_rank() {
  const std::string capability = at::get_cpu_capability();
  if (capability == "AVX512") return 2;
  if (capability == "AVX2") return 1;
  return 0;
}

const CpuKernels* automatic_choice() {
  const int limit = std::min(cpu_rank(), torch_rank());
  for (int rank = limit; rank > 0; --rank)
    if (const CpuKernels* k = kernels_of(rank)) return k;
  return kernels_of(0);
}

std::atomic<const CpuKernels*> forced{nullptr};

}  // namespace

const CpuKernels& active_cpu_kernels() {
  if (const CpuKernels* k = forced.load(std::memory_order_acquire)) return *k;
  static const CpuKernels* const chosen = automatic_choice();
  return *chosen;
}

std::vector<std::string> runnable_cpu_isas() {
  std::vector<std::string> names;
  for (int rank = 0; rank <= cpu_rank(); ++rank)
    if (kernels_of(rank) != nullptr) names.emplace_back(kLevels[rank]);
  return names;
}

void force_cpu_isa(const std::string& isa) {
  if (isa.empty()) {
    forced.store(nullptr, std::memory_order_release);
    return;
  }
  for (int rank = 0; rank <= 2; ++rank) {
    if (isa != kLevels[rank]) continue;
    const CpuKernels* k = kernels_of(rank);
    TORCH_CHECK(k != nullptr, "force_cpu_isa: this build has no '", isa, "' copy of the CPU kernels");
    TORCH_CHECK(rank <= cpu_rank(), "force_cpu_isa: this CPU cannot run '", isa, "' code");
    forced.store(k, std::memory_order_release);
    return;
  }
  TORCH_CHECK(false, "force_cpu_isa: isa must be 'default', 'avx2', 'avx512' or '' (automatic), got '", isa, "'");
}

}  // namespace mmcl_fast
