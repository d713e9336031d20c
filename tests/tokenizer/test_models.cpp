// Token ids of the real models' tokenizers against llama.cpp's (shared/reference/perplexity.md).
#include <gtest/gtest.h>

#include "tok_test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/llama2c_vocab.h"

using namespace tok_test;

namespace {
const char* kSentence = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
const std::vector<int32_t> kStories260K = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395,
                                           317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 426};
const std::vector<int32_t> kTinyStories656KGguf = {1, 80, 147, 201, 282, 215, 286, 598, 1662, 887, 610, 57, 10};
}  // namespace

TEST(TokenizerModels, Stories260KGguf) {
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  auto tok = gguf_tokenizer("models/stories260K/stories260K.gguf");
  EXPECT_TRUE(tok->add_bos());
  auto ids = tok->encode(kSentence, true);
  EXPECT_EQ(ids_str(ids), ids_str(kStories260K));
  EXPECT_EQ(tok->decode(ids), kSentence);
}

TEST(TokenizerModels, Stories260KTok512BinMatchesGguf) {
  REQUIRE_SHARED("models/stories260K/tok512.bin");
  auto spec = lowbit::tokenizer_spec_from_llama2c(shared("models/stories260K/tok512.bin"), 512);
  ASSERT_EQ(spec.tokens.size(), 512u);
  auto tok = lowbit::make_tokenizer(spec);
  auto ids = tok->encode(kSentence, true);
  EXPECT_EQ(ids_str(ids), ids_str(kStories260K));
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  auto g = gguf_tokenizer("models/stories260K/stories260K.gguf");
  std::string text = read_file(shared("data/tinystories/sample-5-stories.txt"));
  text += read_file(shared("data/wikitext-2-raw/wiki.test.raw"), 20000);
  EXPECT_EQ(tok->encode(text, true), g->encode(text, true));
  EXPECT_EQ(tok->describe(), g->describe());
}

TEST(TokenizerModels, TinyStories656KGguf) {
  REQUIRE_SHARED("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  auto tok = gguf_tokenizer("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  auto ids = tok->encode(kSentence, true);
  EXPECT_EQ(ids_str(ids), ids_str(kTinyStories656KGguf));
  EXPECT_EQ(tok->decode(ids), kSentence);
}
