#include "quant/budget/allocate.h"

#include <cmath>
#include <limits>

#include "lowbit/error.h"

namespace lowbit::quant::budget {

Allocation allocate(const std::vector<Item>& items, uint64_t budget, uint64_t granularity, uint64_t max_units) {
  uint64_t smallest = 0;  // the least total size any choice can have
  for (const Item& it : items) {
    if (it.candidates.empty()) fail("budget", it.name, "has no candidate formats");
    if (it.candidates.size() > 255) fail("budget", it.name, "has more than 255 candidate formats");
    uint64_t m = std::numeric_limits<uint64_t>::max();
    for (const Candidate& c : it.candidates) {
      if (!std::isfinite(c.damage)) fail("budget", it.name, "candidate " + c.format + " has a non-finite damage");
      m = std::min(m, c.bytes);
    }
    smallest += m;
  }
  if (smallest > budget)
    fail("budget", "target size", std::to_string(budget) + " bytes is below the smallest choice of formats (" +
                                      std::to_string(smallest) + " bytes)");
  // The DP runs over each candidate's bytes above its item's smallest one (the smallest choice is then 0 units and
  // always fits, whatever the rounding), against the budget left after the smallest choice.
  std::vector<uint64_t> base(items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    base[i] = std::numeric_limits<uint64_t>::max();
    for (const Candidate& c : items[i].candidates) base[i] = std::min(base[i], c.bytes);
  }
  const uint64_t spare = budget - smallest;
  // The choice table holds one byte per item and unit: at most 256 MiB of it.
  max_units = std::max<uint64_t>(1, std::min<uint64_t>(max_units, (uint64_t{1} << 28) / std::max<size_t>(items.size(), 1)));
  // The finest unit within max_units (a coarser one if asked for).
  const uint64_t g = std::max<uint64_t>(std::max<uint64_t>(granularity, 1), (spare + max_units - 1) / max_units);
  auto units_of = [&](size_t i, uint64_t bytes) { return (bytes - base[i] + g - 1) / g; };
  const uint64_t cap = spare / g;  // capacity in units
  const size_t width = static_cast<size_t>(cap) + 1;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // best[u]: least damage of the items so far with at most u units; pick[i * width + u]: item i's candidate there.
  std::vector<double> best(width, 0.0), next(width);
  std::vector<uint8_t> pick(items.size() * width);
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& cs = items[i].candidates;
    uint8_t* row = pick.data() + i * width;
    for (size_t u = 0; u < width; ++u) {
      double v = kInf;
      uint8_t arg = 0;
      for (size_t k = 0; k < cs.size(); ++k) {
        const uint64_t w = units_of(i, cs[k].bytes);
        if (w > u || best[u - w] == kInf) continue;
        const double d = best[u - w] + cs[k].damage;
        if (d < v) {
          v = d;
          arg = static_cast<uint8_t>(k);
        }
      }
      next[u] = v;
      row[u] = arg;
    }
    best.swap(next);
  }
  Allocation a;
  a.granularity = g;
  a.choice.resize(items.size());
  uint64_t u = cap;
  for (size_t i = items.size(); i-- > 0;) {
    const size_t k = pick[i * width + u];
    a.choice[i] = k;
    const Candidate& c = items[i].candidates[k];
    u -= units_of(i, c.bytes);
    a.bytes += c.bytes;
    a.damage += c.damage;
  }
  return a;
}

}  // namespace lowbit::quant::budget
