// Helpers shared by the ops tests: per-Highway-target parametrisation and random test data.
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "hwy/highway.h"
#include "ops/ops.h"

namespace lowbit::ops::test {

// Runs a test once per Highway target compiled in and supported by this CPU. SetSupportedTargetsForTest
// makes the next HWY_DYNAMIC_DISPATCH pick exactly that target (checked by the TargetSwitch test).
class PerTarget : public ::testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
};

inline std::string target_param_name(const ::testing::TestParamInfo<int64_t>& info) {
  return hwy::TargetName(info.param);
}

#define LOWBIT_INSTANTIATE_PER_TARGET(suite)                                                    \
  INSTANTIATE_TEST_SUITE_P(Targets, suite, ::testing::ValuesIn(hwy::SupportedAndGeneratedTargets()), \
                           ::lowbit::ops::test::target_param_name)

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

// A rows x cols weight matrix of random values in the given dtype, with `pad` spare elements after each
// row (row_bytes > cols * element size) to check that kernels honour the stride.
struct TestMatrix {
  std::vector<std::byte> bytes;
  WeightView view;

  TestMatrix(DType dtype, int64_t rows, int64_t cols, uint32_t seed, int64_t pad = 0) {
    const size_t esize = dtype == DType::F32 ? 4 : 2;
    view.dtype = dtype;
    view.rows = rows;
    view.cols = cols;
    view.row_bytes = static_cast<size_t>(cols + pad) * esize;
    bytes.resize(view.row_bytes * static_cast<size_t>(rows) + 64);
    // Offset by 4 bytes so rows are not vector-aligned: kernels must use unaligned loads.
    std::byte* base = bytes.data() + 4;
    const std::vector<float> v = random_floats(static_cast<size_t>(rows * (cols + pad)), seed);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols + pad; ++c) {
        const float f = v[static_cast<size_t>(r * (cols + pad) + c)];
        std::byte* p = base + static_cast<size_t>(r) * view.row_bytes + static_cast<size_t>(c) * esize;
        if (dtype == DType::F32) {
          std::memcpy(p, &f, 4);
        } else {
          const uint16_t h = dtype == DType::F16 ? lowbit::f32_to_f16(f) : lowbit::f32_to_bf16(f);
          std::memcpy(p, &h, 2);
        }
      }
    }
    view.data = base;
  }
};

}  // namespace lowbit::ops::test
