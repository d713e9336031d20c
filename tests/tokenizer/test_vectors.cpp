// llama.cpp's tokenizer test vectors (test-tokenizer-0: no BOS, no special-token parsing), exact.
#include <gtest/gtest.h>

#include "tok_test_util.h"
#include "tokenizer/llama2c_vocab.h"

using namespace tok_test;

namespace {

void check_vectors(const lowbit::Tokenizer& tok, const std::string& base, bool check_decode) {
  auto vectors = load_vectors(base);
  ASSERT_EQ(vectors.size(), 46u);
  int failures = 0;
  for (const auto& v : vectors) {
    auto ids = tok.encode(v.text, /*add_bos=*/false);
    EXPECT_EQ(ids_str(ids), ids_str(v.ids)) << "text: \"" << v.text << "\"";
    if (ids != v.ids) ++failures;
    if (check_decode) EXPECT_EQ(tok.decode(ids), v.text);
  }
  EXPECT_EQ(failures, 0);
}

}  // namespace

TEST(TokenizerVectors, LlamaSpmExact) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-llama-spm.gguf");
  EXPECT_EQ(tok->n_vocab(), 32000);
  EXPECT_EQ(tok->bos(), 1);
  EXPECT_EQ(tok->eos(), 2);
  check_vectors(*tok, "tokenizers/ggml-vocab-llama-spm.gguf", true);
}

TEST(TokenizerVectors, Gpt2Exact) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-gpt-2.gguf");
  EXPECT_EQ(tok->n_vocab(), 50257);
  check_vectors(*tok, "tokenizers/ggml-vocab-gpt-2.gguf", true);
}

TEST(TokenizerVectors, Llama2cBinMatchesSpmGguf) {
  REQUIRE_SHARED("tokenizers/llama2c_tokenizer.bin");
  auto spec = lowbit::tokenizer_spec_from_llama2c(shared("tokenizers/llama2c_tokenizer.bin"));
  ASSERT_EQ(spec.tokens.size(), 32000u);
  EXPECT_EQ(spec.bos, 1);
  EXPECT_EQ(spec.eos, 2);
  EXPECT_EQ(spec.unk, 0);
  EXPECT_EQ(spec.tokens[1], "<s>");
  EXPECT_EQ(spec.types[0], 2);
  EXPECT_EQ(spec.types[1], 3);
  EXPECT_EQ(spec.types[3], 6);
  EXPECT_EQ(spec.types[258], 6);
  EXPECT_EQ(spec.types[259], 1);
  EXPECT_EQ(spec.tokens[259], "\xE2\x96\x81\xE2\x96\x81");  // "  " stored with spaces
  auto tok = lowbit::make_tokenizer(spec);
  check_vectors(*tok, "tokenizers/ggml-vocab-llama-spm.gguf", true);
  // The spec agrees with the GGUF vocabulary token for token.
  REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  auto f = lowbit::io::GgufFile::open(shared("tokenizers/ggml-vocab-llama-spm.gguf"));
  auto g = lowbit::io::tokenizer_spec_from_gguf(*f);
  EXPECT_EQ(spec.tokens, g.tokens);
  EXPECT_EQ(spec.scores, g.scores);
  EXPECT_EQ(spec.types, g.types);
}
