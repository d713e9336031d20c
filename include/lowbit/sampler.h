// lowbit: next-token sampling (greedy, temperature, top-k, top-p) with a seeded generator.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace lowbit {

struct SamplerParams {
  float temperature = 0.8f;  // <= 0: greedy (argmax)
  int top_k = 40;            // <= 0: off
  float top_p = 0.95f;       // >= 1: off
  uint64_t seed = 42;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams p);
  // Picks a token from n logits (not modified).
  int32_t sample(const float* logits, int n);

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

int32_t argmax(const float* x, int n);

}  // namespace lowbit
