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
#include "formats/ggml.h"
#include "io/gguf.h"
#include "lowbit/error.h"
#include "test_util.h"

namespace lf = lowbit::formats;
using lowbit::DType;

namespace {

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1};

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

std::vector<std::byte> bytes(std::initializer_list<unsigned> v) {
  std::vector<std::byte> out;
  for (unsigned b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

const std::string kRefDir = "reference/gguf";
bool have_reference() { return lowbit::test::have_shared(kRefDir + "/synth256-F32.gguf"); }
std::string ref_path(const std::string& file) { return lowbit::test::shared(kRefDir + "/" + file); }

const lowbit::io::GgufTensor* find_tensor(const lowbit::io::GgufFile& g, const std::string& name) {
  for (const auto& t : g.tensors())
    if (t.name == name) return &t;
  return nullptr;
}

// Quantizes every matrix of synth256-F32.gguf with fit(w, {}) + encode, row by row, and compares with the same
// tensor in synth256-<TYPE>.gguf. Returns the number of byte-identical tensors; `total` gets the matrix count.
int count_matching_tensors(const lf::GgmlFormat& f, int& total, std::string& report) {
  auto src = lowbit::io::GgufFile::open(ref_path("synth256-F32.gguf"));
  auto ref = lowbit::io::GgufFile::open(ref_path("synth256-" + upper(f.name()) + ".gguf"));
  int matched = 0;
  total = 0;
  for (const auto& t : src->tensors()) {
    if (t.ne.size() != 2 || t.dtype != DType::F32) continue;
    ++total;
    const auto* r = find_tensor(*ref, t.name);
    if (!r || r->dtype != f.dtype()) {
      report += " " + t.name + "(missing)";
      continue;
    }
    const int64_t n0 = static_cast<int64_t>(t.ne[0]), rows = static_cast<int64_t>(t.ne[1]);
    const size_t row_bytes = lf::row_bytes(f, n0);
    if (r->nbytes != row_bytes * rows) {
      report += " " + t.name + "(size)";
      continue;
    }
    const float* w = reinterpret_cast<const float*>(src->tensor_data(t));
    std::vector<std::byte> out(row_bytes);
    int64_t bad_blocks = 0;
    for (int64_t row = 0; row < rows; ++row) {
      lf::encode_row(f, std::span<const float>(w + row * n0, static_cast<size_t>(n0)), {}, out.data());
      const std::byte* want = ref->tensor_data(*r) + row * row_bytes;
      for (size_t b = 0; b < row_bytes; b += f.block_bytes())
        if (std::memcmp(out.data() + b, want + b, f.block_bytes()) != 0) ++bad_blocks;
    }
    if (bad_blocks == 0)
      ++matched;
    else
      report += " " + t.name + "(" + std::to_string(bad_blocks) + " blocks differ)";
  }
  return matched;
}

// ||w - deq|| / ||w|| over a row encoded with fit(w, {}).
double rel_rmse(const lf::Format& f, const std::vector<float>& w) {
  std::vector<std::byte> enc(lf::row_bytes(f, static_cast<int64_t>(w.size())));
  lf::encode_row(f, w, {}, enc.data());
  std::vector<float> deq(w.size());
  lf::decode_row(f, enc.data(), deq);
  double num = 0, den = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    num += (double(w[i]) - deq[i]) * (double(w[i]) - deq[i]);
    den += double(w[i]) * w[i];
  }
  return std::sqrt(num / den);
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
  for (DType t : kTypes) {
    auto f = lf::make_ggml_legacy_format(t);
    int total = 0;
    std::string report;
    const int matched = count_matching_tensors(*f, total, report);
    std::cout << "[ ref      ] " << f->name() << ": " << matched << "/" << total << " tensors byte-identical"
              << report << "\n";
    EXPECT_EQ(total, 16) << f->name();
    EXPECT_EQ(matched, total) << f->name() << report;
  }
}

// decode of llama-quantize's bytes == gguf-py / ggml dequantization (.f32 files), every float bit for bit.
TEST(GgmlLegacy, DecodeMatchesLlamaCppBitForBit) {
  if (!have_reference()) GTEST_SKIP() << "needs ../shared/reference/gguf (synth256-*.f32 from llama.cpp)";
  for (DType t : kTypes) {
    auto f = lf::make_ggml_legacy_format(t);
    const std::string tn = upper(f->name());
    auto g = lowbit::io::GgufFile::open(ref_path("synth256-" + tn + ".gguf"));
    for (const char* name : {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"}) {
      const auto* ten = find_tensor(*g, name);
      ASSERT_TRUE(ten) << name;
      ASSERT_EQ(ten->dtype, t);
      const std::vector<float> want = lowbit::test::read_f32(ref_path("synth256-" + tn + "." + name + ".f32"));
      const int64_t n = static_cast<int64_t>(ten->ne[0] * ten->ne[1]);
      ASSERT_EQ(want.size(), size_t(n)) << tn << " " << name;
      std::vector<float> got(static_cast<size_t>(n));
      lf::ggml_decode_row(t, g->tensor_data(*ten), n, got.data());
      int64_t diff = 0;
      for (int64_t i = 0; i < n; ++i) diff += bits_of(got[i]) != bits_of(want[i]);
      std::cout << "[ ref      ] " << f->name() << " " << name << ": " << (n - diff) << "/" << n
                << " floats bit-identical\n";
      EXPECT_EQ(diff, 0) << tn << " " << name;
    }
  }
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
      for (const auto* ws : {&w, &w2}) {
        std::vector<std::byte> enc(f->block_bytes()), enc2(f->block_bytes());
        std::vector<float> deq(32), deq2(32);
        f->encode(*ws, p, enc.data());
        f->decode(enc.data(), deq);
        for (int i = 0; i < 32; ++i)
          ASSERT_EQ(bits_of(deq[i]), bits_of(f->round((*ws)[i], p, i))) << f->name() << " trial " << trial;
        f->encode(deq, p, enc2.data());
        f->decode(enc2.data(), deq2);
        for (int i = 0; i < 32; ++i) ASSERT_EQ(bits_of(deq2[i]), bits_of(deq[i])) << f->name() << " idempotence";
      }
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

// With skewed importance the importance-weighted fit lowers the importance-weighted squared error: never worse than
// the plain fit under its own error weights (the plain fit is one of its candidates), and lower on average under
// the importance alone.
TEST(GgmlLegacy, ImportanceWeightedFitLowersWeightedError) {
  std::mt19937 rng(123);
  std::student_t_distribution<float> heavy(4.0f);
  std::normal_distribution<float> z(0.0f, 1.0f);
  for (DType t : kTypes) {
    auto f = lf::make_ggml_legacy_format(t);
    double tot_imp = 0, tot_plain = 0;
    for (int b = 0; b < 2000; ++b) {
      std::vector<float> w(32), imp(32), e(32);
      for (auto& v : w) v = 0.02f * heavy(rng);
      for (auto& v : imp) v = std::exp(2.0f * z(rng));  // log-normal: a few weights dominate
      double s2 = 0;
      for (float v : w) s2 += double(v) * v;
      for (int i = 0; i < 32; ++i) e[i] = float(imp[i] * std::sqrt(2.0 * s2 / 32 + double(w[i]) * w[i]));
      const lf::BlockParams pi = f->fit(w, imp), pp = f->fit(w, {});
      double ei = 0, ep = 0, oi = 0, op = 0;
      for (int i = 0; i < 32; ++i) {
        const double di = w[i] - f->round(w[i], pi, i), dp = w[i] - f->round(w[i], pp, i);
        ei += imp[i] * di * di, ep += imp[i] * dp * dp;
        oi += e[i] * di * di, op += e[i] * dp * dp;
      }
      ASSERT_LE(oi, op * (1 + 1e-9)) << f->name() << " block " << b;
      tot_imp += ei, tot_plain += ep;
    }
    std::cout << "[ imp      ] " << f->name() << ": importance-weighted error " << tot_imp / tot_plain
              << " x the plain fit's\n";
    EXPECT_LT(tot_imp, 0.97 * tot_plain) << f->name();
  }
  // All-zero importance falls back to the plain fit.
  auto f = lf::make_ggml_legacy_format(DType::Q4_1);
  std::vector<float> w = gaussian(32, 4), zero(32, 0.0f);
  const lf::BlockParams a = f->fit(w, zero), b = f->fit(w, {});
  EXPECT_EQ(a.scale, b.scale);
  EXPECT_EQ(a.sub_mins, b.sub_mins);
}

namespace {
// Relative RMSE ||w - deq|| / ||w|| of the plain fit on 32768 N(0, 1) weights (mt19937 seed 42), measured:
//   q8_0 0.005371   q4_0 0.08603   q4_1 0.07792   q5_0 0.04295   q5_1 0.03805
constexpr double kBand[5] = {0.005371, 0.08603, 0.07792, 0.04295, 0.03805};
constexpr double kBandTolerance = 0.10;
}  // namespace

TEST(GgmlLegacy, GaussianDistortionInPinnedBands) {
  const std::vector<float> w = gaussian(32768, 42);
  for (int k = 0; k < 5; ++k) {
    auto f = lf::make_ggml_legacy_format(kTypes[k]);
    const double e = rel_rmse(*f, w);
    std::cout << "[ band     ] " << f->name() << " rel RMSE " << e << "\n";
    EXPECT_GE(e, kBand[k] * (1 - kBandTolerance)) << f->name();
    EXPECT_LE(e, kBand[k] * (1 + kBandTolerance)) << f->name();
  }
}

TEST(GgmlLegacy, ZeroAndOutlierBlocksStayFinite) {
  for (DType t : kTypes) {
    auto f = lf::make_ggml_legacy_format(t);
    std::vector<std::byte> enc(f->block_bytes());
    std::vector<float> out(32, 1.0f), imp(32, 1.0f);
    for (bool use_imp : {false, true}) {
      std::span<const float> is = use_imp ? std::span<const float>(imp) : std::span<const float>();
      std::vector<float> zero(32, 0.0f);
      f->encode(zero, f->fit(zero, is), enc.data());
      f->decode(enc.data(), out);
      for (float v : out) ASSERT_EQ(v, 0.0f) << f->name();
      for (float big : {100.0f, -3.0e4f, 1.0e6f, -3.0e38f}) {
        std::vector<float> w = gaussian(32, 9, 0.02f);
        w[7] = big;
        const lf::BlockParams p = f->fit(w, is);
        f->encode(w, p, enc.data());
        f->decode(enc.data(), out);
        for (int i = 0; i < 32; ++i) {
          ASSERT_TRUE(std::isfinite(out[i])) << f->name() << " outlier " << big << " i " << i;
          ASSERT_EQ(bits_of(out[i]), bits_of(f->round(w[i], p, i))) << f->name();
        }
        if (std::fabs(big) <= 3.0e4f) {  // within fp16 range the outlier itself is kept to a few per cent
          EXPECT_NEAR(out[7], big, 0.07 * std::fabs(big)) << f->name() << " outlier " << big;
        }
      }
    }
  }
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
