// ggml legacy types (q8_0, q4_0, q4_1, q5_0, q5_1): sizes, hand-written golden blocks, byte-exact agreement with
// llama-quantize on synth256, bit-exact decode against llama.cpp's dequantization, round == decode(encode) for
// perturbed weights (GPTQ), idempotence, the importance-weighted fit, pinned distortion, zero / outlier blocks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
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

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1};

std::vector<std::byte> bytes(std::initializer_list<unsigned> v) {
  std::vector<std::byte> out;
  for (unsigned b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

}  // namespace

TEST(GgmlLegacy, NamesAndBlockSizes) {
  const char* names[] = {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1"};
  const size_t sizes[] = {34, 18, 20, 22, 24};
  for (int k = 0; k < 5; ++k) {
    auto f = lf::make_ggml_legacy_format(kTypes[k]);
    ASSERT_TRUE(f) << names[k];
    EXPECT_EQ(f->name(), names[k]);
    EXPECT_EQ(f->dtype(), kTypes[k]);
    EXPECT_EQ(f->block(), 32);
    EXPECT_EQ(f->block_bytes(), sizes[k]);
    const lowbit::DTypeInfo info = lowbit::dtype_info(kTypes[k]);
    EXPECT_EQ(uint32_t(f->block()), info.block) << names[k];
    EXPECT_EQ(f->block_bytes(), size_t(info.block_bytes)) << names[k];
    EXPECT_EQ(lf::ggml_format(kTypes[k]).name(), names[k]);  // through the registry
  }
  for (DType t : {DType::F32, DType::Q8_1, DType::Q4_K, DType::IQ4_NL, DType::IQ4_XS})
    EXPECT_EQ(lf::make_ggml_legacy_format(t), nullptr);
  EXPECT_DOUBLE_EQ(lf::make_ggml_legacy_format(DType::Q4_0)->bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(lf::make_ggml_legacy_format(DType::Q5_1)->bits_per_weight(), 6.0);
}

// Blocks written by hand from the layout in ggml.h decode to the expected values, and encoding those values with
// the same (fp16-exact) parameters gives the same bytes back.
TEST(GgmlLegacy, GoldenBlocks) {
  struct Golden {
    DType type;
    std::vector<std::byte> block;
    std::vector<float> values;
    lf::BlockParams params;
  };
  std::vector<Golden> cases;
  {  // q8_0: d = 0.5 (0x3800), q[i] = i - 16
    Golden g{DType::Q8_0, bytes({0x00, 0x38}), {}, {}};
    for (int i = 0; i < 32; ++i) g.block.push_back(static_cast<std::byte>(static_cast<uint8_t>(i - 16)));
    for (int i = 0; i < 32; ++i) g.values.push_back(0.5f * float(i - 16));
    g.params.scale = 0.5f;
    cases.push_back(g);
  }
  {  // q4_0: d = 1.0 (0x3C00), q[j] = j, q[j + 16] = 15 - j; byte j = q[j] | q[j + 16] << 4
    Golden g{DType::Q4_0, bytes({0x00, 0x3C, 0xF0, 0xE1, 0xD2, 0xC3, 0xB4, 0xA5, 0x96, 0x87, 0x78, 0x69, 0x5A, 0x4B,
                                 0x3C, 0x2D, 0x1E, 0x0F}),
             {}, {}};
    for (int j = 0; j < 16; ++j) g.values.push_back(float(j - 8));
    for (int j = 0; j < 16; ++j) g.values.push_back(float(15 - j - 8));
    g.params.scale = 1.0f;
    cases.push_back(g);
  }
  {  // q4_1: d = 0.25 (0x3400), m = -1.0 (0xBC00), q[j] = j, q[j + 16] = (j + 5) % 16
    Golden g{DType::Q4_1, bytes({0x00, 0x34, 0x00, 0xBC, 0x50, 0x61, 0x72, 0x83, 0x94, 0xA5, 0xB6, 0xC7, 0xD8, 0xE9,
                                 0xFA, 0x0B, 0x1C, 0x2D, 0x3E, 0x4F}),
             {}, {}};
    for (int j = 0; j < 16; ++j) g.values.push_back(0.25f * float(j) - 1.0f);
    for (int j = 0; j < 16; ++j) g.values.push_back(0.25f * float((j + 5) % 16) - 1.0f);
    g.params.scale = 0.25f;
    g.params.sub_mins = {-1.0f};
    cases.push_back(g);
  }
  {  // q5_0: d = 1.0, q[i] = i: low nibbles j | j << 4, qh = bits 16..31 set (bytes 00 00 FF FF)
    Golden g{DType::Q5_0, bytes({0x00, 0x3C, 0x00, 0x00, 0xFF, 0xFF, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF}),
             {}, {}};
    for (int i = 0; i < 32; ++i) g.values.push_back(float(i - 16));
    g.params.scale = 1.0f;
    cases.push_back(g);
  }
  {  // q5_1: d = 0.5, m = 2.0 (0x4000), q[i] = 31 - i: low nibbles (15 - j) twice, qh = bits 0..15 (FF FF 00 00)
    Golden g{DType::Q5_1, bytes({0x00, 0x38, 0x00, 0x40, 0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xEE, 0xDD, 0xCC, 0xBB, 0xAA,
                                 0x99, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00}),
             {}, {}};
    for (int i = 0; i < 32; ++i) g.values.push_back(0.5f * float(31 - i) + 2.0f);
    g.params.scale = 0.5f;
    g.params.sub_mins = {2.0f};
    cases.push_back(g);
  }
  for (const Golden& g : cases) {
    auto f = lf::make_ggml_legacy_format(g.type);
    ASSERT_EQ(g.block.size(), f->block_bytes()) << f->name();
    std::vector<float> out(32);
    f->decode(g.block.data(), out);
    for (int i = 0; i < 32; ++i) ASSERT_EQ(out[i], g.values[i]) << f->name() << " i " << i;
    std::vector<std::byte> enc(f->block_bytes());
    f->encode(g.values, g.params, enc.data());
    EXPECT_EQ(0, std::memcmp(enc.data(), g.block.data(), enc.size())) << f->name();
    for (int i = 0; i < 32; ++i) ASSERT_EQ(f->round(g.values[i], g.params, i), g.values[i]) << f->name();
    std::vector<float> x = gaussian(32, 3);
    float want = 0.0f;
    for (int i = 0; i < 32; ++i) want += g.values[i] * x[i];
    EXPECT_FLOAT_EQ(f->dot(g.block.data(), x.data()), want) << f->name();
  }
}

// fit(w, {}) + encode reproduces llama-quantize --pure (quantize_row_<type>_ref) for all 16 matrices.
TEST(GgmlLegacy, MatchesLlamaQuantizeByteForByte) {
  if (!have_reference()) GTEST_SKIP() << "needs ../shared/reference/gguf (synth256-*.gguf from llama.cpp)";
  for (DType t : kTypes) expect_matches_llama_quantize(*lf::make_ggml_legacy_format(t));
}

// decode of llama-quantize's bytes == gguf-py / ggml dequantization (.f32 files), every float bit for bit.
TEST(GgmlLegacy, DecodeMatchesLlamaCppBitForBit) {
  if (!have_reference()) GTEST_SKIP() << "needs ../shared/reference/gguf (synth256-*.f32 from llama.cpp)";
  for (DType t : kTypes) ASSERT_NO_FATAL_FAILURE(expect_decode_matches_llama_cpp(*lf::make_ggml_legacy_format(t)));
}

// GPTQ's contract: for weights the fit never saw (perturbed, some out of range), decode(encode(w', p))[i] equals
// round(w'[i], p, i) bit for bit; and encoding decoded values again reproduces them (idempotence).
TEST(GgmlLegacy, RoundEqualsDecodeOfEncodeForPerturbedWeights) {
  uint32_t seed = 10;
  for (DType t : kTypes) {
    auto f = lf::make_ggml_legacy_format(t);
    for (int trial = 0; trial < 200; ++trial) {
      std::vector<float> w = gaussian(32, seed++, 0.02f);
      if (trial % 4 == 1) w[trial % 32] = 0.3f;                       // an outlier
      if (trial % 4 == 2) for (auto& v : w) v = std::abs(v) + 0.01f;  // all positive
      std::vector<float> imp = gaussian(32, seed++);
      for (auto& v : imp) v = v * v;
      const lf::BlockParams p = f->fit(w, trial % 2 ? std::span<const float>(imp) : std::span<const float>());
      std::vector<float> noise = gaussian(32, seed++, 0.01f);
      std::vector<float> w2(32);
      for (int i = 0; i < 32; ++i) w2[i] = w[i] + noise[i] * (trial % 3 == 0 ? 5.0f : 1.0f);
      // llama.cpp's weighted q4_0..q5_1 pick codes with one trial step and store another (the least-squares one),
      // so encoding the decoded values again may move a code by one: idempotence holds for the plain fits only.
      const bool weighted = trial % 2 && t != DType::Q8_0;
      for (const auto* ws : {&w, &w2})
        ASSERT_NO_FATAL_FAILURE(check_round_is_decode_of_encode(*f, *ws, p, trial, !weighted));
    }
  }
}

// Rows of any length through the partial-block helpers: the last block decodes to round() of its weights.
TEST(GgmlLegacy, PartialRowsRoundTrip) {
  for (DType t : kTypes) {
    auto f = lf::make_ggml_legacy_format(t);
    for (int n : {1, 31, 45, 96}) {
      std::vector<float> w = gaussian(size_t(n), 77 + n, 0.05f);
      std::vector<std::byte> enc(lf::row_bytes(*f, n));
      lf::encode_row(*f, w, {}, enc.data());
      std::vector<float> deq(static_cast<size_t>(n));
      lf::decode_row(*f, enc.data(), deq);
      const int b0 = (n - 1) / 32 * 32;
      std::span<const float> tail(w.data() + b0, size_t(n - b0));
      const lf::BlockParams p = lf::fit_block(*f, tail, {});
      for (int i = 0; i < n - b0; ++i) ASSERT_EQ(bits_of(deq[b0 + i]), bits_of(f->round(tail[i], p, i))) << n;
      std::vector<float> x = gaussian(size_t(n), 5);
      double want = 0;
      for (int i = 0; i < n; ++i) want += double(deq[i]) * x[i];
      EXPECT_NEAR(lf::dot_row(*f, enc.data(), x), want, 1e-5) << f->name() << " n " << n;
    }
  }
}

// With skewed importance the importance-weighted fit (llama.cpp's imatrix quantizers) lowers the importance-weighted
// squared error on average; q8_0 ignores the importance, as llama.cpp's quantize_q8_0 does.
TEST(GgmlLegacy, ImportanceWeightedFitLowersWeightedError) {
  std::mt19937 rng(123);
  std::student_t_distribution<float> heavy(4.0f);
  std::normal_distribution<float> z(0.0f, 1.0f);
  for (DType t : kTypes) {
    auto f = lf::make_ggml_legacy_format(t);
    double tot_imp = 0, tot_plain = 0;
    int better = 0;
    const int blocks = 2000;
    for (int b = 0; b < blocks; ++b) {
      std::vector<float> w(32), imp(32);
      for (auto& v : w) v = 0.02f * heavy(rng);
      for (auto& v : imp) v = std::exp(2.0f * z(rng));  // log-normal: a few weights dominate
      const lf::BlockParams pi = f->fit(w, imp), pp = f->fit(w, {});
      double ei = 0, ep = 0;
      for (int i = 0; i < 32; ++i) {
        const double di = w[i] - f->round(w[i], pi, i), dp = w[i] - f->round(w[i], pp, i);
        ei += imp[i] * di * di, ep += imp[i] * dp * dp;
      }
      tot_imp += ei, tot_plain += ep;
      better += ei < ep;
    }
    std::cout << "[ imp      ] " << f->name() << ": importance-weighted error " << tot_imp / tot_plain
              << " x the plain fit's, better in " << better << " / " << blocks << " blocks\n";
    if (t == DType::Q8_0) {
      EXPECT_EQ(tot_imp, tot_plain);
      continue;
    }
    EXPECT_LT(tot_imp, 0.97 * tot_plain) << f->name();
    EXPECT_GT(better, blocks / 2) << f->name();
  }
  // All-zero importance falls back to the plain fit.
  auto f = lf::make_ggml_legacy_format(DType::Q4_1);
  std::vector<float> w = gaussian(32, 4), zero(32, 0.0f);
  const lf::BlockParams a = f->fit(w, zero), b = f->fit(w, {});
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.sub_mins, b.sub_mins);
}

// fit_row: llama.cpp's weighted legacy fits take sigma2 from the whole row, so a block's params depend on the rest
// of the row; a one-block row is fit() of that block, and without importance fit_row is fit() block by block.
TEST(GgmlLegacy, FitRowUsesTheRowsMeanSquare) {
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1}) {
    auto f = lf::make_ggml_legacy_format(t);
    std::vector<float> row = gaussian(32 * 8, 77, 0.02f), imp = gaussian(32 * 8, 78);
    for (auto& v : imp) v = v * v + 0.01f;
    for (int i = 32; i < 64; ++i) row[i] *= 30.0f;  // one loud block moves the row's mean square
    std::vector<lf::BlockParams> whole(8), plain(8), one(1);
    f->fit_row(row, imp, whole);
    f->fit_row(row, {}, plain);
    int differ = 0;
    for (int b = 0; b < 8; ++b) {
      const std::span<const float> wb(row.data() + 32 * b, 32), ib(imp.data() + 32 * b, 32);
      const lf::BlockParams alone = f->fit(wb, ib), p = f->fit(wb, {});
      EXPECT_EQ(plain[b].scale, p.scale) << f->name();
      differ += whole[b].scale != alone.scale;
      f->fit_row(wb, ib, one);
      EXPECT_EQ(one[0].scale, alone.scale) << f->name();
      EXPECT_EQ(one[0].sub_scales, alone.sub_scales) << f->name();
    }
    EXPECT_GT(differ, 0) << f->name() << ": the row's mean square changed nothing";
  }
}

namespace {
// Relative RMSE ||w - deq|| / ||w|| of the plain fit on 32768 N(0, 1) weights (mt19937 seed 42), measured:
//   q8_0 0.005371   q4_0 0.08603   q4_1 0.07792   q5_0 0.04295   q5_1 0.03805
constexpr double kBand[5] = {0.005371, 0.08603, 0.07792, 0.04295, 0.03805};
constexpr double kBandTolerance = 0.10;
}  // namespace

TEST(GgmlLegacy, GaussianDistortionInPinnedBands) {
  const std::vector<float> w = gaussian(32768, 42);
  for (int k = 0; k < 5; ++k)
    expect_rel_rmse_in_band(*lf::make_ggml_legacy_format(kTypes[k]), w, kBand[k], kBandTolerance);
}

TEST(GgmlLegacy, ZeroAndOutlierBlocksStayFinite) {
  for (DType t : kTypes) ASSERT_NO_FATAL_FAILURE(check_zero_and_outlier_blocks(*lf::make_ggml_legacy_format(t)));
}

TEST(GgmlLegacy, BadInputs) {
  auto f = lf::make_ggml_legacy_format(DType::Q4_0);
  std::vector<float> w = gaussian(32, 1), imp(31, 1.0f);
  EXPECT_THROW(f->fit(w, imp), lowbit::Error);
  EXPECT_THROW(f->fit(std::span<const float>(w).first(16), {}), lowbit::Error);
  std::vector<std::byte> buf(64);
  EXPECT_THROW(f->encode(std::span<const float>(w).first(16), {}, buf.data()), lowbit::Error);
  w[3] = NAN;
  EXPECT_THROW(f->fit(w, {}), lowbit::Error);
  w[3] = INFINITY;
  EXPECT_THROW(f->fit(w, {}), lowbit::Error);
}
