// Scalar f16 / bf16 conversions of core/half.h against GCC's _Float16 and hand-checked bit patterns.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>

#include "core/half.h"

namespace lowbit {
namespace {

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t bits_of(_Float16 h) {
  uint16_t u;
  std::memcpy(&u, &h, 2);
  return u;
}
_Float16 half_of(uint16_t u) {
  _Float16 h;
  std::memcpy(&h, &u, 2);
  return h;
}

TEST(Half, F16ToF32MatchesCompilerForAllInputs) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float want = static_cast<float>(half_of(h));
    const float got = f16_to_f32(h);
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << h;
      ASSERT_EQ(bits_of(got) >> 31, bits_of(want) >> 31) << "NaN sign " << std::hex << h;
    } else {
      ASSERT_EQ(bits_of(got), bits_of(want)) << std::hex << h;
    }
  }
}

TEST(Half, F16KnownPatterns) {
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(f16_to_f32(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));  // smallest normal
  EXPECT_EQ(bits_of(f16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(f16_to_f32(0x7c00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);  // below the rounding boundary
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds to inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);                 // tie -> even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);                 // above tie
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);                 // 1.5 ulp tie -> even (2)
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);          // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);      // tie -> even (up)
  EXPECT_EQ(f32_to_f16(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);
  EXPECT_NE(f32_to_f16(float_of(0x7f800001u)) & 0x03ff, 0) << "signalling NaN must not become inf";
}

TEST(Half, F32ToF16MatchesCompiler) {
  std::mt19937 rng(42);
  auto check = [](float f) {
    const uint16_t want = bits_of(static_cast<_Float16>(f));
    const uint16_t got = f32_to_f16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(f16_to_f32(got))) << std::hex << bits_of(f);
    } else {
      ASSERT_EQ(got, want) << "f32 0x" << std::hex << bits_of(f) << " (" << f << ")";
    }
  };
  for (int i = 0; i < 2000000; ++i) check(float_of(rng()));  // every exponent, mostly out of f16 range
  // Concentrate on the f16 range, including subnormals and exact ties (low mantissa bits 0x1000).
  for (int i = 0; i < 2000000; ++i) {
    const uint32_t exp = 96 + rng() % 48;  // 2^-31 .. 2^16
    uint32_t mant = rng() & 0x7fffff;
    if (i % 4 == 0) mant = (mant & ~0x1fffu) | 0x1000u;  // halfway between two normal halves
    check(float_of(((rng() & 1) << 31) | (exp << 23) | mant));
  }
}

TEST(Half, F16RoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue;  // NaN
    ASSERT_EQ(f32_to_f16(f16_to_f32(h)), h) << std::hex << h;
  }
}

TEST(BFloat16, KnownPatterns) {
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(bf16_to_f32(0x7f80), std::numeric_limits<float>::infinity());
  EXPECT_EQ(bf16_to_f32(0x0001), float_of(0x00010000u));
  EXPECT_EQ(bits_of(bf16_to_f32(0x8000)), 0x80000000u);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(float_of(0x3f808000u)), 0x3f80);  // tie -> even (down)
  EXPECT_EQ(f32_to_bf16(float_of(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(f32_to_bf16(float_of(0x3f808001u)), 0x3f81);  // above tie
  EXPECT_EQ(f32_to_bf16(float_of(0x3f807fffu)), 0x3f80);  // below tie
  EXPECT_EQ(f32_to_bf16(float_of(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_EQ(f32_to_bf16(float_of(0xff800000u)), 0xff80);
  const uint16_t qnan = f32_to_bf16(float_of(0x7fc00001u));
  const uint16_t snan = f32_to_bf16(float_of(0x7f800001u));  // payload only in the dropped bits
  EXPECT_TRUE(std::isnan(bf16_to_f32(qnan)));
  EXPECT_TRUE(std::isnan(bf16_to_f32(snan))) << "signalling NaN must not become inf";
}

// Independent check: the nearest bf16 by exact comparison in double, ties to the even one.
TEST(BFloat16, RoundsToNearestEven) {
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    uint32_t u = rng();
    if (i % 3 == 0) u = (u & 0xffff0000u) | 0x8000u;  // exact ties
    const float f = float_of(u);
    if (!std::isfinite(f)) continue;
    const uint32_t lo_bits = u & 0xffff0000u;
    const double lo = float_of(lo_bits);
    const double hi = (lo_bits & 0x7fffffffu) == 0x7f7f0000u ? std::copysign(std::ldexp(1.0, 128), f)
                                                              : static_cast<double>(float_of(lo_bits + 0x10000u));
    const double dlo = std::fabs(f - lo), dhi = std::fabs(hi - f);
    uint16_t want = static_cast<uint16_t>(lo_bits >> 16);
    if (dhi < dlo || (dhi == dlo && (want & 1))) want = static_cast<uint16_t>((lo_bits + 0x10000u) >> 16);
    ASSERT_EQ(f32_to_bf16(f), want) << std::hex << u;
  }
}

TEST(BFloat16, RoundTrip) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto b = static_cast<uint16_t>(i);
    if ((b & 0x7f80) == 0x7f80 && (b & 0x7f)) continue;  // NaN
    ASSERT_EQ(f32_to_bf16(bf16_to_f32(b)), b) << std::hex << b;
  }
}

}  // namespace
}  // namespace lowbit
