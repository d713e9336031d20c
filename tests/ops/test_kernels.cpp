// Vector kernels (rmsnorm, softmax, silu_mul, dot, axpy, rope, f16/bf16 widening) against the scalar
// references, once per Highway target.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "ops/kernels.h"
#include "ops/ops.h"
#include "ops/reference.h"
#include "ops_test_util.h"

namespace lowbit::ops::test {
namespace {

const int64_t kSizes[] = {1, 2, 7, 16, 33, 255, 1000, 4096};

class Kernels : public PerTarget {};

// dot: f32 accumulation vs double, tolerance 1e-6 * sum |a_i b_i| (+ tiny absolute for n = 1 cases).
TEST_P(Kernels, Dot) {
  for (int64_t n : kSizes) {
    const auto a = random_floats(static_cast<size_t>(n), 1), b = random_floats(static_cast<size_t>(n), 2);
    double mag = 0;
    for (int64_t i = 0; i < n; ++i) mag += std::fabs(a[i] * b[i]);
    EXPECT_NEAR(dot(a.data(), b.data(), n), dot_ref(a.data(), b.data(), n), 1e-6 * mag + 1e-30) << "n=" << n;
  }
  EXPECT_EQ(dot(nullptr, nullptr, 0), 0.0f);
}

// axpy: one FMA per element vs multiply-then-add: within 1 ulp of the magnitudes involved.
TEST_P(Kernels, Axpy) {
  for (int64_t n : kSizes) {
    const auto x = random_floats(static_cast<size_t>(n), 3);
    auto y = random_floats(static_cast<size_t>(n), 4), y_ref = y;
    axpy(0.37f, x.data(), y.data(), n);
    axpy_ref(0.37f, x.data(), y_ref.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], y_ref[i], 2e-7f) << "n=" << n << " i=" << i;
  }
}

// sub_scaled (GPTQ's in-batch update, double): fused or not, within one rounding of each of the product and the
// difference (2^-52 relative to their magnitudes), on every target.
TEST_P(Kernels, SubScaled) {
  for (int64_t n : kSizes) {
    const auto xf = random_floats(static_cast<size_t>(n), 5), yf = random_floats(static_cast<size_t>(n), 6);
    std::vector<double> x(xf.size()), y(yf.size());
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = xf[i] * (1.0 + 1e-9 * static_cast<double>(i));  // full 53-bit mantissas
      y[i] = yf[i] / 3.0;
    }
    auto y_ref = y;
    sub_scaled(0.1 + 1e-12, x.data(), y.data(), n);
    sub_scaled_ref(0.1 + 1e-12, x.data(), y_ref.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double mag = std::fabs(y_ref[i]) + std::fabs((0.1 + 1e-12) * x[i]);
      ASSERT_NEAR(y[i], y_ref[i], 0x1p-52 * mag) << "n=" << n << " i=" << i;
    }
  }
}

// rmsnorm: relative 1e-5 (sum of squares in f32).
TEST_P(Kernels, RmsNorm) {
  for (int64_t n : kSizes) {
    const auto x = random_floats(static_cast<size_t>(n), 5, -3, 3), w = random_floats(static_cast<size_t>(n), 6);
    std::vector<float> out(static_cast<size_t>(n)), ref(static_cast<size_t>(n));
    rmsnorm(out.data(), x.data(), w.data(), n, 1e-5f);
    rmsnorm_ref(ref.data(), x.data(), w.data(), n, 1e-5f);
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(out[i], ref[i], 1e-5f * std::fabs(ref[i]) + 1e-7f) << "n=" << n;
  }
}

// softmax: Highway's exp is within a few ulps and the sum is an f32 sum: 2e-6 relative (+1e-9 absolute).
TEST_P(Kernels, Softmax) {
  for (int64_t n : kSizes) {
    auto x = random_floats(static_cast<size_t>(n), 7, -20, 20), ref = x;
    softmax(x.data(), n);
    softmax_ref(ref.data(), n);
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(x[i], ref[i], 2e-6f * ref[i] + 1e-9f) << "n=" << n << " i=" << i;
      sum += x[i];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5) << "n=" << n;
  }
}

TEST_P(Kernels, SoftmaxEdgeCases) {
  // Large equal logits must not overflow; -inf (masked) entries become exactly 0.
  std::vector<float> x = {1000.0f, 1000.0f, -std::numeric_limits<float>::infinity(), 999.0f, 1000.0f};
  softmax(x.data(), static_cast<int64_t>(x.size()));
  const float e = std::exp(-1.0f), z = 3 + e;
  EXPECT_NEAR(x[0], 1 / z, 1e-6f);
  EXPECT_NEAR(x[1], 1 / z, 1e-6f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_NEAR(x[3], e / z, 1e-6f);
  std::vector<float> one = {-5.0f};
  softmax(one.data(), 1);
  EXPECT_EQ(one[0], 1.0f);
}

// silu_mul: relative 2e-6 (exp approximation + division).
TEST_P(Kernels, SiluMul) {
  for (int64_t n : kSizes) {
    auto g = random_floats(static_cast<size_t>(n), 8, -12, 12), g_ref = g;
    const auto up = random_floats(static_cast<size_t>(n), 9, -2, 2);
    silu_mul(g.data(), up.data(), n);
    silu_mul_ref(g_ref.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(g[i], g_ref[i], 2e-6f * std::fabs(g_ref[i]) + 1e-30f) << "n=" << n << " i=" << i;
  }
}

// gelu_mul (tanh approximation) against PyTorch's formula in double: the exp form is the same function.
TEST_P(Kernels, GeluMul) {
  for (int64_t n : kSizes) {
    auto g = random_floats(static_cast<size_t>(n), 10, -12, 12), g_ref = g;
    const auto up = random_floats(static_cast<size_t>(n), 11, -2, 2);
    gelu_mul(g.data(), up.data(), n);
    gelu_mul_ref(g_ref.data(), up.data(), n);
    for (int64_t i = 0; i < n; ++i)
      // Relative 4e-6 where it matters; far down the left tail (|gelu| < 1e-12) the f32 exponent's rounding
      // grows the relative error with |u|.
      ASSERT_NEAR(g[i], g_ref[i], 4e-6f * std::fabs(g_ref[i]) + 1e-12f) << "n=" << n << " i=" << i;
  }
  std::vector<float> e = {-200.0f, -9.0f, 0.0f, 1.0f, 200.0f}, up(5, 2.0f);
  gelu_mul(e.data(), up.data(), 5);
  EXPECT_NEAR(e[0], 0.0f, 1e-30f);
  EXPECT_NEAR(e[1], 0.0f, 1e-20f);
  EXPECT_EQ(e[2], 0.0f);
  EXPECT_NEAR(e[3], 2 * 0.8411920071f, 1e-6f);  // torch.nn.functional.gelu(torch.tensor(1.), approximate="tanh")
  EXPECT_FLOAT_EQ(e[4], 400.0f);
}

TEST_P(Kernels, SiluMulExtremes) {
  std::vector<float> g = {-200.0f, -90.0f, 0.0f, 90.0f, 200.0f}, up(5, 1.5f);
  silu_mul(g.data(), up.data(), 5);
  EXPECT_NEAR(g[0], 0.0f, 1e-30f);
  EXPECT_NEAR(g[1], 0.0f, 1e-30f);
  EXPECT_EQ(g[2], 0.0f);
  EXPECT_FLOAT_EQ(g[3], 135.0f);
  EXPECT_FLOAT_EQ(g[4], 300.0f);
}

// f16/bf16 widening: exact (bit-identical) for every one of the 65536 inputs, NaN stays NaN.
void expect_widen_exact(void (*fn)(const uint16_t*, float*, int64_t), void (*ref)(const uint16_t*, float*, int64_t),
                        const char* what) {
  std::vector<uint16_t> in(65536 + 3);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<uint16_t>(i * 40503u);  // all values, permuted
  for (int64_t start : {0, 1}) {  // also from an odd (unaligned) start with an odd length
    const int64_t n = static_cast<int64_t>(in.size()) - start - 1;
    std::vector<float> out(static_cast<size_t>(n)), exp(static_cast<size_t>(n));
    fn(in.data() + start, out.data(), n);
    ref(in.data() + start, exp.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      if (std::isnan(exp[i])) {
        ASSERT_TRUE(std::isnan(out[i])) << what << " input 0x" << std::hex << in[start + i];
      } else {
        uint32_t a, b;
        std::memcpy(&a, &out[i], 4);
        std::memcpy(&b, &exp[i], 4);
        ASSERT_EQ(a, b) << what << " input 0x" << std::hex << in[start + i];
      }
    }
  }
}

TEST_P(Kernels, WidenF16Exhaustive) { expect_widen_exact(f16_to_f32, f16_to_f32_ref, "f16"); }
TEST_P(Kernels, WidenBF16Exhaustive) { expect_widen_exact(bf16_to_f32, bf16_to_f32_ref, "bf16"); }

// rope: the SIMD version uses the same cos/sin table values and differs only by FMA rounding: 1e-6 absolute
// on inputs in [-1, 1].
TEST_P(Kernels, RopeMatchesRef) {
  struct Case {
    int n_heads, head_dim, rope_dim;
  };
  const Case cases[] = {{1, 2, 2}, {3, 8, 8}, {4, 64, 64}, {2, 128, 128}, {2, 80, 80}, {2, 64, 32}, {5, 96, 34}};
  for (RopeStyle style : {RopeStyle::Interleaved, RopeStyle::HalfSplit}) {
    for (const Case& c : cases) {
      std::vector<float> inv_freq(static_cast<size_t>(c.rope_dim / 2));
      for (int i = 0; i < c.rope_dim / 2; ++i)
        inv_freq[i] = std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(c.rope_dim));
      for (int pos : {0, 1, 17, 4095}) {
        auto x = random_floats(static_cast<size_t>(c.n_heads * c.head_dim), static_cast<uint32_t>(pos + 11)),
             ref = x;
        rope(x.data(), c.n_heads, c.head_dim, c.rope_dim, pos, inv_freq.data(), style);
        rope_ref(ref.data(), c.n_heads, c.head_dim, c.rope_dim, pos, inv_freq.data(), style);
        for (size_t i = 0; i < x.size(); ++i)
          ASSERT_NEAR(x[i], ref[i], 1e-6f) << (style == RopeStyle::Interleaved ? "interleaved" : "halfsplit")
                                           << " head_dim " << c.head_dim << " rope_dim " << c.rope_dim << " pos "
                                           << pos << " i " << i;
      }
    }
  }
}

TEST_P(Kernels, RopeKnownRotation) {
  // inv_freq = {pi/2, 0}: at pos 1 the first pair turns by 90 degrees, the second stays put.
  const float inv_freq[] = {std::numbers::pi_v<float> / 2, 0.0f};
  // Interleaved pairs (0,1), (2,3).
  std::vector<float> a = {1, 0, 5, 6}, a_ref = a;
  rope(a.data(), 1, 4, 4, 1, inv_freq, RopeStyle::Interleaved);
  rope_ref(a_ref.data(), 1, 4, 4, 1, inv_freq, RopeStyle::Interleaved);
  // HalfSplit pairs (0,2), (1,3).
  std::vector<float> b = {1, 5, 0, 6}, b_ref = b;
  rope(b.data(), 1, 4, 4, 1, inv_freq, RopeStyle::HalfSplit);
  rope_ref(b_ref.data(), 1, 4, 4, 1, inv_freq, RopeStyle::HalfSplit);
  const std::vector<float> a_want = {0, 1, 5, 6}, b_want = {0, 5, 1, 6};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(a[i], a_want[i], 1e-6f) << i;
    EXPECT_NEAR(a_ref[i], a_want[i], 1e-6f) << i;
    EXPECT_NEAR(b[i], b_want[i], 1e-6f) << i;
    EXPECT_NEAR(b_ref[i], b_want[i], 1e-6f) << i;
  }
  // Dimensions past rope_dim are untouched.
  std::vector<float> c = {1, 0, 7, 8};
  rope(c.data(), 1, 4, 2, 1, inv_freq, RopeStyle::HalfSplit);
  EXPECT_NEAR(c[0], 0.0f, 1e-6f);
  EXPECT_NEAR(c[1], 1.0f, 1e-6f);
  EXPECT_EQ(c[2], 7.0f);
  EXPECT_EQ(c[3], 8.0f);
}

// The bandwidth read loop must really read every element (4 parallel parts + tail): f32 sum, 1e-6 relative.
TEST_P(Kernels, StreamSumReadsEverything) {
  for (int64_t n : {1, 7, 33, 255, 1000, 4099, 100003}) {
    const auto v = random_floats(static_cast<size_t>(n), 12, 0, 1);
    double want = 0;
    for (float f : v) want += f;
    EXPECT_NEAR(detail::stream_sum(v.data(), v.size()), want, 1e-6 * want) << "n=" << n;
    for (int threads : {1, 2, 3})
      EXPECT_NEAR(detail::parallel_stream_sum(v.data(), v.size(), threads), want, 1e-6 * want)
          << "n=" << n << " threads=" << threads;
  }
}

LOWBIT_INSTANTIATE_PER_TARGET(Kernels);

TEST(Ops, SimdTargetIsTheBestCompiledIn) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  EXPECT_STREQ(simd_target(), hwy::TargetName(targets.front()));  // best target first (lowest bit)
}

TEST(Ops, MeasureReadBandwidth) {
  const double gbs = measure_read_bandwidth(size_t{32} << 20, 1, 1);
  EXPECT_GT(gbs, 0.1);
  EXPECT_LT(gbs, 10000.0);
}

}  // namespace
}  // namespace lowbit::ops::test
