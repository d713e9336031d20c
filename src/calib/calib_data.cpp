#include "calib/calib_data.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "lowbit/error.h"

namespace lowbit::calib {

std::vector<std::vector<int32_t>> sample_windows(const std::vector<int32_t>& tokens, const CalibOptions& o,
                                                 const std::string& source) {
  if (o.samples <= 0) fail(source, "--calib-samples", "must be positive, got " + std::to_string(o.samples));
  if (o.len < 2) fail(source, "--calib-len", "must be at least 2, got " + std::to_string(o.len));
  const int64_t slots = static_cast<int64_t>(tokens.size()) / o.len;
  if (slots < o.samples)
    fail(source, "calibration text",
         "has " + std::to_string(tokens.size()) + " tokens; " + std::to_string(o.samples) + " windows of " +
             std::to_string(o.len) + " need " + std::to_string(static_cast<int64_t>(o.samples) * o.len) +
             " (use a longer file or fewer/shorter windows)");
  // A seeded Fisher-Yates over slot indices: std::shuffle's algorithm is unspecified, so do it by hand to get
  // the same windows with every standard library.
  std::vector<int64_t> idx(static_cast<size_t>(slots));
  std::iota(idx.begin(), idx.end(), 0);
  std::mt19937_64 rng(o.seed);
  for (int64_t i = slots - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(idx[i], idx[j]);
  }
  std::vector<std::vector<int32_t>> out;
  out.reserve(static_cast<size_t>(o.samples));
  for (int s = 0; s < o.samples; ++s) {
    auto begin = tokens.begin() + idx[s] * o.len;
    std::vector<int32_t> w(begin, begin + o.len);
    if (o.bos >= 0) w[0] = o.bos;
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace lowbit::calib
