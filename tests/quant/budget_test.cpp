// The byte-budget allocator (quant/budget) against brute force over every combination on small random problems.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "lowbit/error.h"
#include "quant/budget/allocate.h"

namespace lowbit::quant::budget {
namespace {

std::vector<Item> random_items(std::mt19937& rng, int n, int max_candidates, uint64_t max_bytes) {
  std::vector<Item> items(static_cast<size_t>(n));
  std::uniform_int_distribution<int> nc(1, max_candidates);
  std::uniform_int_distribution<uint64_t> bytes(1, max_bytes);
  std::uniform_real_distribution<double> damage(0.0, 1.0);
  for (int i = 0; i < n; ++i) {
    items[i].name = "t" + std::to_string(i);
    const int k = nc(rng);
    for (int c = 0; c < k; ++c) items[i].candidates.push_back({"f" + std::to_string(c), bytes(rng), damage(rng)});
  }
  return items;
}

// The smallest and the largest total size of a choice.
std::pair<uint64_t, uint64_t> size_range(const std::vector<Item>& items) {
  uint64_t lo = 0, hi = 0;
  for (const Item& it : items) {
    uint64_t mn = UINT64_MAX, mx = 0;
    for (const Candidate& c : it.candidates) mn = std::min(mn, c.bytes), mx = std::max(mx, c.bytes);
    lo += mn;
    hi += mx;
  }
  return {lo, hi};
}

// Least summed damage over every combination whose true size fits `budget` (infinity when none does).
double brute_force(const std::vector<Item>& items, uint64_t budget) {
  double best = INFINITY;
  std::vector<size_t> k(items.size(), 0);
  for (;;) {
    uint64_t b = 0;
    double d = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      b += items[i].candidates[k[i]].bytes;
      d += items[i].candidates[k[i]].damage;
    }
    if (b <= budget) best = std::min(best, d);
    size_t i = 0;
    while (i < items.size() && ++k[i] == items[i].candidates.size()) k[i++] = 0;
    if (i == items.size()) return best;
  }
}

void expect_consistent(const std::vector<Item>& items, const Allocation& a, uint64_t budget) {
  uint64_t b = 0;
  double d = 0;
  ASSERT_EQ(a.choice.size(), items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    ASSERT_LT(a.choice[i], items[i].candidates.size());
    b += items[i].candidates[a.choice[i]].bytes;
    d += items[i].candidates[a.choice[i]].damage;
  }
  EXPECT_EQ(a.bytes, b);
  EXPECT_NEAR(a.damage, d, 1e-12);
  EXPECT_LE(a.bytes, budget);
}

// At 1-byte granularity the DP is the exact optimum: equal to brute force on 300 random problems, budgets from the
// smallest choice to beyond the largest.
TEST(BudgetAllocate, ByteGranularityEqualsBruteForce) {
  std::mt19937 rng(1);
  for (int trial = 0; trial < 300; ++trial) {
    const auto items = random_items(rng, 1 + trial % 6, 5, 400);
    const auto [lo, hi] = size_range(items);
    const uint64_t budget = lo + (hi + 10 - lo) * static_cast<uint64_t>(trial % 7) / 6;
    const Allocation a = allocate(items, budget, 1);
    SCOPED_TRACE("trial " + std::to_string(trial));
    expect_consistent(items, a, budget);
    EXPECT_NEAR(a.damage, brute_force(items, budget), 1e-12);
  }
}

// Coarser units: the result still fits the true budget, and is at least as good as the best choice whose true size
// fits budget - items x granularity (the stated guarantee); never better than the true optimum.
TEST(BudgetAllocate, CoarseGranularityKeepsItsGuarantee) {
  std::mt19937 rng(2);
  for (int trial = 0; trial < 200; ++trial) {
    const auto items = random_items(rng, 2 + trial % 5, 4, 5000);
    const auto [lo, hi] = size_range(items);
    const uint64_t budget = lo + (hi - lo) * static_cast<uint64_t>(1 + trial % 5) / 5;
    const uint64_t g = 1 + static_cast<uint64_t>(trial % 4) * 37;
    const Allocation a = allocate(items, budget, g);
    SCOPED_TRACE("trial " + std::to_string(trial) + " granularity " + std::to_string(g));
    expect_consistent(items, a, budget);
    EXPECT_GE(a.damage, brute_force(items, budget) - 1e-12);
    const uint64_t slack = items.size() * a.granularity;
    if (budget >= slack) EXPECT_LE(a.damage, brute_force(items, budget - slack) + 1e-12);
  }
}

// Automatic granularity on a 7B-like problem (226 tensors, 1-8 formats, sizes up to 60 MB), with a 2^16-unit DP
// (the default allows 2^20; this keeps the test fast): the slack the rounding may leave unused is under 0.5% of
// the budget, and a budget of exactly the smallest choice gets it.
TEST(BudgetAllocate, LargeProblemAutomaticGranularity) {
  std::mt19937 rng(3);
  auto items = random_items(rng, 226, 8, 60u << 20);
  const auto [lo, hi] = size_range(items);
  const uint64_t budget = (lo + hi) / 2;
  const Allocation a = allocate(items, budget, 0, 1u << 16);
  expect_consistent(items, a, budget);
  EXPECT_GT(a.granularity, 1u);
  EXPECT_LE(a.granularity * items.size(), budget / 200);
  const Allocation tight = allocate(items, lo, 0, 1u << 16);
  expect_consistent(items, tight, lo);
  EXPECT_EQ(tight.bytes, lo);
}

TEST(BudgetAllocate, BadInputIsAClearError) {
  std::vector<Item> items = {{"blk.0.attn_q.weight", {{"q4_K", 100, 0.5}, {"q6_K", 150, 0.1}}},
                             {"blk.0.attn_k.weight", {{"q4_K", 50, 0.2}}}};
  try {
    allocate(items, 149);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("149 bytes is below the smallest choice of formats (150 bytes)"),
              std::string::npos)
        << e.what();
  }
  items[1].candidates.clear();
  EXPECT_THROW(allocate(items, 1000), Error);
  items[1].candidates.push_back({"q4_K", 50, NAN});
  EXPECT_THROW(allocate(items, 1000), Error);
  EXPECT_EQ(allocate({}, 0).choice.size(), 0u);
}

}  // namespace
}  // namespace lowbit::quant::budget
