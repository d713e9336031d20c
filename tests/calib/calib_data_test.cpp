#include <gtest/gtest.h>

#include <set>

#include "calib/calib_data.h"
#include "lowbit/error.h"

namespace lowbit::calib {
namespace {

std::vector<int32_t> iota_tokens(int n) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = i;
  return t;
}

TEST(CalibWindows, SeededDistinctNonOverlappingSlots) {
  const auto tokens = iota_tokens(1000);
  CalibOptions o;
  o.samples = 9;
  o.len = 100;
  o.seed = 5;
  auto a = sample_windows(tokens, o, "t.txt");
  auto b = sample_windows(tokens, o, "t.txt");
  EXPECT_EQ(a, b);
  std::set<int32_t> starts;
  for (const auto& w : a) {
    ASSERT_EQ(w.size(), 100u);
    EXPECT_EQ(w[0] % 100, 0);                    // aligned to a slot
    for (int i = 1; i < 100; ++i) EXPECT_EQ(w[i], w[0] + i);  // contiguous text
    starts.insert(w[0]);
  }
  EXPECT_EQ(starts.size(), 9u);  // no window used twice
  o.seed = 6;
  EXPECT_NE(sample_windows(tokens, o, "t.txt"), a);
}

TEST(CalibWindows, BosReplacesFirstToken) {
  CalibOptions o;
  o.samples = 2;
  o.len = 10;
  o.bos = 1;
  for (const auto& w : sample_windows(iota_tokens(50), o, "t.txt")) EXPECT_EQ(w[0], 1);
}

TEST(CalibWindows, TextShorterThanRequestedIsAClearError) {
  CalibOptions o;
  o.samples = 11;
  o.len = 100;
  try {
    sample_windows(iota_tokens(1000), o, "calib.txt");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("calib.txt"), std::string::npos) << m;
    EXPECT_NE(m.find("1000 tokens"), std::string::npos) << m;
    EXPECT_NE(m.find("1100"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace lowbit::calib
