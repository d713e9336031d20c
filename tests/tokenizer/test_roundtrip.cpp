// decode(encode(x)) == x on the evaluation texts, for every tokenizer that can represent them; encoding speed.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

#include "tok_test_util.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/llama2c_vocab.h"

using namespace tok_test;

namespace {

constexpr size_t kWikiBytes = 100000;

// The first max_bytes of a file, cut back to a line end so no UTF-8 sequence is split.
std::string text_prefix(const std::string& rel, size_t max_bytes) {
  std::string s = read_file(shared(rel), max_bytes);
  if (s.size() == max_bytes) s.resize(s.rfind('\n') + 1);
  return s;
}

void expect_round_trip(const lowbit::Tokenizer& tok, const std::string& text, const std::string& what) {
  for (bool bos : {true, false}) {
    auto ids = tok.encode(text, bos);
    ASSERT_FALSE(ids.empty());
    std::string back = tok.decode(ids);
    if (back != text) {
      size_t i = 0;
      while (i < back.size() && i < text.size() && back[i] == text[i]) ++i;
      ADD_FAILURE() << what << " (bos " << bos << "): round trip differs at byte " << i << ": expected \""
                    << text.substr(i, 40) << "\", got \"" << back.substr(i, 40) << "\"";
    }
  }
  // Also piecewise, line by line (exercises the leading-space rule on every line start).
  size_t pos = 0;
  int lines = 0;
  while (pos < text.size() && lines < 200) {
    size_t e = text.find('\n', pos);
    std::string line = text.substr(pos, e == std::string::npos ? std::string::npos : e - pos);
    EXPECT_EQ(tok.decode(tok.encode(line, true)), line) << what;
    pos = e == std::string::npos ? text.size() : e + 1;
    ++lines;
  }
}

// TinyStories-656K's vocabulary has no curly quotes (and no byte tokens): use ASCII ones.
std::string ascii_quotes(std::string s) {
  for (const char* q : {"\xE2\x80\x9C", "\xE2\x80\x9D", "\xE2\x80\x98", "\xE2\x80\x99"}) {
    const std::string from(q);
    const std::string to = (from == "\xE2\x80\x98" || from == "\xE2\x80\x99") ? "'" : "\"";
    for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p)) s.replace(p, from.size(), to);
  }
  return s;
}

}  // namespace

TEST(TokenizerRoundTrip, LlamaSpm) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-llama-spm.gguf");
  expect_round_trip(*tok, text_prefix("data/wikitext-2-raw/wiki.test.raw", kWikiBytes), "wiki");
  expect_round_trip(*tok, read_file(shared("data/tinystories/sample-5-stories.txt")), "tinystories");
}

TEST(TokenizerRoundTrip, Llama2cBin) {
  REQUIRE_SHARED("tokenizers/llama2c_tokenizer.bin");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  auto tok = lowbit::make_tokenizer(lowbit::tokenizer_spec_from_llama2c(shared("tokenizers/llama2c_tokenizer.bin")));
  expect_round_trip(*tok, text_prefix("data/wikitext-2-raw/wiki.test.raw", kWikiBytes), "wiki");
}

TEST(TokenizerRoundTrip, Stories260K) {
  REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  auto tok = gguf_tokenizer("models/stories260K/stories260K.gguf");
  expect_round_trip(*tok, text_prefix("data/wikitext-2-raw/wiki.test.raw", kWikiBytes), "wiki");
  expect_round_trip(*tok, read_file(shared("data/tinystories/sample-5-stories.txt")), "tinystories");
}

TEST(TokenizerRoundTrip, Gpt2ByteLevel) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-gpt-2.gguf");
  expect_round_trip(*tok, text_prefix("data/wikitext-2-raw/wiki.test.raw", kWikiBytes), "wiki");
  expect_round_trip(*tok, read_file(shared("data/tinystories/sample-5-stories.txt")), "tinystories");
  // Byte-level: arbitrary bytes, invalid UTF-8 included, survive.
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes.push_back(static_cast<char>(i));
  bytes += "\xE2\x82 \xF0\x9F\x98 end \xC3";
  EXPECT_EQ(tok->decode(tok->encode(bytes, false)), bytes);
}

TEST(TokenizerRoundTrip, TinyStories656KGguf) {
  REQUIRE_SHARED("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw.656K-charset");
  auto tok = gguf_tokenizer("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  expect_round_trip(*tok, text_prefix("data/wikitext-2-raw/wiki.test.raw.656K-charset", kWikiBytes), "wiki 656K");
  expect_round_trip(*tok, ascii_quotes(read_file(shared("data/tinystories/sample-5-stories.txt"))), "tinystories");
  // Characters outside the vocabulary become unk (id 0), which decodes to nothing.
  auto ids = tok->encode("a \xE2\x80\x9C" "b\xE2\x80\x9D", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 0), ids.end());
  EXPECT_EQ(tok->decode(ids), "a b");
}

TEST(TokenizerRoundTrip, TinyStories656KHfJson) {
  REQUIRE_SHARED("models/TinyStories-656K/tokenizer.json");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw.656K-charset");
  auto tok = lowbit::make_tokenizer(lowbit::tokenizer_spec_from_hf_dir(shared("models/TinyStories-656K")));
  expect_round_trip(*tok, text_prefix("data/wikitext-2-raw/wiki.test.raw.656K-charset", kWikiBytes), "wiki 656K");
  expect_round_trip(*tok, ascii_quotes(read_file(shared("data/tinystories/sample-5-stories.txt"))), "tinystories");
  // Characters outside the vocabulary become unk (id 0), which decodes to nothing.
  auto ids = tok->encode("a \xE2\x80\x9C" "b\xE2\x80\x9D", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 0), ids.end());
  EXPECT_EQ(tok->decode(ids), "a b");
}

// The whole 1.29 MB test set with the 32000-token SPM vocabulary (one fragment, ~1.3M initial symbols).
TEST(TokenizerSpeed, WikiTestRawSpm32000) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-llama-spm.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  auto tok = gguf_tokenizer("tokenizers/ggml-vocab-llama-spm.gguf");
  std::string text = read_file(shared("data/wikitext-2-raw/wiki.test.raw"));
  ASSERT_GT(text.size(), 1000000u);
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok->encode(text, true);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info ] SPM-32000 encoded %zu bytes into %zu tokens in %.3f s\n", text.size(), ids.size(), s);
  EXPECT_LT(s, 3.0);
  EXPECT_EQ(tok->decode(ids), text);
}

TEST(TokenizerSpeed, WikiTestRawGpt2AndHf) {
  REQUIRE_SHARED("tokenizers/ggml-vocab-gpt-2.gguf");
  REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw.656K-charset");
  auto gpt2 = gguf_tokenizer("tokenizers/ggml-vocab-gpt-2.gguf");
  std::string text = read_file(shared("data/wikitext-2-raw/wiki.test.raw"));
  auto t0 = std::chrono::steady_clock::now();
  auto ids = gpt2->encode(text, false);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info ] GPT-2 encoded %zu bytes into %zu tokens in %.3f s\n", text.size(), ids.size(), s);
  EXPECT_LT(s, 3.0);
  EXPECT_EQ(gpt2->decode(ids), text);

  auto hf = lowbit::make_tokenizer(lowbit::tokenizer_spec_from_hf_dir(shared("models/TinyStories-656K")));
  std::string t656 = read_file(shared("data/wikitext-2-raw/wiki.test.raw.656K-charset"));
  t0 = std::chrono::steady_clock::now();
  ids = hf->encode(t656, true);
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info ] HF TinyStories-656K encoded %zu bytes into %zu tokens in %.3f s\n", t656.size(), ids.size(), s);
  EXPECT_LT(s, 3.0);
  EXPECT_EQ(hf->decode(ids), t656);
}
