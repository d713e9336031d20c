// Unicode classes and the hand-coded pre-tokenizer regexes (expected splits checked with Python's `regex`).
#include <gtest/gtest.h>

#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

using namespace lowbit::tok;

namespace {
std::vector<std::string> split(const std::string& text, std::vector<SplitRegex> rs) {
  std::vector<std::string> out;
  for (auto v : pre_split(text, rs)) out.emplace_back(v);
  return out;
}
using V = std::vector<std::string>;
}  // namespace

TEST(Unicode, Classes) {
  EXPECT_EQ(char_class('a'), CharClass::Letter);
  EXPECT_EQ(char_class('Z'), CharClass::Letter);
  EXPECT_EQ(char_class('7'), CharClass::Number);
  EXPECT_EQ(char_class(','), CharClass::Punct);
  EXPECT_EQ(char_class('$'), CharClass::Other);   // Sc
  EXPECT_EQ(char_class(0xE9), CharClass::Letter); // é
  EXPECT_EQ(char_class(0xBD), CharClass::Number); // ½
  EXPECT_EQ(char_class(0x0436), CharClass::Letter);  // ж
  EXPECT_EQ(char_class(0x4E2D), CharClass::Letter);  // 中
  EXPECT_EQ(char_class(0x0661), CharClass::Number);  // Arabic-Indic 1
  EXPECT_EQ(char_class(0x2167), CharClass::Number);  // Ⅷ (Nl)
  EXPECT_EQ(char_class(0x0301), CharClass::Other);   // combining acute (Mn)
  EXPECT_EQ(char_class(0x1F600), CharClass::Other);  // emoji (So)
  EXPECT_EQ(char_class(0x201C), CharClass::Punct);   // “
  EXPECT_EQ(char_class(0x10FFFF), CharClass::Other);
  EXPECT_TRUE(is_whitespace(' '));
  EXPECT_TRUE(is_whitespace('\n'));
  EXPECT_TRUE(is_whitespace(0xA0));
  EXPECT_TRUE(is_whitespace(0x3000));
  EXPECT_FALSE(is_whitespace(0x200B));  // zero width space is not White_Space
  EXPECT_FALSE(is_whitespace('x'));
}

TEST(Unicode, Utf8AndByteMap) {
  std::string s = "a\xC3\xA9\xE4\xB8\xAD\xF0\x9F\x98\x80";
  size_t i = 0;
  EXPECT_EQ(next_cp(s, i), 'a');
  EXPECT_EQ(next_cp(s, i), 0xE9u);
  EXPECT_EQ(next_cp(s, i), 0x4E2Du);
  EXPECT_EQ(next_cp(s, i), 0x1F600u);
  EXPECT_EQ(i, s.size());
  EXPECT_EQ(find_invalid_utf8(s), std::string::npos);
  EXPECT_EQ(find_invalid_utf8("ab\xE4\xB8"), 2u);
  EXPECT_EQ(find_invalid_utf8("\x80"), 0u);
  // GPT-2 byte map: printable bytes are themselves, space is U+0120 'Ġ', newline U+010A 'Ċ'.
  EXPECT_EQ(byte_to_cp('a'), static_cast<uint32_t>('a'));
  EXPECT_EQ(byte_to_cp(' '), 0x120u);
  EXPECT_EQ(byte_to_cp('\n'), 0x10Au);
  EXPECT_EQ(byte_to_cp(0xAD), 0x143u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(cp_to_byte(byte_to_cp(static_cast<uint8_t>(b))), b);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  EXPECT_EQ(unicode_to_bytes(bytes_to_unicode(all)), all);
}

TEST(PreTokenize, Gpt2) {
  const std::vector<SplitRegex> g = {SplitRegex::Gpt2};
  EXPECT_EQ(split("Hello world", g), (V{"Hello", " world"}));
  EXPECT_EQ(split("  Hello", g), (V{" ", " Hello"}));
  EXPECT_EQ(split("I've 123 cats!!", g), (V{"I", "'ve", " 123", " cats", "!!"}));
  EXPECT_EQ(split("x\n\n\ny", g), (V{"x", "\n\n", "\n", "y"}));
  EXPECT_EQ(split("end   ", g), (V{"end", "   "}));
  EXPECT_EQ(split("I'M", g), (V{"I", "'", "M"}));  // case-sensitive contractions
  EXPECT_EQ(split("caf\xC3\xA9 \xD0\xB6", g), (V{"caf\xC3\xA9", " \xD0\xB6"}));
  EXPECT_EQ(split("", g), V{});
}

TEST(PreTokenize, Llama3AndQwen2) {
  const std::vector<SplitRegex> l = {SplitRegex::Llama3}, q = {SplitRegex::Qwen2};
  EXPECT_EQ(split("I'M 12345 (hello)\n\n  x", l), (V{"I", "'M", " ", "123", "45", " (", "hello", ")\n\n", " ", " x"}));
  EXPECT_EQ(split("12345", q), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(split("a \n\t b", l), (V{"a", " \n", "\t", " b"}));
  EXPECT_EQ(split(".Hello", l), (V{".Hello"}));
  EXPECT_EQ(split("  \t", l), (V{"  \t"}));
}

TEST(PreTokenize, DefaultSequence) {
  auto c = pre_config_for("default", "test");
  EXPECT_EQ(split("Hello, world 12345!", c.regexes), (V{"Hello", ",", " world", " ", "123", "45", "!"}));
  auto s = pre_config_for("smollm", "test");
  EXPECT_EQ(split("ab 12", s.regexes), (V{"ab", " ", "1", "2"}));
  EXPECT_TRUE(pre_config_for("llama-bpe", "test").ignore_merges);
  EXPECT_FALSE(pre_config_for("qwen2", "test").ignore_merges);
}

TEST(PreTokenize, InvalidBytesAreKept) {
  std::string t = "ab\xFF\xFE cd";
  auto v = split(t, {SplitRegex::Gpt2});
  std::string joined;
  for (auto& p : v) joined += p;
  EXPECT_EQ(joined, t);
  EXPECT_EQ(v, (V{"ab", "\xFF\xFE", " cd"}));
}

TEST(PreTokenize, RecognisesHfPatterns) {
  SplitRegex r;
  EXPECT_TRUE(regex_from_pattern("'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", r));
  EXPECT_EQ(r, SplitRegex::Gpt2);
  EXPECT_TRUE(regex_from_pattern(
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", r));
  EXPECT_EQ(r, SplitRegex::Llama3);
  EXPECT_TRUE(regex_from_pattern(
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+", r));
  EXPECT_EQ(r, SplitRegex::Qwen2);
  EXPECT_FALSE(regex_from_pattern("\\w+", r));
}

// The llama.cpp pre name for a regex sequence (what a GGUF written from a tokenizer.json says), and back.
TEST(PreTokenize, PreNameForRegexSequences) {
  using R = SplitRegex;
  struct Case {
    std::vector<R> regexes;
    bool ignore_merges;
    std::string name;
  };
  const std::vector<Case> cases = {
      {{R::Llama3}, true, "llama-bpe"}, {{R::Llama3}, false, "smaug-bpe"}, {{R::Qwen2}, false, "qwen2"},
      {{R::Gpt2}, false, "gpt-2"},      {{R::NumberEach, R::Gpt2}, false, "smollm"},
      // No llama.cpp pre-tokenizer does these.
      {{R::Qwen2}, true, ""},           {{R::NumberRun, R::Gpt2}, false, ""}, {{R::Gpt2, R::NumberEach}, false, ""},
      {{}, false, ""},                  {{R::Llama3, R::Gpt2}, true, ""},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(pre_name_for(c.regexes, c.ignore_merges), c.name);
    if (c.name.empty()) continue;
    const PreTokenizerConfig back = pre_config_for(c.name, "test");
    EXPECT_EQ(back.regexes, c.regexes) << c.name;
    EXPECT_EQ(back.ignore_merges, c.ignore_merges) << c.name;
  }
}
