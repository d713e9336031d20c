// llama.cpp importance matrices (io/imatrix.h): the two files llama-imatrix wrote for synth256
// (../shared/reference/imatrix), normalised as llama-quantize normalises them; crafted files for every error
// (each one lowbit::Error line naming the file and the entry / field), truncation at every byte never crashing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "imatrix_compare.h"
#include "io/imatrix.h"
#include "io_testing.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::Bytes;
using testing::error_of;

const char* kLegacy = "reference/imatrix/synth256.imatrix";
const char* kGguf = "reference/imatrix/synth256.imatrix.gguf";

// The 7 linears of each of synth256's 2 blocks (output.weight has no entry: llama-imatrix of that time skipped it).
std::vector<std::string> synth256_linears() {
  std::vector<std::string> r;
  for (int l = 0; l < 2; ++l)
    for (const char* n : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})
      r.push_back("blk." + std::to_string(l) + "." + n + ".weight");
  return r;
}

TEST(Imatrix, LegacyReferenceFileAsLlamaQuantizeNormalisesIt) {
  LOWBIT_NEED_SHARED(kLegacy);
  const std::string path = test::shared(kLegacy);
  const io::Imatrix im = io::load_imatrix(path);
  EXPECT_EQ(im.format, "legacy");
  ASSERT_EQ(im.entries.size(), 14u);
  for (const auto& name : synth256_linears()) {
    ASSERT_TRUE(im.entries.count(name)) << name;
    EXPECT_EQ(im.entries.at(name).size(), name.find("ffn_down") != std::string::npos ? 768u : 256u) << name;
  }
  EXPECT_EQ(im.chunk_count, 64);
  ASSERT_EQ(im.datasets.size(), 1u);
  EXPECT_NE(im.datasets[0].find("wikitext-2/valid.txt"), std::string::npos) << im.datasets[0];
  // Independently of the reader: the file's first entry, at the offsets the format puts it, divided by its ncall
  // (a float divided by the call count converted to float, as llama-quantize does).
  const std::vector<uint8_t> raw = testing::read_file(path);
  int32_t len, ncall, nval;
  std::memcpy(&len, raw.data() + 4, 4);
  const std::string name(reinterpret_cast<const char*>(raw.data() + 8), static_cast<size_t>(len));
  std::memcpy(&ncall, raw.data() + 8 + len, 4);
  std::memcpy(&nval, raw.data() + 12 + len, 4);
  EXPECT_EQ(ncall, 64);
  const std::vector<float>& e = im.entries.at(name);
  ASSERT_EQ(static_cast<size_t>(nval), e.size());
  for (int32_t j = 0; j < nval; ++j) {
    float v;
    std::memcpy(&v, raw.data() + 16 + len + 4 * j, 4);
    ASSERT_EQ(e[j], v / static_cast<float>(ncall)) << name << " [" << j << "]";
  }
  // Mean squares of the inputs: positive, and the same for q/k/v (one input).
  for (const auto& [n, v] : im.entries)
    for (float x : v) ASSERT_GT(x, 0.0f) << n;
  EXPECT_EQ(im.entries.at("blk.0.attn_q.weight"), im.entries.at("blk.0.attn_v.weight"));
}

TEST(Imatrix, GgufReferenceFileAsLlamaQuantizeNormalisesIt) {
  LOWBIT_NEED_SHARED(kGguf);
  const std::string path = test::shared(kGguf);
  const io::Imatrix im = io::load_imatrix(path);
  EXPECT_EQ(im.format, "gguf");
  ASSERT_EQ(im.entries.size(), 14u);
  EXPECT_EQ(im.chunk_count, 64);
  EXPECT_EQ(im.chunk_size, 128);
  ASSERT_EQ(im.datasets.size(), 1u);
  // in_sum2 / counts, read here through the GGUF parser only (not the imatrix reader).
  auto g = io::GgufFile::open(path);
  int checked = 0;
  for (const auto& t : g->tensors()) {
    const std::string suffix = ".in_sum2";
    if (t.name.size() <= suffix.size() || t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    const std::string name = t.name.substr(0, t.name.size() - suffix.size());
    const io::GgufTensor* counts = nullptr;
    for (const auto& c : g->tensors())
      if (c.name == name + ".counts") counts = &c;
    ASSERT_NE(counts, nullptr) << name;
    float count;
    std::memcpy(&count, g->tensor_data(*counts), 4);
    EXPECT_EQ(count, 64.0f * 128.0f) << name;  // every token of 64 chunks of 128
    const std::vector<float>& e = im.entries.at(name);
    ASSERT_EQ(e.size(), t.ne[0]) << name;
    for (size_t j = 0; j < e.size(); ++j) {
      float s;
      std::memcpy(&s, g->tensor_data(t) + 4 * j, 4);
      ASSERT_EQ(e[j], s / count) << name << " [" << j << "]";
    }
    ++checked;
  }
  EXPECT_EQ(checked, 14);
}

// The two files came from two llama.cpp versions on the same text: their statistics agree to a few 1e-4
// (../shared/reference/imatrix/README.md), so each reader's normalisation lands on the other's values.
TEST(Imatrix, LegacyAndGgufFilesAgree) {
  LOWBIT_NEED_SHARED(kLegacy);
  LOWBIT_NEED_SHARED(kGguf);
  const io::Imatrix a = io::load_imatrix(test::shared(kLegacy)), b = io::load_imatrix(test::shared(kGguf));
  std::string problem;
  const double worst = test::imatrix_worst_relative(a, b, &problem);
  ASSERT_TRUE(problem.empty()) << problem;
  std::cout << "[ imatrix  ] largest relative difference legacy vs GGUF: " << worst << "\n";
  EXPECT_LT(worst, 1e-2);
}

class ImatrixErrors : public testing::TempDirTest {
 protected:
  std::string put(const Bytes& b, const std::string& name = "m.imatrix") {
    const std::string p = path(name);
    testing::write_file(p, b.b);
    return p;
  }
  std::string error(const Bytes& b) {
    const std::string p = put(b);
    return error_of([&] { io::load_imatrix(p); });
  }
  // A legacy file: entries (name, ncall, values), then optionally the chunk count and dataset name.
  static Bytes legacy(const std::vector<std::tuple<std::string, int32_t, std::vector<float>>>& entries,
                      bool trailer = true) {
    Bytes b;
    b.i32(static_cast<int32_t>(entries.size()));
    for (const auto& [name, ncall, v] : entries) {
      b.i32(static_cast<int32_t>(name.size())).raw(name).i32(ncall).i32(static_cast<int32_t>(v.size()));
      for (float x : v) b.f32(x);
    }
    if (trailer) b.i32(10).i32(8).raw("data.txt");
    return b;
  }
  // A GGUF imatrix written by lowbit's own GGUF writer: (name, in_sum2 values, counts).
  std::string gguf(const std::vector<std::tuple<std::string, std::vector<float>, std::vector<float>>>& entries,
                   bool metadata = true, bool only_sums = false, bool only_counts = false,
                   DType sums_type = DType::F32) {
    io::GgufWriter w;
    w.set_string("general.type", "imatrix");
    if (metadata) {
      w.set_strings("imatrix.datasets", {"data.txt"});
      w.set_u32("imatrix.chunk_count", 10);
      w.set_u32("imatrix.chunk_size", 512);
    }
    for (const auto& [name, sums, counts] : entries) {
      auto bytes = [](const std::vector<float>& v) {
        std::vector<std::byte> b(v.size() * 4);
        std::memcpy(b.data(), v.data(), b.size());
        return b;
      };
      if (!only_counts) {
        if (sums_type == DType::F32) {
          w.add_tensor(name + ".in_sum2", DType::F32, {static_cast<int64_t>(sums.size())}, bytes(sums));
        } else {  // f16 with the same element count
          w.add_tensor(name + ".in_sum2", DType::F16, {static_cast<int64_t>(sums.size())},
                       std::vector<std::byte>(sums.size() * 2));
        }
      }
      if (!only_sums) w.add_tensor(name + ".counts", DType::F32, {static_cast<int64_t>(counts.size())}, bytes(counts));
    }
    const std::string p = path("m.gguf");
    w.write(p);
    return p;
  }
  std::string gguf_error(const std::string& p) {
    return error_of([&] { io::load_imatrix(p); });
  }
};

TEST_F(ImatrixErrors, CraftedLegacyFileReadsAndNormalises) {
  const std::string p = put(legacy({{"a.weight", 4, {4, 8, 0, 2}}, {"b.weight", 0, {3, 5}}}));
  const io::Imatrix im = io::load_imatrix(p);
  EXPECT_EQ(im.entries.at("a.weight"), (std::vector<float>{1, 2, 0, 0.5f}));
  EXPECT_EQ(im.entries.at("b.weight"), (std::vector<float>{3, 5}));  // ncall 0: as stored (llama-quantize)
  EXPECT_EQ(im.chunk_count, 10);
  EXPECT_EQ(im.datasets, std::vector<std::string>{"data.txt"});
  // The chunk count and dataset name are optional.
  const io::Imatrix bare = io::load_imatrix(put(legacy({{"a.weight", 1, {1}}}, false)));
  EXPECT_EQ(bare.chunk_count, 0);
  EXPECT_TRUE(bare.datasets.empty());
}

TEST_F(ImatrixErrors, TruncatedLegacyFileAtEveryByteNamesTheField) {
  const Bytes full = legacy({{"blk.0.attn_q.weight", 2, {1, 2, 3}}, {"blk.0.ffn_down.weight", 2, {4, 5}}});
  for (size_t n = 0; n < full.size(); ++n) {
    if (n == full.size() - 16) continue;  // the entries alone (no trailer) are a whole file
    Bytes cut;
    cut.b.assign(full.b.begin(), full.b.begin() + static_cast<long>(n));
    const std::string p = put(cut);
    const std::string m = error_of([&] { io::load_imatrix(p); });
    EXPECT_NE(m.find(p), std::string::npos) << n << ": " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
  // Which entry and field: cut inside the second entry's values, inside the first name, in the dataset name.
  Bytes cut;
  cut.b.assign(full.b.begin(), full.b.begin() + static_cast<long>(full.size() - 16 - 4));
  std::string m = error(cut);
  EXPECT_NE(m.find("entry 'blk.0.ffn_down.weight'"), std::string::npos) << m;
  cut.b.assign(full.b.begin(), full.b.begin() + 12);
  m = error(cut);
  EXPECT_NE(m.find("entry #0 name"), std::string::npos) << m;
  cut.b.assign(full.b.begin(), full.b.end() - 3);
  m = error(cut);
  EXPECT_NE(m.find("dataset name"), std::string::npos) << m;
}

TEST_F(ImatrixErrors, AbsurdSizesAndValues) {
  auto m = error(legacy({}, false));
  EXPECT_ERROR_NAMES(m, "m.imatrix", "n_entries");
  Bytes b;
  b.i32(1000000).i32(1);  // far more entries than the file holds: the first missing one is named
  EXPECT_ERROR_NAMES(error(b), "m.imatrix", "entry #0 name");
  // nval far beyond the file.
  b = Bytes();
  b.i32(1).i32(1).raw("a").i32(1).i32(1 << 30).f32(1).f32(1).f32(1).f32(1);
  m = error(b);
  EXPECT_ERROR_NAMES(m, "m.imatrix", "entry 'a' nval");
  EXPECT_NE(m.find("1073741824"), std::string::npos) << m;
  // name length negative / beyond the file.
  b = Bytes();
  b.i32(1).i32(-5).raw("abcdefghijklmnopqrstuvwxyz");
  EXPECT_ERROR_NAMES(error(b), "m.imatrix", "entry #0 name length");
  b = Bytes();
  b.i32(1).i32(1 << 20).raw("abcdefghijklmnopqrstuvwxyz");
  EXPECT_ERROR_NAMES(error(b), "m.imatrix", "entry #0 name length");
  // Non-finite and negative values, a negative call count, duplicates, trailing bytes.
  m = error(legacy({{"a", 1, {1, std::numeric_limits<float>::quiet_NaN()}}}));
  EXPECT_ERROR_NAMES(m, "m.imatrix", "entry 'a' value [1]");
  EXPECT_NE(m.find("non-finite"), std::string::npos) << m;
  m = error(legacy({{"a", 1, {std::numeric_limits<float>::infinity()}}}));
  EXPECT_NE(m.find("non-finite"), std::string::npos) << m;
  m = error(legacy({{"a", 1, {1, 2, -0.5f}}}));
  EXPECT_ERROR_NAMES(m, "m.imatrix", "entry 'a' value [2]");
  EXPECT_NE(m.find("negative"), std::string::npos) << m;
  EXPECT_ERROR_NAMES(error(legacy({{"a", -3, {1}}})), "m.imatrix", "entry 'a' ncall");
  EXPECT_ERROR_NAMES(error(legacy({{"a", 1, {1}}, {"a", 1, {2}}})), "m.imatrix", "duplicate");
  b = legacy({{"a", 1, {1}}});
  b.raw("junk");
  EXPECT_ERROR_NAMES(error(b), "m.imatrix", "end of file");
  b = legacy({{"a", 1, {1}}}, false);
  b.i32(3).i32(100).raw("short");
  EXPECT_ERROR_NAMES(error(b), "m.imatrix", "dataset name length");
  // A missing file.
  m = error_of([&] { io::load_imatrix(path("none.imatrix")); });
  EXPECT_NE(m.find("none.imatrix"), std::string::npos) << m;
}

TEST_F(ImatrixErrors, CraftedGgufReadsAndNormalisesPerExpert) {
  // Two experts of width 3: the first seen 4 times, the second never (llama-quantize: importance 1).
  const io::Imatrix im = io::load_imatrix(gguf({{"blk.0.ffn_up.weight", {4, 8, 12, 5, 6, 7}, {4, 0}}}));
  EXPECT_EQ(im.format, "gguf");
  EXPECT_EQ(im.entries.at("blk.0.ffn_up.weight"), (std::vector<float>{1, 2, 3, 1, 1, 1}));
  EXPECT_EQ(im.chunk_count, 10);
  EXPECT_EQ(im.chunk_size, 512);
  EXPECT_EQ(im.datasets, std::vector<std::string>{"data.txt"});
}

TEST_F(ImatrixErrors, GgufErrors) {
  std::string m = gguf_error(gguf({{"a.weight", {1, 2}, {1}}}, true, /*only_sums=*/true));
  EXPECT_ERROR_NAMES(m, "m.gguf", "a.weight.in_sum2");
  EXPECT_NE(m.find("a.weight.counts"), std::string::npos) << m;
  m = gguf_error(gguf({{"a.weight", {1, 2}, {1}}}, true, false, /*only_counts=*/true));
  EXPECT_ERROR_NAMES(m, "m.gguf", "a.weight.counts");
  m = gguf_error(gguf({{"a.weight", {1, 2, 3}, {1, 1}}}));
  EXPECT_ERROR_NAMES(m, "m.gguf", "a.weight.in_sum2");
  EXPECT_NE(m.find("do not divide"), std::string::npos) << m;
  m = gguf_error(gguf({{"a.weight", {1, 2}, {1}}}, /*metadata=*/false));
  EXPECT_ERROR_NAMES(m, "m.gguf", "imatrix.datasets");
  m = gguf_error(gguf({{"a.weight", {1, -2}, {1}}}));
  EXPECT_ERROR_NAMES(m, "m.gguf", "a.weight.in_sum2' [1]");
  m = gguf_error(gguf({{"a.weight", {1, 2}, {-1}}}));
  EXPECT_ERROR_NAMES(m, "m.gguf", "a.weight.counts' [0]");
  m = gguf_error(gguf({{"a.weight", {1, std::numeric_limits<float>::quiet_NaN()}, {1}}}));
  EXPECT_NE(m.find("non-finite"), std::string::npos) << m;
  m = gguf_error(gguf({{"a.weight", {1, 2}, {1}}}, true, false, false, DType::F16));
  EXPECT_ERROR_NAMES(m, "m.gguf", "a.weight.in_sum2");
  EXPECT_NE(m.find("expected f32"), std::string::npos) << m;
  m = gguf_error(gguf({}));
  EXPECT_ERROR_NAMES(m, "m.gguf", "tensors");
}

}  // namespace
}  // namespace lowbit
