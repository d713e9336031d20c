// Comparing two importance matrices entry by entry (tests of the reader and of `lowbit imatrix`).
#pragma once
#include <algorithm>
#include <cmath>
#include <string>

#include "io/imatrix.h"

namespace lowbit::test {

// The largest |got - want| / |want| over every value, or the first structural difference in *problem (an entry
// missing from got, or one of another size; the entry counts must match too).
inline double imatrix_worst_relative(const io::Imatrix& got, const io::Imatrix& want, std::string* problem) {
  problem->clear();
  if (got.entries.size() != want.entries.size()) {
    *problem = std::to_string(got.entries.size()) + " entries, want " + std::to_string(want.entries.size());
    return 0;
  }
  double worst = 0;
  for (const auto& [name, w] : want.entries) {
    auto it = got.entries.find(name);
    if (it == got.entries.end() || it->second.size() != w.size()) {
      *problem = name + (it == got.entries.end() ? " missing" : " has another size");
      return 0;
    }
    for (size_t j = 0; j < w.size(); ++j)
      worst = std::max(worst, std::fabs(static_cast<double>(it->second[j]) - w[j]) /
                                  std::max(1e-30, std::fabs(static_cast<double>(w[j]))));
  }
  return worst;
}

}  // namespace lowbit::test
