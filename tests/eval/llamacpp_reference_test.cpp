// llama.cpp-quantized models (../shared/reference/gguf: synth256 quantized by llama-quantize itself) load, run on
// lowbit's native kernels and give llama-perplexity's figures within 0.1% (same text, ctx 128, 20 chunks).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "lowbit/model.h"
#include "lowbit/perplexity.h"
#include "lowbit/tokenizer.h"
#include "test_util.h"

namespace lowbit {
namespace {

const char* kText = "data/wikitext-2-raw/wiki.test.raw";

struct RefCase {
  const char* type;
  double ppl;  // llama-perplexity -c 128 -b 128 --chunks 20 (README.md beside the files, LF text)
};

const RefCase kCases[] = {
    {"F32", 692.4317},    {"Q8_0", 694.4374},   {"Q4_0", 679.5415},   {"Q4_1", 722.4617},   {"Q5_0", 689.0468},
    {"Q5_1", 681.4461},   {"Q2_K", 720.4206},   {"Q3_K_S", 688.7149}, {"Q3_K_M", 688.7149}, {"Q4_K_S", 732.6436},
    {"Q4_K_M", 732.6436}, {"Q5_K_M", 683.7589}, {"Q6_K", 693.5468},   {"IQ4_NL", 697.0662}, {"IQ4_XS", 700.6850},
};

std::string model_path(const char* type) { return std::string("reference/gguf/synth256-") + type + ".gguf"; }

// The text tokenized once (every file carries the same tokenizer).
const std::vector<int32_t>& text_tokens(const Tokenizer& tok) {
  static const std::vector<int32_t> tokens = tok.encode(test::read_file(test::shared(kText)), tok.add_bos());
  return tokens;
}

double ppl_of(const std::string& rel, int batch) {
  auto file = load_model(test::shared(rel));
  auto tok = make_tokenizer(file->tokenizer);
  Model model(file, 128);
  PerplexityOptions o;
  o.ctx = 128;
  o.chunks = 20;
  o.batch = batch;
  PerplexityResult r = perplexity_tokens(model, text_tokens(*tok), tok->bos(), o);
  EXPECT_EQ(r.scored, 20 * 63);
  return r.ppl;
}

class LlamaCppReference : public ::testing::TestWithParam<RefCase> {};

TEST_P(LlamaCppReference, PerplexityWithinPointOnePercent) {
  const RefCase& c = GetParam();
  LOWBIT_REQUIRE_SHARED(model_path(c.type));
  LOWBIT_REQUIRE_SHARED(kText);
  const double ppl = ppl_of(model_path(c.type), 0);
  std::printf("synth256-%s: lowbit %.4f, llama.cpp %.4f (%+.4f%%)\n", c.type, ppl, c.ppl, 100.0 * (ppl / c.ppl - 1));
  EXPECT_NEAR(ppl, c.ppl, c.ppl * 0.001) << c.type;
}

INSTANTIATE_TEST_SUITE_P(Synth256, LlamaCppReference, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<RefCase>& i) { return std::string(i.param.type); });

// The decode path (one token per call) computes the same integer products as the batched one.
TEST(LlamaCppReferenceDecode, DecodePathMatchesBatched) {
  for (const char* type : {"Q4_K_M", "Q4_0", "IQ4_XS"}) {
    LOWBIT_REQUIRE_SHARED(model_path(type));
    LOWBIT_REQUIRE_SHARED(kText);
    auto file = load_model(test::shared(model_path(type)));
    auto tok = make_tokenizer(file->tokenizer);
    Model model(file, 128);
    PerplexityOptions o;
    o.ctx = 128;
    o.chunks = 2;
    const double batched = perplexity_tokens(model, text_tokens(*tok), tok->bos(), o).ppl;
    o.batch = 1;
    const double decode = perplexity_tokens(model, text_tokens(*tok), tok->bos(), o).ppl;
    EXPECT_NEAR(decode, batched, batched * 1e-4) << type;
  }
}

}  // namespace
}  // namespace lowbit
