// intN format: layout, bit-exact round trips, nearest-level rounding, dot, bad names, pinned distortion bands.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "formats/format.h"
#include "formats/format_test_util.h"
#include "formats/intn.h"
#include "lowbit/error.h"

namespace lf = lowbit::formats;
using namespace lowbit::formats::test;

namespace {

struct Cfg {
  int bits, group;
  bool asym;
  std::string name() const {
    return "int" + std::to_string(bits) + "g" + std::to_string(group) + (asym ? "a" : "s");
  }
};

std::vector<Cfg> all_cfgs() {
  std::vector<Cfg> v;
  for (int b = 2; b <= 8; ++b)
    for (int g : {32, 64, 128})
      for (bool a : {false, true}) v.push_back({b, g, a});
  return v;
}

std::vector<float> student_t(size_t n, uint32_t seed, float dof) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> d(dof);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace

TEST(IntN, NamesAndBlockBytes) {
  for (const Cfg& c : all_cfgs()) {
    auto f = lf::make_format(c.name());
    EXPECT_EQ(f->name(), c.name());
    EXPECT_EQ(f->block(), c.group);
    EXPECT_EQ(f->block_bytes(), size_t(2 + (c.asym ? 2 : 0) + c.group * c.bits / 8)) << c.name();
    EXPECT_EQ(lf::row_bytes(*f, 3 * c.group), 3 * f->block_bytes());
  }
  EXPECT_DOUBLE_EQ(lf::make_format("int4g32s")->bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(lf::make_format("int4g64a")->bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(lf::make_format("int3g128s")->bits_per_weight(), 3.125);
}

TEST(IntN, BadNamesAreOneLineErrors) {
  for (const char* name : {"int1g64a", "int9g64a", "int4g48s", "int4g64", "int4g64x", "int4g64ss", "q8_1", "",
                           "int", "intg64a", "int4a", "INT4G64A", "int04g064a0", "int4g64a ", "int99999g64a"}) {
    try {
      lf::make_format(name);
      ADD_FAILURE() << "accepted '" << name << "'";
    } catch (const lowbit::Error& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find("unknown format '" + std::string(name) + "'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("int{2..8}g{32,64,128}{s,a}"), std::string::npos) << msg;
    }
  }
  EXPECT_THROW(lf::IntNFormat(1, 64, true), lowbit::Error);
  EXPECT_THROW(lf::IntNFormat(9, 64, true), lowbit::Error);
  EXPECT_THROW(lf::IntNFormat(4, 48, false), lowbit::Error);
  auto f = lf::make_format("int4g32s");
  EXPECT_EQ(lf::row_bytes(*f, 33), 2 * f->block_bytes());  // a partial last block
  EXPECT_THROW(lf::row_bytes(*f, -1), lowbit::Error);
  std::vector<float> w(33, 1.0f), imp(5, 1.0f);
  std::vector<std::byte> buf(1024);
  EXPECT_THROW(lf::encode_row(*f, w, imp, buf.data()), lowbit::Error);  // importance of the wrong length
  EXPECT_THROW(lf::fit_block(*f, std::span<const float>(w.data(), 0), {}), lowbit::Error);
  EXPECT_THROW(lf::fit_block(*f, w, {}), lowbit::Error);  // 33 > one block
}

// Rows of any length: the last block is partial. For every config and several odd lengths, the decode equals
// round(w, p) with p fitted on the block's real weights, both decoders agree bit for bit, and the partial block's
// bytes equal those of a full block whose extra weights are zeros with zero importance (the documented padding).
TEST(IntN, OddRowLengthsRoundTripExactly) {
  uint32_t seed = 500;
  for (const Cfg& c : all_cfgs()) {
    lf::IntNFormat f(c.bits, c.group, c.asym);
    const int g = c.group;
    for (int n : {1, 7, g - 1, g + 1, 2 * g + 5, 172}) {
      std::vector<float> w = gaussian(size_t(n), seed++, 0.05f);
      const int nb = (n + g - 1) / g;
      ASSERT_EQ(lf::row_bytes(f, n), size_t(nb) * f.block_bytes()) << f.name() << " n " << n;
      std::vector<std::byte> enc(lf::row_bytes(f, n) + 16, std::byte{0xAB});  // guard bytes after the row
      lf::encode_row(f, w, {}, enc.data());
      for (size_t k = lf::row_bytes(f, n); k < enc.size(); ++k) ASSERT_EQ(enc[k], std::byte{0xAB}) << "overrun";
      std::vector<float> deq(size_t(n) + 4, -7.0f), fast(size_t(n) + 4, -7.0f);
      lf::decode_row(f, enc.data(), std::span<float>(deq.data(), size_t(n)));
      lf::intn_decode_row_f32(f, enc.data(), n, fast.data());
      for (int i = n; i < n + 4; ++i) ASSERT_EQ(deq[i], -7.0f) << "decode wrote past the row";
      for (int i = n; i < n + 4; ++i) ASSERT_EQ(fast[i], -7.0f) << "fast decode wrote past the row";
      // Reference for the last block: a full block padded with zeros, importance 1 on real weights, 0 on padding.
      const int tail0 = (nb - 1) * g, tail = n - tail0;
      std::vector<float> padded(size_t(g), 0.0f), imp(size_t(g), 0.0f);
      for (int i = 0; i < tail; ++i) padded[i] = w[tail0 + i], imp[i] = 1.0f;
      const lf::BlockParams p = f.fit(padded, imp);
      std::vector<std::byte> ref(f.block_bytes());
      f.encode(padded, p, ref.data());
      ASSERT_EQ(0, std::memcmp(ref.data(), enc.data() + (nb - 1) * f.block_bytes(), f.block_bytes()))
          << f.name() << " n " << n;
      for (int i = 0; i < tail; ++i) {
        ASSERT_EQ(bits_of(deq[tail0 + i]), bits_of(f.round(w[tail0 + i], p, i))) << f.name() << " n " << n;
        ASSERT_EQ(bits_of(fast[tail0 + i]), bits_of(deq[tail0 + i])) << f.name() << " n " << n;
      }
      // dot on the bytes == dot of the decode.
      std::vector<float> x = gaussian(size_t(n), seed++);
      double ref_dot = 0, mag = 0;
      for (int i = 0; i < n; ++i) ref_dot += double(deq[i]) * x[i], mag += std::abs(double(deq[i]) * x[i]);
      EXPECT_NEAR(lf::dot_row(f, enc.data(), x), ref_dot, 1e-5 * mag + 1e-30) << f.name() << " n " << n;
    }
  }
}

// decode(encode(w)) == round(w, fit(w)) bit for bit; dot on the bytes matches dot on the decode; 3-block rows.
TEST(IntN, RoundTripIsBitExactForAllConfigs) {
  uint32_t seed = 1;
  for (const Cfg& c : all_cfgs()) {
    for (bool clip : {true, false}) {
      lf::IntNFormat f(c.bits, c.group, c.asym, {.clip_search = clip});
      const int g = c.group, nb = 3;
      std::vector<float> w = gaussian(size_t(nb) * g, seed++, 0.02f);
      w[5] = 0.3f;  // an outlier in block 0
      for (int i = 0; i < g; ++i) w[2 * g + i] = std::abs(w[2 * g + i]);  // an all-positive block
      std::vector<float> imp = gaussian(w.size(), seed++);
      for (auto& v : imp) v = v * v + 0.01f;
      for (bool use_imp : {false, true}) {
        std::span<const float> is = use_imp ? std::span<const float>(imp) : std::span<const float>();
        std::vector<std::byte> enc(lf::row_bytes(f, w.size()));
        lf::encode_row(f, w, is, enc.data());
        std::vector<float> deq(w.size()), fast(w.size());
        lf::decode_row(f, enc.data(), deq);
        lf::intn_decode_row_f32(f, enc.data(), int64_t(w.size()), fast.data());
        std::vector<float> x = gaussian(g, seed++);
        for (int b = 0; b < nb; ++b) {
          std::span<const float> wb(w.data() + b * g, g);
          lf::BlockParams p = f.fit(wb, use_imp ? is.subspan(b * g, g) : std::span<const float>());
          for (int i = 0; i < g; ++i) {
            const float r = f.round(wb[i], p, i);
            ASSERT_EQ(bits_of(deq[b * g + i]), bits_of(r)) << f.name() << " block " << b << " i " << i;
            ASSERT_EQ(bits_of(fast[b * g + i]), bits_of(r)) << f.name();
          }
          const std::byte* blk = enc.data() + b * f.block_bytes();
          double ref = 0, mag = 0;
          for (int i = 0; i < g; ++i) {
            ref += double(deq[b * g + i]) * x[i];
            mag += std::abs(double(deq[b * g + i]) * x[i]);
          }
          EXPECT_NEAR(f.dot(blk, x.data()), ref, 1e-5 * mag + 1e-30) << f.name();
        }
      }
    }
  }
}

// A block whose weights are exactly the levels decodes to them exactly, every code included.
TEST(IntN, EveryLevelRoundTrips) {
  for (const Cfg& c : all_cfgs()) {
    lf::IntNFormat f(c.bits, c.group, c.asym);
    const int levels = 1 << c.bits;
    const float scale = 0.0078125f;  // exact in fp16
    lf::BlockParams p;
    p.scale = scale;
    p.zero = c.asym ? float(levels / 3) : 0.0f;
    const float off = c.asym ? p.zero : float(levels / 2);
    std::vector<std::byte> enc(f.block_bytes());
    std::vector<float> out(c.group);
    for (int start = 0; start < levels; start += c.group) {
      std::vector<float> w(c.group);
      for (int i = 0; i < c.group; ++i) w[i] = scale * (float((start + i) % levels) - off);
      f.encode(w, p, enc.data());
      f.decode(enc.data(), out);
      for (int i = 0; i < c.group; ++i) {
        ASSERT_EQ(bits_of(out[i] + 0.0f), bits_of(w[i] + 0.0f)) << f.name() << " level " << (start + i) % levels;
        ASSERT_EQ(f.code_of(w[i], p), (start + i) % levels) << f.name();
      }
      // Fitting such a block (it spans every level) also reproduces it exactly with min/max.
      lf::IntNFormat mm(c.bits, c.group, c.asym, {.clip_search = false});
      if (c.group >= levels) {
        mm.encode(w, mm.fit(w, {}), enc.data());
        mm.decode(enc.data(), out);
        for (int i = 0; i < c.group; ++i) ASSERT_NEAR(out[i], w[i], 1e-7f) << mm.name();
      }
    }
  }
}

// The bit layout is LSB-first contiguous: check a 3-bit block byte for byte.
TEST(IntN, PackedLayoutIsLsbFirst) {
  lf::IntNFormat f(3, 32, false);
  lf::BlockParams p;
  p.scale = 1.0f;
  std::vector<float> w(32);
  for (int i = 0; i < 32; ++i) w[i] = float(i % 8) - 4.0f;  // codes 0..7 repeating
  std::vector<std::byte> enc(f.block_bytes());
  f.encode(w, p, enc.data());
  ASSERT_EQ(enc.size(), 2u + 12u);
  EXPECT_EQ(unsigned(enc[0]) | (unsigned(enc[1]) << 8), 0x3c00u);  // fp16 1.0
  // codes 0,1,...,7 as 3-bit LSB-first = 0b111'110'101'100'011'010'001'000 = 0xFAC688 -> bytes 88 C6 FA
  for (int k = 0; k < 4; ++k) {
    EXPECT_EQ(unsigned(enc[2 + 3 * k]), 0x88u);
    EXPECT_EQ(unsigned(enc[3 + 3 * k]), 0xC6u);
    EXPECT_EQ(unsigned(enc[4 + 3 * k]), 0xFAu);
  }
  lf::IntNFormat a(2, 32, true);
  p.zero = 1.0f;
  a.encode(std::vector<float>(32, 0.0f), p, enc.data());
  EXPECT_EQ(unsigned(enc[2]) | (unsigned(enc[3]) << 8), 0x3c00u);  // zero point 1.0 as fp16
  EXPECT_EQ(unsigned(enc[4]), 0x55u);                               // code 1 everywhere
}

// round() picks the nearest level: compare with an exhaustive search over all 2^B codes.
TEST(IntN, RoundingPicksNearestLevel) {
  uint32_t seed = 100;
  for (const Cfg& c : all_cfgs()) {
    if (c.group != 32) continue;
    lf::IntNFormat f(c.bits, c.group, c.asym);
    for (int trial = 0; trial < 20; ++trial) {
      std::vector<float> w = gaussian(c.group, seed++, 0.05f);
      lf::BlockParams p = f.fit(w, {});
      std::vector<float> probe = w;
      for (int i = 0; i < 64; ++i) probe.push_back(0.25f * (float(i) - 32.0f) * 0.01f);  // incl. outside range
      for (float v : probe) {
        const float r = f.round(v, p, 0);
        float best = INFINITY;
        for (int code = 0; code < (1 << c.bits); ++code) {
          const float off = c.asym ? p.zero : float(1 << (c.bits - 1));
          best = std::min(best, std::abs(v - p.scale * (float(code) - off)));
        }
        ASSERT_EQ(std::abs(v - r), best) << f.name() << " w=" << v;
      }
    }
  }
}

TEST(IntN, ZeroBlockAndFp16Scale) {
  for (const Cfg& c : all_cfgs()) {
    lf::IntNFormat f(c.bits, c.group, c.asym);
    std::vector<float> w(c.group, 0.0f), out(c.group, 1.0f);
    std::vector<std::byte> enc(f.block_bytes());
    lf::BlockParams p = f.fit(w, {});
    f.encode(w, p, enc.data());
    f.decode(enc.data(), out);
    for (float v : out) ASSERT_EQ(v, 0.0f);
    w = gaussian(c.group, 7, 0.1f);
    p = f.fit(w, {});
    EXPECT_EQ(p.scale, lowbit::f16_to_f32(lowbit::f32_to_f16(p.scale)));  // fit returns fp16-exact params
    EXPECT_EQ(p.zero, std::nearbyint(p.zero));
  }
}

namespace {
// Pinned relative RMSE ||w - deq|| / ||w|| with the MSE clipping search on, measured on 32768 N(0, 0.02^2)
// weights (mt19937 seed 42). Rows: {sym g32, sym g64, sym g128, asym g32, asym g64, asym g128}; columns: bits 2..8.
constexpr double kBand[6][7] = {
    {0.37230, 0.17792, 0.08595, 0.04243, 0.02098, 0.01067, 0.00534},
    {0.38858, 0.18821, 0.09403, 0.04667, 0.02322, 0.01178, 0.00591},
    {0.40610, 0.19381, 0.10011, 0.05053, 0.02535, 0.01277, 0.00644},
    {0.33337, 0.16145, 0.07790, 0.03832, 0.01895, 0.00955, 0.00475},
    {0.35428, 0.17638, 0.08726, 0.04294, 0.02133, 0.01067, 0.00535},
    {0.36826, 0.18611, 0.09438, 0.04695, 0.02349, 0.01177, 0.00590},
};
constexpr double kBandTolerance = 0.10;  // +-10%
}  // namespace

TEST(IntN, GaussianDistortionInPinnedBands) {
  const std::vector<float> w = gaussian(32768, 42, 0.02f);
  int row = 0;
  for (bool asym : {false, true}) {
    for (int g : {32, 64, 128}) {
      double prev = INFINITY;
      for (int b = 2; b <= 8; ++b) {
        lf::IntNFormat clip(b, g, asym), mm(b, g, asym, {.clip_search = false});
        const double e = rel_rmse(clip, w), e_mm = rel_rmse(mm, w);
        const double pin = kBand[row][b - 2];
        EXPECT_GE(e, pin * (1 - kBandTolerance)) << clip.name();
        EXPECT_LE(e, pin * (1 + kBandTolerance)) << clip.name();
        EXPECT_LT(e, prev) << clip.name() << ": error must fall with bits";
        EXPECT_LE(e, e_mm) << clip.name() << ": clip search worse than min/max";
        prev = e;
      }
      ++row;
    }
  }
}

// Heavy tails (Student t, 3 dof): clipping pays at 3-4 bits; it is never worse anywhere.
TEST(IntN, ClipSearchBeatsMinMaxOnHeavyTails) {
  const std::vector<float> w = student_t(32768, 43, 3.0f);
  for (const Cfg& c : all_cfgs()) {
    lf::IntNFormat clip(c.bits, c.group, c.asym), mm(c.bits, c.group, c.asym, {.clip_search = false});
    const double e = rel_rmse(clip, w), e_mm = rel_rmse(mm, w);
    EXPECT_LE(e, e_mm) << c.name();
    if (c.bits == 3 || c.bits == 4) {
      EXPECT_LT(e, 0.99 * e_mm) << c.name();
    }
  }
}

// With importance, the search minimises the importance-weighted error of each block: never worse than min/max.
TEST(IntN, ImportanceWeightedClipSearch) {
  const std::vector<float> w = student_t(4096, 44, 3.0f);
  std::vector<float> imp = gaussian(4096, 45);
  for (auto& v : imp) v = v * v;
  for (const Cfg& c : all_cfgs()) {
    lf::IntNFormat clip(c.bits, c.group, c.asym), mm(c.bits, c.group, c.asym, {.clip_search = false});
    double e_clip = 0, e_mm = 0, e_plain = 0;
    for (size_t b = 0; b < w.size() / c.group; ++b) {
      std::span<const float> wb(w.data() + b * c.group, c.group), ib(imp.data() + b * c.group, c.group);
      const lf::BlockParams pc = clip.fit(wb, ib), pm = mm.fit(wb, ib), pp = clip.fit(wb, {});
      double ec = 0, em = 0, ep = 0;
      for (int i = 0; i < c.group; ++i) {
        auto sq = [](double d) { return d * d; };
        ec += ib[i] * sq(wb[i] - clip.round(wb[i], pc, i));
        em += ib[i] * sq(wb[i] - mm.round(wb[i], pm, i));
        ep += ib[i] * sq(wb[i] - clip.round(wb[i], pp, i));
      }
      ASSERT_LE(ec, em) << c.name() << " block " << b;
      e_clip += ec, e_mm += em, e_plain += ep;
    }
    EXPECT_LE(e_clip, e_plain * (1 + 1e-12)) << c.name() << ": importance-aware fit should beat the unweighted fit";
  }
}

TEST(IntN, BadInputsToFitAndEncode) {
  lf::IntNFormat f(4, 32, true);
  std::vector<float> w = gaussian(32, 9);
  std::vector<float> imp(31, 1.0f);
  EXPECT_THROW(f.fit(w, imp), lowbit::Error);                                  // importance size
  EXPECT_THROW(f.fit(std::span<const float>(w).first(16), {}), lowbit::Error);  // short block
  w[3] = NAN;
  EXPECT_THROW(f.fit(w, {}), lowbit::Error);                                   // non-finite weight
  w[3] = INFINITY;
  EXPECT_THROW(f.fit(w, {}), lowbit::Error);
  std::vector<float> out(64);
  std::vector<std::byte> buf(f.block_bytes() * 2);
  EXPECT_THROW(lf::intn_decode_row_f32(f, buf.data(), -1, out.data()), lowbit::Error);
}
