// Helpers shared by the format test suites: seeded random weights, float bits, relative RMSE of a row round trip,
// and the llama.cpp reference files under ../shared/reference/gguf (paths, tensor lookup, byte-exact comparison).
#pragma once
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "formats/format.h"
#include "formats/ggml.h"
#include "io/gguf.h"
#include "test_util.h"

namespace lowbit::formats::test {

// n draws of N(0, sigma^2) from mt19937(seed).
inline std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// ||w - deq|| / ||w|| over a row encoded with fit(w, {}).
inline double rel_rmse(const Format& f, const std::vector<float>& w) {
  std::vector<std::byte> enc(row_bytes(f, static_cast<int64_t>(w.size())));
  encode_row(f, w, {}, enc.data());
  std::vector<float> deq(w.size());
  decode_row(f, enc.data(), deq);
  double num = 0, den = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    num += (double(w[i]) - deq[i]) * (double(w[i]) - deq[i]);
    den += double(w[i]) * w[i];
  }
  return std::sqrt(num / den);
}

// The plain fit's relative RMSE on w lies within pin * (1 -+ tolerance) (printed as a "[ band ]" line).
inline void expect_rel_rmse_in_band(const Format& f, const std::vector<float>& w, double pin, double tolerance) {
  const double e = rel_rmse(f, w);
  std::cout << "[ band     ] " << f.name() << " rel RMSE " << e << "\n";
  EXPECT_GE(e, pin * (1 - tolerance)) << f.name();
  EXPECT_LE(e, pin * (1 + tolerance)) << f.name();
}

// GPTQ's contract for one block of weights w (the fit may not have seen them) under p: decode(encode(w, p))[i]
// equals round(w[i], p, i) bit for bit, and (idempotent) encoding the decoded values again reproduces them.
// Fatal failures return from here: call it through ASSERT_NO_FATAL_FAILURE.
inline void check_round_is_decode_of_encode(const Format& f, const std::vector<float>& w, const BlockParams& p,
                                            int trial, bool idempotent = true) {
  const int g = f.block();
  std::vector<std::byte> enc(f.block_bytes()), enc2(f.block_bytes());
  std::vector<float> deq(static_cast<size_t>(g)), deq2(static_cast<size_t>(g));
  f.encode(w, p, enc.data());
  f.decode(enc.data(), deq);
  for (int i = 0; i < g; ++i)
    ASSERT_EQ(bits_of(deq[i]), bits_of(f.round(w[i], p, i))) << f.name() << " trial " << trial;
  if (!idempotent) return;
  f.encode(deq, p, enc2.data());
  f.decode(enc2.data(), deq2);
  for (int i = 0; i < g; ++i) ASSERT_EQ(bits_of(deq2[i]), bits_of(deq[i])) << f.name() << " idempotence";
}

// An all-zero block decodes to zeros, and a block with one huge outlier (100 .. -3e38) decodes to finite values
// equal to round() bit for bit, the outlier itself kept to 7% within fp16 range; with and without importance.
// Fatal failures return from here: call it through ASSERT_NO_FATAL_FAILURE.
inline void check_zero_and_outlier_blocks(const Format& f) {
  const int g = f.block();
  std::vector<std::byte> enc(f.block_bytes());
  std::vector<float> out(size_t(g), 1.0f), imp(size_t(g), 1.0f);
  for (bool use_imp : {false, true}) {
    std::span<const float> is = use_imp ? std::span<const float>(imp) : std::span<const float>();
    std::vector<float> zero(size_t(g), 0.0f);
    f.encode(zero, f.fit(zero, is), enc.data());
    f.decode(enc.data(), out);
    for (float v : out) ASSERT_EQ(v, 0.0f) << f.name();
    for (float big : {100.0f, -3.0e4f, 1.0e6f, -3.0e38f}) {
      std::vector<float> w = gaussian(size_t(g), 9, 0.02f);
      w[7] = big;
      const BlockParams p = f.fit(w, is);
      f.encode(w, p, enc.data());
      f.decode(enc.data(), out);
      for (int i = 0; i < g; ++i) {
        ASSERT_TRUE(std::isfinite(out[i])) << f.name() << " outlier " << big << " i " << i;
        ASSERT_EQ(bits_of(out[i]), bits_of(f.round(w[i], p, i))) << f.name();
      }
      if (std::fabs(big) <= 3.0e4f) {  // within fp16 range the outlier itself is kept to a few per cent
        EXPECT_NEAR(out[7], big, 0.07 * std::fabs(big)) << f.name() << " outlier " << big;
      }
    }
  }
}

// The llama.cpp reference files (llama-quantize --pure on synth256, and ggml's dequantization as .f32 dumps).
inline const std::string kRefDir = "reference/gguf";
inline bool have_reference(const std::string& file = "synth256-F32.gguf") {
  return lowbit::test::have_shared(kRefDir + "/" + file);
}
inline std::string ref_path(const std::string& file) { return lowbit::test::shared(kRefDir + "/" + file); }

inline const io::GgufTensor* find_tensor(const io::GgufFile& g, const std::string& name) {
  for (const auto& t : g.tensors())
    if (t.name == name) return &t;
  return nullptr;
}

// Quantizes every matrix of synth256-F32.gguf with fit(w, {}) + encode, row by row, and compares with the same
// tensor in synth256-<TYPE>.gguf. Returns the number of byte-identical tensors; `total` gets the matrix count.
inline int count_matching_tensors(const GgmlFormat& f, int& total, std::string& report) {
  auto src = io::GgufFile::open(ref_path("synth256-F32.gguf"));
  auto ref = io::GgufFile::open(ref_path("synth256-" + upper(f.name()) + ".gguf"));
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
    const size_t rb = row_bytes(f, n0);
    if (r->nbytes != rb * rows) {
      report += " " + t.name + "(size)";
      continue;
    }
    const float* w = reinterpret_cast<const float*>(src->tensor_data(t));
    std::vector<std::byte> out(rb);
    int64_t bad_blocks = 0;
    for (int64_t row = 0; row < rows; ++row) {
      encode_row(f, std::span<const float>(w + row * n0, static_cast<size_t>(n0)), {}, out.data());
      const std::byte* want = ref->tensor_data(*r) + row * rb;
      for (size_t b = 0; b < rb; b += f.block_bytes())
        if (std::memcmp(out.data() + b, want + b, f.block_bytes()) != 0) ++bad_blocks;
    }
    if (bad_blocks == 0)
      ++matched;
    else
      report += " " + t.name + "(" + std::to_string(bad_blocks) + " blocks differ)";
  }
  return matched;
}

// fit(w, {}) + encode reproduces llama-quantize --pure for all 16 matrices of synth256 (needs have_reference()).
inline void expect_matches_llama_quantize(const GgmlFormat& f) {
  int total = 0;
  std::string report;
  const int matched = count_matching_tensors(f, total, report);
  std::cout << "[ ref      ] " << f.name() << ": " << matched << "/" << total << " tensors byte-identical" << report
            << "\n";
  EXPECT_EQ(total, 16) << f.name();
  EXPECT_EQ(matched, total) << f.name() << report;
}

// ggml_decode_row of llama-quantize's bytes equals ggml's dequantization (.f32 dumps) bit for bit, for two
// matrices (needs have_reference()). Fatal failures return from here: call it through ASSERT_NO_FATAL_FAILURE.
inline void expect_decode_matches_llama_cpp(const GgmlFormat& f) {
  const DType t = f.dtype();
  const std::string tn = upper(f.name());
  auto g = io::GgufFile::open(ref_path("synth256-" + tn + ".gguf"));
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.ffn_down.weight"}) {
    const auto* ten = find_tensor(*g, name);
    ASSERT_TRUE(ten) << name;
    ASSERT_EQ(ten->dtype, t);
    const std::vector<float> want = lowbit::test::read_f32(ref_path("synth256-" + tn + "." + name + ".f32"));
    const int64_t n = static_cast<int64_t>(ten->ne[0] * ten->ne[1]);
    ASSERT_EQ(want.size(), size_t(n)) << tn << " " << name;
    std::vector<float> got(static_cast<size_t>(n));
    ggml_decode_row(t, g->tensor_data(*ten), n, got.data());
    int64_t diff = 0;
    for (int64_t i = 0; i < n; ++i) diff += bits_of(got[i]) != bits_of(want[i]);
    std::cout << "[ ref      ] " << f.name() << " " << name << ": " << (n - diff) << "/" << n
              << " floats bit-identical\n";
    EXPECT_EQ(diff, 0) << tn << " " << name;
  }
}

}  // namespace lowbit::formats::test
