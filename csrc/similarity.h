// Similarity codes shared by the CPU and CUDA kernels (torch-free, host + device safe).
//   dot:        sim(a, b) = a . b
//   euclidean:  sim(a, b) = -||a - b||^2 = 2 a.b - ||a||^2 - ||b||^2
//   l1:         sim(a, b) = -||a - b||_1
// ("cosine" never reaches the kernels: the Python layer L2-normalises and uses dot.)
#pragma once

#include <cstring>

namespace mmcl_fast {

enum class Similarity : int { Dot = 0, Euclidean = 1, L1 = 2 };

// Returns false for an unknown name.
inline bool parse_similarity(const char* name, Similarity* out) {
  if (std::strcmp(name, "dot") == 0) { *out = Similarity::Dot; return true; }
  if (std::strcmp(name, "euclidean") == 0) { *out = Similarity::Euclidean; return true; }
  if (std::strcmp(name, "l1") == 0) { *out = Similarity::L1; return true; }
  return false;
}

}  // namespace mmcl_fast
