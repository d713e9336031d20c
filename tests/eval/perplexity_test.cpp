// Perplexity against llama.cpp's figures (../shared/reference/perplexity.md): same tokenization, ctx and chunks.
#include <gtest/gtest.h>

#include <cstdio>

#include <cmath>

#include <filesystem>
#include <unistd.h>

#include "lowbit/perplexity.h"
#include "quant/quantize_model.h"
#include "lowbit/tokenizer.h"
#include "test_util.h"

namespace lowbit {
namespace {

struct PplCase {
  const char* model;
  const char* text;
  double ppl, stderr_;
};

void check_ppl(const PplCase& c) {
  LOWBIT_REQUIRE_SHARED(c.model);
  LOWBIT_REQUIRE_SHARED(c.text);
  auto file = load_model(test::shared(c.model));
  auto tok = make_tokenizer(file->tokenizer);
  Model model(file, 512);
  PerplexityOptions o;
  o.ctx = 512;
  o.chunks = 50;
  PerplexityResult r = perplexity(model, *tok, test::read_file(test::shared(c.text)), o);
  EXPECT_EQ(r.chunks, 50);
  EXPECT_EQ(r.scored, 50 * 255);
  EXPECT_NEAR(r.ppl, c.ppl, c.ppl * 0.002) << c.model;
  EXPECT_NEAR(r.ppl_stderr, c.stderr_, c.stderr_ * 0.01) << c.model;
  EXPECT_EQ(r.running.size(), 50u);
  EXPECT_DOUBLE_EQ(r.running.back(), r.ppl);
}

TEST(PerplexityReference, Stories260KGguf) {
  check_ppl({"models/stories260K/stories260K.gguf", "data/wikitext-2-raw/wiki.test.raw", 125.9583, 4.24376});
}

TEST(PerplexityReference, TinyStories656KGguf) {
  check_ppl({"models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf", "data/wikitext-2-raw/wiki.test.raw.656K-charset",
             466.8581, 13.55465});
}

TEST(Perplexity, TokenNllIsLogSoftmax) {
  const float logits[4] = {1.0f, 2.0f, -3.0f, 0.5f};
  double z = std::exp(1.0) + std::exp(2.0) + std::exp(-3.0) + std::exp(0.5);
  EXPECT_NEAR(token_nll(logits, 4, 1), -std::log(std::exp(2.0) / z), 1e-12);
  EXPECT_NEAR(token_nll(logits, 4, 2), -std::log(std::exp(-3.0) / z), 1e-12);
}

}  // namespace

namespace {
// Packed models: perplexity through the decode path (one token per forward call) equals the batched path within
// 0.1%. int3 / int2: the GEMV on the packed bytes (11- / 13-bit activations) against panels decoded to f32 + SGEMM
// (dequantize-then-fp32); int4 / int8 where the CPU repacks them (AVX-512 VNNI): the repacked GEMV against the int8
// GEMM, both on Q8_0-rule activations, else as int3.
TEST(PerplexityPacked, DecodePathEqualsDequantizedPath) {
  struct Case {
    const char* model;
    const char* text;
  };
  int ran = 0;
  for (const Case& c : {Case{"models/stories260K/stories260K.gguf", "data/wikitext-2-raw/wiki.test.raw"},
                        Case{"models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf",
                             "data/wikitext-2-raw/wiki.test.raw.656K-charset"}}) {
    if (!test::have_shared(c.model) || !test::have_shared(c.text)) continue;
    ++ran;
    auto tok = make_tokenizer(load_model(test::shared(c.model))->tokenizer);
    const auto tokens = tok->encode(test::read_file(test::shared(c.text)).substr(0, 60000), true);
    for (const char* format : {"int4g128a", "int3g32a", "int8g64s", "int2g64a"}) {
      const std::string out = (std::filesystem::temp_directory_path() /
                               ("lowbit_ppl_" + std::to_string(::getpid()) + "_" + format + ".gguf")).string();
      quant::QuantizeModelOptions qo;
      qo.format = format;
      quant::quantize_model(test::shared(c.model), out, qo);
      Model m(load_model(out), 256);
      PerplexityOptions o;
      o.ctx = 256;
      o.chunks = 4;
      const double batched = perplexity_tokens(m, tokens, tok->bos(), o).ppl;
      o.batch = 1;
      const double decode = perplexity_tokens(m, tokens, tok->bos(), o).ppl;
      EXPECT_NEAR(decode / batched, 1.0, 1e-3) << c.model << " " << format << ": " << decode << " vs " << batched;
      std::printf("%s %s: decode-path PPL %.4f, batched %.4f, ratio %.6f\n", c.model, format, decode, batched,
                  decode / batched);
      std::filesystem::remove(out);
    }
  }
  if (ran == 0) GTEST_SKIP() << "../shared fixture models not found";
}
}  // namespace

}  // namespace lowbit
