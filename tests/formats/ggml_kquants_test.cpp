// ggml K-quants (q2_K .. q6_K): layout, hand-written golden blocks, byte-exact agreement with llama-quantize on
// ../shared/reference/gguf, bit-exact decoding, round/encode consistency, importance, distortion bands, extremes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "formats/format.h"
#include "formats/format_test_util.h"
#include "formats/ggml.h"
#include "formats/ggml_kquants.h"
#include "io/gguf.h"
#include "lowbit/error.h"

namespace lf = lowbit::formats;
using lowbit::DType;
using namespace lowbit::formats::test;

namespace {

const DType kTypes[] = {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::unique_ptr<lf::GgmlFormat> fmt(DType t) {
  auto f = lf::make_ggml_kquant_format(t);
  if (!f) throw std::runtime_error("no k-quant format");
  return f;
}

std::vector<float> decode_block(const lf::Format& f, const std::vector<std::byte>& b) {
  std::vector<float> out(256);
  f.decode(b.data(), out);
  return out;
}

std::vector<std::byte> encode_block(const lf::Format& f, std::span<const float> w, const lf::BlockParams& p) {
  std::vector<std::byte> b(f.block_bytes());
  f.encode(w, p, b.data());
  return b;
}

// Whether sub-block step d*sc is zero for weight i under p (then only the sign of a zero may depend on codes).
bool zero_step(const lf::GgmlFormat& f, const lf::BlockParams& p, int i) {
  const int sub = (f.dtype() == DType::Q4_K || f.dtype() == DType::Q5_K) ? 32 : 16;
  const float d = lowbit::f16_to_f32(lowbit::f32_to_f16(p.scale));
  return d * p.sub_scales[i / sub] == 0.0f;
}

void set_u16(std::vector<std::byte>& b, size_t at, uint16_t v) {
  b[at] = std::byte(v & 0xff);
  b[at + 1] = std::byte(v >> 8);
}
void set(std::vector<std::byte>& b, size_t at, unsigned v) { b[at] = std::byte(v); }

// The reference file written for each K type (llama-quantize --pure, no imatrix).
const std::map<DType, std::string> kRefFile = {{DType::Q2_K, "Q2_K"},   {DType::Q3_K, "Q3_K_M"},
                                               {DType::Q4_K, "Q4_K_M"}, {DType::Q5_K, "Q5_K_M"},
                                               {DType::Q6_K, "Q6_K"}};

}  // namespace

TEST(GgmlKquant, NamesSizesAndTypes) {
  const std::map<DType, std::pair<std::string, size_t>> want = {{DType::Q2_K, {"q2_K", 84}},
                                                                {DType::Q3_K, {"q3_K", 110}},
                                                                {DType::Q4_K, {"q4_K", 144}},
                                                                {DType::Q5_K, {"q5_K", 176}},
                                                                {DType::Q6_K, {"q6_K", 210}}};
  for (DType t : kTypes) {
    auto f = fmt(t);
    EXPECT_EQ(f->name(), want.at(t).first);
    EXPECT_EQ(f->block(), 256);
    EXPECT_EQ(f->block_bytes(), want.at(t).second);
    EXPECT_EQ(f->dtype(), t);
    EXPECT_EQ(f->block_bytes(), lowbit::dtype_info(t).block_bytes);
  }
  EXPECT_DOUBLE_EQ(fmt(DType::Q2_K)->bits_per_weight(), 2.625);
  EXPECT_DOUBLE_EQ(fmt(DType::Q4_K)->bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(fmt(DType::Q6_K)->bits_per_weight(), 6.5625);
  for (DType t : {DType::F32, DType::Q4_0, DType::Q8_0, DType::Q8_K, DType::IQ4_XS})
    EXPECT_EQ(lf::make_ggml_kquant_format(t), nullptr);
}

TEST(GgmlKquant, ScaleUnpackHelpers) {
  // q4_K: sub-blocks 0..3 in the low 6 bits; 4..7 split into nibbles of bytes 8..11 plus top bits of 0..7.
  uint8_t s[12] = {5, 0x80 | 17, 63, 0, 9, 0x40 | 2, 0, 0xc0 | 1, 0x21, 0x4f, 0, 0xff};
  const int want_sc[8] = {5, 17, 63, 0, 1 | (0 << 4), 15 | (2 << 4), 0, 15 | (0 << 4)};
  const int want_m[8] = {9, 2, 0, 1, 2 | (0 << 4), 4 | (1 << 4), 0, 15 | (3 << 4)};
  for (int j = 0; j < 8; ++j) {
    uint8_t sc = 0, m = 0;
    lf::q4k_scale_min(s, j, sc, m);
    EXPECT_EQ(sc, want_sc[j]) << j;
    EXPECT_EQ(m, want_m[j]) << j;
  }
  // q3_K: stored 33 (sc 1) for j = 0, 30 (sc -2) for j = 9, 63 (sc 31) for j = 15, 0 (sc -32) elsewhere.
  uint8_t q[12] = {};
  q[0] = 0x01, q[8] = 0x02;               // j = 0: low 1, high 2
  q[1] = 0xe0, q[9] = 0x10;               // j = 9: low 14 (hi nibble of byte 1), high 1 at bits 4-5 of byte 9
  q[7] = 0xf0, q[11] = 0xc0;              // j = 15: low 15, high 3 at bits 6-7 of byte 11
  int8_t out[16];
  lf::q3k_scales(q, out);
  for (int j = 0; j < 16; ++j) {
    const int want = j == 0 ? 1 : j == 9 ? -2 : j == 15 ? 31 : -32;
    EXPECT_EQ(out[j], want) << j;
  }
}

// Golden blocks written by hand from the layouts in ggml_kquants.cpp; every other weight has code 0.
TEST(GgmlKquant, GoldenQ2K) {
  auto f = fmt(DType::Q2_K);
  std::vector<std::byte> b(84);
  set(b, 0, 0x21);                       // sub-block 0: sc 1, m 2
  set(b, 2, 0x13);                       // sub-block 2: sc 3, m 1
  set(b, 6, 0xf0);                       // sub-block 6: sc 0, m 15
  set(b, 8, 0x05);                       // sub-block 8: sc 5, m 0
  set(b, 16 + 0, 0xe4);                  // weights 0, 32, 64, 96: codes 0, 1, 2, 3
  set(b, 16 + 32 + 5, 0x03);             // weight 133: code 3
  set_u16(b, 80, 0x3c00);                // d = 1
  set_u16(b, 82, 0x3800);                // dmin = 0.5
  const auto v = decode_block(*f, b);
  EXPECT_EQ(v[0], -1.0f);                // 1*0 - 0.5*2
  EXPECT_EQ(v[32], 2.5f);                // 3*1 - 0.5*1
  EXPECT_EQ(v[64], 0.0f);                // 0*2 - 0
  EXPECT_EQ(v[96], -7.5f);               // 0*3 - 0.5*15
  EXPECT_EQ(v[133], 15.0f);              // 5*3
  EXPECT_EQ(v[1], -1.0f);
  EXPECT_EQ(v[33], -0.5f);
  EXPECT_EQ(v[134], 0.0f);
  EXPECT_EQ(v[255], 0.0f);
}

TEST(GgmlKquant, GoldenQ3K) {
  auto f = fmt(DType::Q3_K);
  std::vector<std::byte> b(110);
  set(b, 96 + 0, 0x01), set(b, 96 + 8, 0x02);  // sub-block 0: stored 33 -> sc 1
  set(b, 96 + 1, 0xe0), set(b, 96 + 9, 0x10);  // sub-block 9: stored 30 -> sc -2; the rest stored 0 -> sc -32
  set(b, 0, 0x01), set(b, 32 + 0, 0x03);       // weight 0: high bit + low 3 -> code 7
  set(b, 16, 0x10), set(b, 32 + 48, 0x01);     // weight 144: hmask[16] bit 4 + low 1 -> code 5
  set(b, 8, 0x02), set(b, 32 + 8, 0x04);       // weight 40: hmask[8] bit 1 + low 1 (bits 2-3) -> code 5
  set_u16(b, 108, 0x3c00);                     // d = 1
  const auto v = decode_block(*f, b);
  EXPECT_EQ(v[0], 3.0f);     // 1 * (7 - 4)
  EXPECT_EQ(v[1], -4.0f);    // 1 * (0 - 4)
  EXPECT_EQ(v[144], -2.0f);  // -2 * (5 - 4)
  EXPECT_EQ(v[145], 8.0f);   // -2 * (0 - 4)
  EXPECT_EQ(v[40], -32.0f);  // -32 * (5 - 4)
  EXPECT_EQ(v[41], 128.0f);  // -32 * (0 - 4)
}

TEST(GgmlKquant, GoldenQ4KAndQ5K) {
  for (DType t : {DType::Q4_K, DType::Q5_K}) {
    auto f = fmt(t);
    const bool q5 = t == DType::Q5_K;
    std::vector<std::byte> b(f->block_bytes());
    set_u16(b, 0, 0x3c00);                 // d = 1
    set_u16(b, 2, 0x3400);                 // dmin = 0.25
    set(b, 4 + 0, 2), set(b, 4 + 4, 3);    // sub-block 0: sc 2, m 3
    set(b, 4 + 9, 0x21);                   // sub-block 5: low nibbles sc 1, m 2 ...
    set(b, 4 + 1, 0x80), set(b, 4 + 5, 0x40);  // ... top bits sc 2 (-> 33), m 1 (-> 18)
    const size_t qs = q5 ? 48 : 16;
    set(b, qs + 0, 0x07);                  // weight 0: low nibble 7
    set(b, qs + 64 + 1, 0xa0);             // weight 161 (chunk 2, l = 1, high nibble): 10
    if (q5) {
      set(b, 16 + 0, 0x01);                // qh[0] bit 0: weight 0 + 16
      set(b, 16 + 1, 0x20);                // qh[1] bit 5: weight 161 + 16
    }
    const auto v = decode_block(*f, b);
    EXPECT_EQ(v[0], q5 ? 45.25f : 13.25f) << f->name();      // 2 * (7 [+16]) - 0.25 * 3
    EXPECT_EQ(v[161], q5 ? 853.5f : 325.5f) << f->name();    // 33 * (10 [+16]) - 0.25 * 18
    EXPECT_EQ(v[1], -0.75f) << f->name();                    // code 0 in sub-block 0
    EXPECT_EQ(v[160], -4.5f) << f->name();                   // code 0 in sub-block 5
    EXPECT_EQ(v[40], 0.0f) << f->name();                     // sub-block 1: sc 0, m 0
  }
}

TEST(GgmlKquant, GoldenQ6K) {
  auto f = fmt(DType::Q6_K);
  std::vector<std::byte> b(210);
  set(b, 192 + 0, 3);                    // sub-block 0: sc 3
  set(b, 192 + 13, 0xfb);                // sub-block 13: sc -5
  set(b, 0, 0x0f), set(b, 128 + 0, 0x02);  // weight 0: low 15, high 2 -> code 47
  set(b, 80, 0x50), set(b, 128 + 48, 0x10);  // weight 208 (half 1, l = 16, third quarter): low 5, high 1 -> 21
  set_u16(b, 208, 0x3800);               // d = 0.5
  const auto v = decode_block(*f, b);
  EXPECT_EQ(v[0], 22.5f);                // 0.5 * 3 * (47 - 32)
  EXPECT_EQ(v[208], 27.5f);              // 0.5 * -5 * (21 - 32)
  EXPECT_EQ(v[1], -48.0f);               // 0.5 * 3 * (0 - 32)
  EXPECT_EQ(v[209], 80.0f);              // 0.5 * -5 * (0 - 32)
  EXPECT_EQ(bits_of(v[20]), bits_of(-0.0f));  // sub-block 1: 0.5 * 0 * (0 - 32) = -0, as ggml
}

// encode(decode(encode(w, p)), p) decodes to the same values, and round() agrees with the first decode.
TEST(GgmlKquant, EncodeOfDecodedValuesIsIdempotent) {
  for (DType t : kTypes) {
    auto f = fmt(t);
    for (uint32_t seed = 0; seed < 40; ++seed) {
      auto w = gaussian(256, seed * 7 + 1, 0.02f);
      if (seed % 4 == 1) w[seed % 256] *= 40.0f;
      const auto p = f->fit(w, {});
      const auto v1 = decode_block(*f, encode_block(*f, w, p));
      const auto b2 = encode_block(*f, v1, p);
      const auto v2 = decode_block(*f, b2);
      for (int i = 0; i < 256; ++i)
        ASSERT_EQ(bits_of(v1[i]), bits_of(v2[i])) << f->name() << " seed " << seed << " i " << i;
      // And the fitted parameters are what encode stored (round trip through the bytes).
      for (int i = 0; i < 256; ++i) {
        const float r = f->round(w[i], p, i);
        if (zero_step(*f, p, i))
          ASSERT_EQ(r, v1[i]) << f->name() << " " << i;  // +-0 may differ there (see RoundMatchesEncode...)
        else
          ASSERT_EQ(bits_of(r), bits_of(v1[i])) << f->name() << " " << i;
      }
    }
  }
}

TEST(GgmlKquant, DecodeMatchesReferenceF32) {
  if (!have_reference("synth256-Q4_K_M.gguf"))
    GTEST_SKIP() << "needs ../shared/reference/gguf (llama.cpp-made K-quant references)";
  for (DType t : kTypes) {
    auto f = fmt(t);
    const std::string tag = kRefFile.at(t);
    auto g = lowbit::io::GgufFile::open(ref_path("synth256-" + tag + ".gguf"));
    for (const char* tensor : {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"}) {
      const auto want = lowbit::test::read_f32(ref_path("synth256-" + tag + "." + tensor + ".f32"));
      const lowbit::io::GgufTensor* info = find_tensor(*g, tensor);
      ASSERT_NE(info, nullptr) << tensor;
      ASSERT_EQ(info->dtype, t);
      const size_t n = info->ne[0] * info->ne[1];
      ASSERT_EQ(want.size(), n);
      std::vector<float> got(n);
      const std::byte* data = g->tensor_data(*info);
      for (size_t b = 0; b < n / 256; ++b)
        f->decode(data + b * f->block_bytes(), std::span<float>(got.data() + b * 256, 256));
      size_t diff = 0;
      for (size_t i = 0; i < n; ++i) diff += bits_of(got[i]) != bits_of(want[i]);
      EXPECT_EQ(diff, 0u) << tag << " " << tensor;
      std::cout << "[ decode ] " << tag << " " << tensor << ": " << n - diff << " / " << n << " floats bit-identical\n";
    }
  }
}

TEST(GgmlKquant, EncodeMatchesLlamaQuantizeByteForByte) {
  if (!have_reference())
    GTEST_SKIP() << "needs ../shared/reference/gguf (llama.cpp-made K-quant references)";
  auto src = lowbit::io::GgufFile::open(ref_path("synth256-F32.gguf"));
  for (DType t : kTypes) {
    auto f = fmt(t);
    const std::string tag = kRefFile.at(t);
    auto ref = lowbit::io::GgufFile::open(ref_path("synth256-" + tag + ".gguf"));
    std::map<std::string, const lowbit::io::GgufTensor*> by_name;
    for (const auto& ti : ref->tensors()) by_name[ti.name] = &ti;
    int matrices = 0, matched = 0;
    size_t zero_step_subblocks = 0, blocks_total = 0, blocks_bad = 0;
    std::vector<std::byte> enc(f->block_bytes());
    for (const auto& ti : src->tensors()) {
      if (ti.ne.size() != 2 || ti.dtype != DType::F32) continue;
      ++matrices;
      auto it = by_name.find(ti.name);
      ASSERT_NE(it, by_name.end()) << ti.name;
      ASSERT_EQ(it->second->dtype, t) << ti.name;
      const float* w = reinterpret_cast<const float*>(src->tensor_data(ti));
      const std::byte* want = ref->tensor_data(*it->second);
      const size_t nblocks = ti.ne[0] * ti.ne[1] / 256;
      size_t bad = 0;
      for (size_t b = 0; b < nblocks; ++b) {
        std::span<const float> wb(w + b * 256, 256);
        const auto p = f->fit(wb, {});
        for (int i = 0; i < 256; i += (f->dtype() == DType::Q4_K || f->dtype() == DType::Q5_K) ? 32 : 16)
          zero_step_subblocks += zero_step(*f, p, i);
        f->encode(wb, p, enc.data());
        bad += std::memcmp(enc.data(), want + b * f->block_bytes(), f->block_bytes()) != 0;
      }
      blocks_total += nblocks;
      blocks_bad += bad;
      matched += bad == 0;
      EXPECT_EQ(bad, 0u) << tag << " " << ti.name << ": " << bad << " of " << nblocks << " blocks differ";
    }
    EXPECT_EQ(matrices, 16);
    EXPECT_EQ(matched, 16) << tag;
    std::cout << "[ encode ] " << tag << ": " << matched << " / " << matrices << " tensors byte-identical ("
              << blocks_total - blocks_bad << " / " << blocks_total << " blocks; " << zero_step_subblocks
              << " sub-blocks with step 0)\n";
  }
}

// GPTQ's contract: encode(w', p) for weights w' the fit never saw decodes to round(w'[i], p, i).
TEST(GgmlKquant, RoundMatchesEncodeOnPerturbedWeights) {
  std::mt19937 rng(123);
  for (DType t : kTypes) {
    auto f = fmt(t);
    int zero_step_weights = 0, signed_zero_mismatches = 0;
    for (int trial = 0; trial < 60; ++trial) {
      auto w = gaussian(256, 1000 + trial, 0.02f);
      if (trial % 3 == 0) w[(trial * 37) % 256] = 2.0f;  // an outlier: small sub-blocks' scales may round to 0
      if (trial % 5 == 0)
        for (int i = 64; i < 96; ++i) w[i] *= 1e-3f;   // a nearly empty sub-block
      const auto p = f->fit(w, {});
      std::normal_distribution<float> noise(0.0f, trial % 2 ? 0.01f : 0.2f);
      std::vector<float> w2(w);
      for (auto& x : w2) x += noise(rng);
      if (trial % 7 == 0) w2[5] = 1e9f, w2[6] = -1e9f;  // far outside the fitted range: clamps
      const auto v = decode_block(*f, encode_block(*f, w2, p));
      for (int i = 0; i < 256; ++i) {
        const float r = f->round(w2[i], p, i);
        if (zero_step(*f, p, i)) {
          ++zero_step_weights;
          signed_zero_mismatches += bits_of(r) != bits_of(v[i]);
          ASSERT_EQ(r, v[i]) << f->name() << " trial " << trial << " i " << i;  // +-0 may differ (see header)
        } else {
          ASSERT_EQ(bits_of(r), bits_of(v[i])) << f->name() << " trial " << trial << " i " << i;
        }
      }
    }
    std::cout << "[ round  ] " << f->name() << ": " << zero_step_weights << " weights in step-0 sub-blocks, "
              << signed_zero_mismatches << " of them decode to the other signed zero\n";
  }
}

TEST(GgmlKquant, ImportanceLowersWeightedError) {
  for (DType t : kTypes) {
    auto f = fmt(t);
    std::mt19937 rng(7);
    std::lognormal_distribution<float> skew(0.0f, 1.5f);
    double plain = 0, weighted = 0;
    int better = 0;
    const int blocks = 200;
    for (int b = 0; b < blocks; ++b) {
      const auto w = gaussian(256, 5000 + b, 0.02f);
      std::vector<float> imp(256);
      for (auto& x : imp) x = skew(rng);
      auto err = [&](const lf::BlockParams& p) {
        const auto v = decode_block(*f, encode_block(*f, w, p));
        double e = 0;
        for (int i = 0; i < 256; ++i) e += imp[i] * (double(w[i]) - v[i]) * (double(w[i]) - v[i]);
        return e;
      };
      const double ep = err(f->fit(w, {})), ew = err(f->fit(w, imp));
      plain += ep;
      weighted += ew;
      better += ew < ep;
    }
    std::cout << "[ imp    ] " << f->name() << ": weighted error with importance / without = " << weighted / plain
              << " (better in " << better << " / " << blocks << " blocks)\n";
    EXPECT_LT(weighted, 0.97 * plain) << f->name();
    EXPECT_GT(better, blocks / 2) << f->name();
  }
  // All-zero importance is the plain fit.
  auto f = fmt(DType::Q4_K);
  const auto w = gaussian(256, 3, 1.0f);
  const std::vector<float> zeros(256, 0.0f);
  EXPECT_EQ(encode_block(*f, w, f->fit(w, zeros)), encode_block(*f, w, f->fit(w, {})));
}

// Relative RMSE ||w - deq|| / ||w|| on 32768 N(0, 1) weights, pinned +-10%.
TEST(GgmlKquant, DistortionBands) {
  const std::map<DType, double> pinned = {{DType::Q2_K, 0.2969}, {DType::Q3_K, 0.1513}, {DType::Q4_K, 0.07146},
                                          {DType::Q5_K, 0.03615}, {DType::Q6_K, 0.01765}};
  const auto w = gaussian(32768, 42, 1.0f);
  for (DType t : kTypes) {
    auto f = fmt(t);
    const double rel = rel_rmse(*f, w);
    std::cout << "[ rmse   ] " << f->name() << ": " << rel << "\n";
    EXPECT_NEAR(rel, pinned.at(t), 0.1 * pinned.at(t)) << f->name();
  }
}

TEST(GgmlKquant, ZeroBlocksAndHugeOutliersStayFinite) {
  for (DType t : kTypes) {
    auto f = fmt(t);
    std::vector<std::vector<float>> cases;
    cases.emplace_back(256, 0.0f);
    for (float big : {1e4f, 1e6f, 1e9f, 3e38f}) {
      auto w = gaussian(256, 9, 0.02f);
      w[17] = big;
      w[200] = -big / 3;
      cases.push_back(w);
    }
    {
      std::vector<float> w(256, 0.0f);
      w[3] = 1e-30f;  // denormal-scale weights: steps underflow fp16
      w[100] = -2e-20f;
      cases.push_back(w);
    }
    for (size_t c = 0; c < cases.size(); ++c) {
      const auto& w = cases[c];
      for (bool imp : {false, true}) {
        std::vector<float> importance(imp ? 256 : 0, 1.0f);
        const auto p = f->fit(w, importance);
        const auto v = decode_block(*f, encode_block(*f, w, p));
        for (int i = 0; i < 256; ++i) {
          ASSERT_TRUE(std::isfinite(v[i])) << f->name() << " case " << c << " imp " << imp << " i " << i;
          ASSERT_TRUE(std::isfinite(f->round(w[i], p, i)));
        }
        if (c == 0) {
          for (int i = 0; i < 256; ++i) EXPECT_EQ(v[i], 0.0f) << f->name();
        }
        if (c == 1) {
          EXPECT_NEAR(v[17], 1e4f, 1e4f * 0.2f) << f->name() << " imp " << imp;
        }
      }
    }
  }
}

TEST(GgmlKquant, DotMatchesDecode) {
  for (DType t : kTypes) {
    auto f = fmt(t);
    const auto w = gaussian(256, 77, 0.05f);
    const auto x = gaussian(256, 78, 1.0f);
    const auto b = encode_block(*f, w, f->fit(w, {}));
    const auto v = decode_block(*f, b);
    float want = 0.0f;
    for (int i = 0; i < 256; ++i) want += v[i] * x[i];
    EXPECT_EQ(f->dot(b.data(), x.data()), want) << f->name();
  }
}

TEST(GgmlKquant, RejectsBadSizesAndParams) {
  for (DType t : kTypes) {
    auto f = fmt(t);
    std::vector<float> w(100, 1.0f);
    EXPECT_THROW(f->fit(w, {}), lowbit::Error);
    std::vector<float> full(256, 1.0f), imp(10, 1.0f);
    EXPECT_THROW(f->fit(full, imp), lowbit::Error);
    full[3] = NAN;
    EXPECT_THROW(f->fit(full, {}), lowbit::Error);
    lf::BlockParams empty;
    std::vector<std::byte> out(f->block_bytes());
    EXPECT_THROW(f->encode(std::vector<float>(256, 0.0f), empty, out.data()), lowbit::Error);
  }
}
