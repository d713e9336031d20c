// StreamDecoder: complete UTF-8 only, same text as decode(), same leading-space rule.
#include <gtest/gtest.h>

#include "tok_test_util.h"
#include "tokenizer/unicode.h"

using namespace tok_test;

namespace {

std::string stream_all(const lowbit::Tokenizer& tok, const std::vector<int32_t>& ids, bool check_chunks) {
  lowbit::StreamDecoder sd(tok);
  std::string out;
  for (int32_t id : ids) {
    std::string chunk = sd.push(id);
    if (check_chunks) EXPECT_EQ(lowbit::tok::find_invalid_utf8(chunk), std::string::npos) << "chunk: " << chunk;
    out += chunk;
  }
  out += sd.flush();
  return out;
}

}  // namespace

TEST(StreamDecoder, SpmByteTokensAndLeadingSpace) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-llama-spm.gguf");
  std::string text = "Hello \xF0\x9F\xA6\x99 world \xE1\x9E\x80\xE1\x9E\xB6 \xC3\xA9t\xC3\xA9 \xE6\x88\x91";
  auto ids = tok->encode(text, true);
  EXPECT_EQ(stream_all(*tok, ids, true), text);
  // The llama emoji is four byte tokens: nothing comes out until the last one.
  lowbit::StreamDecoder sd(*tok);
  EXPECT_EQ(sd.push(1), "");
  EXPECT_EQ(sd.push(29871), "");  // "▁" at the start: its space is removed
  std::string got;
  for (int b : {0xF0, 0x9F, 0xA6}) EXPECT_EQ(sd.push(3 + b), "");
  EXPECT_EQ(sd.push(3 + 0x99), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(sd.push(3186), " world");
  EXPECT_EQ(sd.flush(), "");
}

TEST(StreamDecoder, LongTextMatchesDecode) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-llama-spm.gguf");
  std::string text = read_file(shared("data/wikitext-2-raw/wiki.test.raw"), 30000);
  text.resize(text.rfind('\n') + 1);
  auto ids = tok->encode(text, true);
  ASSERT_GT(ids.size(), 1000u);
  EXPECT_EQ(stream_all(*tok, ids, true), text);
  EXPECT_EQ(stream_all(*tok, tok->encode(text, false), false), text);
}

TEST(StreamDecoder, Gpt2AndInvalidBytes) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-gpt-2.gguf");
  std::string text = "caf\xC3\xA9 \xF0\x9F\x9A\x80 launch \xE6\x88\x91\xE6\x83\xB3";
  EXPECT_EQ(stream_all(*tok, tok->encode(text, false), true), text);
  // A stray continuation byte is not held back forever; an unfinished sequence comes out at flush.
  std::string bad = "a\x80" "b\xE6\x88";
  EXPECT_EQ(stream_all(*tok, tok->encode(bad, false), false), bad);
}
