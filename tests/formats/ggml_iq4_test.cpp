// ggml IQ4_NL / IQ4_XS: sizes, hand-written golden blocks, byte-exact agreement with llama-quantize on synth256,
// bit-exact decode against llama.cpp's dequantization, round == decode(encode) for perturbed weights (GPTQ),
// idempotence, the importance-weighted fit, pinned distortion, zero / outlier blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "formats/format_test_util.h"
#include "formats/ggml.h"
#include "io/gguf.h"
#include "lowbit/error.h"

namespace lf = lowbit::formats;
using lowbit::DType;
using namespace lowbit::formats::test;

namespace {

const DType kTypes[] = {DType::IQ4_NL, DType::IQ4_XS};

}  // namespace

TEST(GgmlIq4, NamesAndBlockSizes) {
  auto nl = lf::make_ggml_iq4_format(DType::IQ4_NL);
  auto xs = lf::make_ggml_iq4_format(DType::IQ4_XS);
  ASSERT_TRUE(nl && xs);
  EXPECT_EQ(nl->name(), "iq4_nl");
  EXPECT_EQ(xs->name(), "iq4_xs");
  EXPECT_EQ(nl->dtype(), DType::IQ4_NL);
  EXPECT_EQ(xs->dtype(), DType::IQ4_XS);
  EXPECT_EQ(nl->block(), 32);
  EXPECT_EQ(xs->block(), 256);
  EXPECT_EQ(nl->block_bytes(), 18u);
  EXPECT_EQ(xs->block_bytes(), 136u);
  for (const auto* f : {nl.get(), xs.get()}) {
    const lowbit::DTypeInfo info = lowbit::dtype_info(f->dtype());
    EXPECT_EQ(uint32_t(f->block()), info.block) << f->name();
    EXPECT_EQ(f->block_bytes(), size_t(info.block_bytes)) << f->name();
    EXPECT_EQ(lf::ggml_format(f->dtype()).name(), f->name());  // through the registry
  }
  EXPECT_DOUBLE_EQ(nl->bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(xs->bits_per_weight(), 4.25);
  for (DType t : {DType::F32, DType::Q4_0, DType::Q4_K, DType::IQ2_XS}) EXPECT_EQ(lf::make_ggml_iq4_format(t), nullptr);
  const int8_t levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
  for (int i = 0; i < 16; ++i) EXPECT_EQ(lf::kIq4nlValues[i], levels[i]);
}

// Blocks written by hand from the layout in ggml.h decode to the expected values, and encoding those values with
// the same parameters gives the same bytes back.
TEST(GgmlIq4, GoldenBlocks) {
  auto kv = [](int q) { return float(lf::kIq4nlValues[q]); };
  {  // iq4_nl: d = 1.0 (0x3C00), q[j] = j, q[j + 16] = 15 - j; byte j = q[j] | q[j + 16] << 4
    auto f = lf::make_ggml_iq4_format(DType::IQ4_NL);
    const unsigned raw[18] = {0x00, 0x3C, 0xF0, 0xE1, 0xD2, 0xC3, 0xB4, 0xA5, 0x96,
                              0x87, 0x78, 0x69, 0x5A, 0x4B, 0x3C, 0x2D, 0x1E, 0x0F};
    std::vector<std::byte> blk;
    for (unsigned b : raw) blk.push_back(static_cast<std::byte>(b));
    std::vector<float> want(32), out(32);
    for (int j = 0; j < 16; ++j) want[j] = kv(j), want[j + 16] = kv(15 - j);
    f->decode(blk.data(), out);
    for (int i = 0; i < 32; ++i) ASSERT_EQ(out[i], want[i]) << "iq4_nl i " << i;
    lf::BlockParams p;
    p.scale = 1.0f;
    std::vector<std::byte> enc(18);
    f->encode(want, p, enc.data());
    EXPECT_EQ(0, std::memcmp(enc.data(), blk.data(), 18));
    for (int i = 0; i < 32; ++i) ASSERT_EQ(f->round(want[i], p, i), want[i]);
  }
  {  // iq4_xs: d = 0.5 (0x3800); sub-block scales ls = 0, 9, 31, 33, 34, 47, 62, 63:
     //   low nibbles 0 9 15 1 2 15 14 15 -> scales_l = 90 1F F2 FE; high bits 0 0 1 2 2 2 3 3 -> scales_h = 0xFA90
     //   codes q[32 s + j] = (j + s) % 16, so qs[16 s + j] = ((j + s) % 16) * 0x11 (sub-block 0: 00 11 22 .. FF)
    auto f = lf::make_ggml_iq4_format(DType::IQ4_XS);
    const int ls[8] = {0, 9, 31, 33, 34, 47, 62, 63};
    std::vector<std::byte> blk;
    for (unsigned b : {0x00u, 0x38u, 0x90u, 0xFAu, 0x90u, 0x1Fu, 0xF2u, 0xFEu})
      blk.push_back(static_cast<std::byte>(b));
    for (int s = 0; s < 8; ++s)
      for (int j = 0; j < 16; ++j) blk.push_back(static_cast<std::byte>(((j + s) % 16) * 0x11));
    ASSERT_EQ(blk.size(), 136u);
    EXPECT_EQ(unsigned(blk[8 + 15]), 0xFFu);
    std::vector<float> want(256), out(256);
    for (int s = 0; s < 8; ++s)
      for (int j = 0; j < 32; ++j) want[32 * s + j] = (0.5f * float(ls[s] - 32)) * kv((j + s) % 16);
    f->decode(blk.data(), out);
    for (int i = 0; i < 256; ++i) ASSERT_EQ(out[i], want[i]) << "iq4_xs i " << i;
    EXPECT_EQ(out[0], -16.0f * -127.0f);  // ls 0 -> scale 0.5 * -32, code 0 -> level -127
    lf::BlockParams p;
    p.scale = 0.5f;
    for (int s = 0; s < 8; ++s) p.sub_scales.push_back(float(ls[s]));
    std::vector<std::byte> enc(136);
    f->encode(want, p, enc.data());
    EXPECT_EQ(0, std::memcmp(enc.data(), blk.data(), 136));
    for (int i = 0; i < 256; ++i) ASSERT_EQ(f->round(want[i], p, i), want[i]);
    std::vector<float> x = gaussian(256, 3);
    float dot = 0.0f;
    for (int i = 0; i < 256; ++i) dot += want[i] * x[i];
    EXPECT_FLOAT_EQ(f->dot(blk.data(), x.data()), dot);
  }
}

// fit(w, {}) + encode reproduces llama-quantize --pure (the iq4_nl implementation without weights, ntry 7).
TEST(GgmlIq4, MatchesLlamaQuantizeByteForByte) {
  if (!have_reference()) GTEST_SKIP() << "needs ../shared/reference/gguf (synth256-*.gguf from llama.cpp)";
  for (DType t : kTypes) expect_matches_llama_quantize(*lf::make_ggml_iq4_format(t));
}

TEST(GgmlIq4, DecodeMatchesLlamaCppBitForBit) {
  if (!have_reference()) GTEST_SKIP() << "needs ../shared/reference/gguf (synth256-*.f32 from llama.cpp)";
  for (DType t : kTypes) ASSERT_NO_FATAL_FAILURE(expect_decode_matches_llama_cpp(*lf::make_ggml_iq4_format(t)));
}

// GPTQ's contract: decode(encode(w', p))[i] == round(w'[i], p, i) for weights the fit never saw; idempotence.
TEST(GgmlIq4, RoundEqualsDecodeOfEncodeForPerturbedWeights) {
  uint32_t seed = 20;
  for (DType t : kTypes) {
    auto f = lf::make_ggml_iq4_format(t);
    const int g = f->block();
    for (int trial = 0; trial < (g == 32 ? 200 : 40); ++trial) {
      std::vector<float> w = gaussian(size_t(g), seed++, 0.02f);
      if (trial % 4 == 1) w[trial % g] = 0.3f;
      if (trial % 4 == 2)
        for (int i = 0; i < g && i < 32; ++i) w[i] = 0.0f;  // an all-zero (sub-)block
      std::vector<float> imp = gaussian(size_t(g), seed++);
      for (auto& v : imp) v = v * v;
      const lf::BlockParams p = f->fit(w, trial % 2 ? std::span<const float>(imp) : std::span<const float>());
      std::vector<float> noise = gaussian(size_t(g), seed++, 0.01f);
      std::vector<float> w2(static_cast<size_t>(g));
      for (int i = 0; i < g; ++i) w2[i] = w[i] + noise[i] * (trial % 3 == 0 ? 5.0f : 1.0f);
      for (const auto* ws : {&w, &w2}) ASSERT_NO_FATAL_FAILURE(check_round_is_decode_of_encode(*f, *ws, p, trial));
    }
  }
}

TEST(GgmlIq4, PartialRowsRoundTrip) {
  for (DType t : kTypes) {
    auto f = lf::make_ggml_iq4_format(t);
    const int g = f->block();
    for (int n : {1, 31, g + 45}) {
      std::vector<float> w = gaussian(size_t(n), 77 + n, 0.05f);
      std::vector<std::byte> enc(lf::row_bytes(*f, n));
      lf::encode_row(*f, w, {}, enc.data());
      std::vector<float> deq(static_cast<size_t>(n));
      lf::decode_row(*f, enc.data(), deq);
      const int b0 = (n - 1) / g * g;
      std::span<const float> tail(w.data() + b0, size_t(n - b0));
      const lf::BlockParams p = lf::fit_block(*f, tail, {});
      for (int i = 0; i < n - b0; ++i) ASSERT_EQ(bits_of(deq[b0 + i]), bits_of(f->round(tail[i], p, i))) << n;
      double err = 0, mag = 0;
      for (int i = 0; i < n; ++i) err += double(w[i] - deq[i]) * (w[i] - deq[i]), mag += double(w[i]) * w[i];
      EXPECT_LT(std::sqrt(err / mag), 0.2) << f->name() << " n " << n;
    }
  }
}

// With skewed importance the importance-weighted fit (llama.cpp's imatrix search) lowers the importance-weighted
// squared error on average.
TEST(GgmlIq4, ImportanceWeightedFitLowersWeightedError) {
  std::mt19937 rng(321);
  std::student_t_distribution<float> heavy(4.0f);
  std::normal_distribution<float> z(0.0f, 1.0f);
  for (DType t : kTypes) {
    auto f = lf::make_ggml_iq4_format(t);
    const int g = f->block();
    double tot_imp = 0, tot_plain = 0;
    for (int b = 0; b < 64000 / g; ++b) {
      std::vector<float> w(static_cast<size_t>(g)), imp(static_cast<size_t>(g));
      for (auto& v : w) v = 0.02f * heavy(rng);
      for (auto& v : imp) v = std::exp(2.0f * z(rng));  // log-normal: a few weights dominate
      const lf::BlockParams pi = f->fit(w, imp), pp = f->fit(w, {});
      for (int i = 0; i < g; ++i) {
        const double di = w[i] - f->round(w[i], pi, i), dp = w[i] - f->round(w[i], pp, i);
        tot_imp += imp[i] * di * di, tot_plain += imp[i] * dp * dp;
      }
    }
    std::cout << "[ imp      ] " << f->name() << ": importance-weighted error " << tot_imp / tot_plain
              << " x the plain fit's\n";
    EXPECT_LT(tot_imp, 0.95 * tot_plain) << f->name();
  }
  // All-zero importance falls back to the plain fit.
  for (DType t : kTypes) {
    auto f = lf::make_ggml_iq4_format(t);
    std::vector<float> w = gaussian(size_t(f->block()), 4), zero(size_t(f->block()), 0.0f);
    const lf::BlockParams a = f->fit(w, zero), b = f->fit(w, {});
    EXPECT_EQ(a.scale, b.scale) << f->name();
    EXPECT_EQ(a.sub_scales, b.sub_scales) << f->name();
  }
}

namespace {
// Relative RMSE ||w - deq|| / ||w|| of the plain fit on 32768 N(0, 1) weights (mt19937 seed 42), measured:
//   iq4_nl 0.07639   iq4_xs 0.07693
constexpr double kBand[2] = {0.07639, 0.07693};
constexpr double kBandTolerance = 0.10;
}  // namespace

TEST(GgmlIq4, GaussianDistortionInPinnedBands) {
  const std::vector<float> w = gaussian(32768, 42);
  for (int k = 0; k < 2; ++k)
    expect_rel_rmse_in_band(*lf::make_ggml_iq4_format(kTypes[k]), w, kBand[k], kBandTolerance);
}

TEST(GgmlIq4, ZeroAndOutlierBlocksStayFinite) {
  for (DType t : kTypes) ASSERT_NO_FATAL_FAILURE(check_zero_and_outlier_blocks(*lf::make_ggml_iq4_format(t)));
}

TEST(GgmlIq4, BadInputs) {
  for (DType t : kTypes) {
    auto f = lf::make_ggml_iq4_format(t);
    const size_t g = size_t(f->block());
    std::vector<float> w = gaussian(g, 1), imp(g - 1, 1.0f);
    EXPECT_THROW(f->fit(w, imp), lowbit::Error);
    EXPECT_THROW(f->fit(std::span<const float>(w).first(16), {}), lowbit::Error);
    std::vector<std::byte> buf(256);
    EXPECT_THROW(f->encode(std::span<const float>(w).first(16), {}, buf.data()), lowbit::Error);
    w[3] = NAN;
    EXPECT_THROW(f->fit(w, {}), lowbit::Error);
  }
  auto xs = lf::make_ggml_iq4_format(DType::IQ4_XS);
  std::vector<float> w = gaussian(256, 2);
  std::vector<std::byte> buf(136);
  lf::BlockParams p;
  p.scale = 0.01f;  // no sub_scales
  EXPECT_THROW(xs->encode(w, p, buf.data()), lowbit::Error);
  EXPECT_THROW(xs->round(w[0], p, 0), lowbit::Error);
}
