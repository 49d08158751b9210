// The scalar arguments of the CPU operators, read and checked once per call: the similarity's
// name, the scale s (> 0, finite) and the sigmoid loss's bias t (finite, any sign).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

#include "../similarity.h"

namespace mmcl_fast {

inline Similarity parsed(const std::string& similarity) {
  Similarity sim;
  TORCH_CHECK(parse_similarity(similarity.c_str(), &sim), "unknown similarity '", similarity, "'");
  return sim;
}

inline double checked_scale(const at::Tensor& scale) {
  const double s = scale.item<double>();
  TORCH_CHECK(std::isfinite(s) && s > 0, "scale (1/temperature or logit_scale) must be positive and finite, got ", s);
  return s;
}

inline double checked_bias(const at::Tensor& bias) {
  TORCH_CHECK(bias.numel() == 1, "bias (logit_bias) must hold exactly one element, got shape ", bias.sizes());
  const double t = bias.item<double>();
  TORCH_CHECK(std::isfinite(t), "bias (logit_bias) must be finite, got ", t);
  return t;
}

}  // namespace mmcl_fast
