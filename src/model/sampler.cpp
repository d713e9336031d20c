#include "lowbit/sampler.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

int32_t argmax(const float* x, int n) {
  int32_t best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

Sampler::Sampler(SamplerParams p) : p_(p), rng_(p.seed) {}

int32_t Sampler::sample(const float* logits, int n) {
  if (p_.temperature <= 0.0f) return argmax(logits, n);
  // Candidates sorted by logit; top-k and top-p trim the tail, temperature sharpens or flattens.
  cand_.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) cand_[i] = {logits[i], i};
  size_t keep = (p_.top_k > 0 && p_.top_k < n) ? static_cast<size_t>(p_.top_k) : static_cast<size_t>(n);
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(keep), cand_.end(), by_logit);
  cand_.resize(keep);
  const float maxl = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) {
    c.first = std::exp((c.first - maxl) / p_.temperature);
    sum += c.first;
  }
  for (auto& c : cand_) c.first = static_cast<float>(c.first / sum);
  if (p_.top_p < 1.0f) {
    double cum = 0;
    size_t cut = cand_.size();
    for (size_t i = 0; i < cand_.size(); ++i) {
      cum += cand_[i].first;
      if (cum >= p_.top_p) {
        cut = i + 1;
        break;
      }
    }
    cand_.resize(cut);
    sum = cum;
  } else {
    sum = 1.0;
  }
  std::uniform_real_distribution<double> u(0.0, sum);
  double r = u(rng_);
  for (const auto& c : cand_) {
    r -= c.first;
    if (r <= 0) return c.second;
  }
  return cand_.back().second;
}

}  // namespace lowbit
