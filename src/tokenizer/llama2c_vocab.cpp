#include "tokenizer/llama2c_vocab.h"

#include <cmath>
#include <cstring>

#include "core/mapped_file.h"
#include "lowbit/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace lowbit {

namespace {
constexpr int32_t kMaxTokenLength = 1 << 16;   // longest piece accepted (real files: 7 .. 27)
constexpr size_t kMaxTokens = 1u << 24;
}  // namespace

TokenizerSpec tokenizer_spec_from_llama2c(const std::string& path, int32_t expected_vocab) {
  MappedFile file(path);
  const auto* p = reinterpret_cast<const unsigned char*>(file.data());
  const uint64_t size = file.size();
  uint64_t off = 0;
  auto read_i32 = [&](const char* field, int64_t index) -> int32_t {
    if (size - off < 4) {
      std::string f = index >= 0 ? "token " + std::to_string(index) + " " + field : field;
      fail_at(path, f, static_cast<int64_t>(off), "file truncated (need 4 bytes, " + std::to_string(size - off) + " left)");
    }
    int32_t v;
    std::memcpy(&v, p + off, 4);
    off += 4;
    return v;
  };

  if (size == 0) fail(path, "max_token_length", "empty file (not a llama2.c tokenizer.bin)");
  const int32_t max_len = read_i32("max_token_length", -1);
  if (max_len <= 0 || max_len > kMaxTokenLength)
    fail_at(path, "max_token_length", 0,
            "absurd value " + std::to_string(max_len) + " (expected 1.." + std::to_string(kMaxTokenLength) + ")");

  TokenizerSpec spec;
  spec.model = "llama";
  spec.pre = "default";
  spec.source = path;
  spec.add_bos = true;
  spec.add_space_prefix = true;
  while (off < size) {
    const int64_t index = static_cast<int64_t>(spec.tokens.size());
    if (spec.tokens.size() >= kMaxTokens)
      fail_at(path, "tokens", static_cast<int64_t>(off), "more than " + std::to_string(kMaxTokens) + " tokens");
    const uint64_t score_off = off;
    int32_t score_bits = read_i32("score", index);
    float score;
    std::memcpy(&score, &score_bits, 4);
    if (std::isnan(score)) fail_at(path, "token " + std::to_string(index) + " score", static_cast<int64_t>(score_off), "NaN");
    const uint64_t len_off = off;
    const int32_t len = read_i32("length", index);
    if (len < 0 || len > max_len)
      fail_at(path, "token " + std::to_string(index) + " length", static_cast<int64_t>(len_off),
              "absurd length " + std::to_string(len) + " (max_token_length is " + std::to_string(max_len) + ")");
    if (size - off < static_cast<uint64_t>(len))
      fail_at(path, "token " + std::to_string(index) + " bytes", static_cast<int64_t>(off),
              "file truncated (need " + std::to_string(len) + " bytes, " + std::to_string(size - off) + " left)");
    std::string piece(reinterpret_cast<const char*>(p + off), static_cast<size_t>(len));
    off += static_cast<uint64_t>(len);
    spec.tokens.push_back(std::move(piece));
    spec.scores.push_back(score);
  }
  const size_t n = spec.tokens.size();
  if (n == 0) fail(path, "tokens", "no tokens after the header");
  if (expected_vocab >= 0 && n != static_cast<size_t>(expected_vocab))
    fail(path, "tokens", "has " + std::to_string(n) + " tokens but the model's vocab_size is " + std::to_string(expected_vocab));

  spec.types.assign(n, tok::kNormal);
  for (size_t i = 0; i < n; ++i) {
    std::string& t = spec.tokens[i];
    const int32_t id = static_cast<int32_t>(i);
    if (t == "<unk>") {
      spec.types[i] = tok::kUnknown;
      if (spec.unk < 0) spec.unk = id;
    } else if (t == "\n<s>\n" || t == "<s>") {
      t = "<s>";
      spec.types[i] = tok::kControl;
      if (spec.bos < 0) spec.bos = id;
    } else if (t == "\n</s>\n" || t == "</s>") {
      t = "</s>";
      spec.types[i] = tok::kControl;
      if (spec.eos < 0) spec.eos = id;
    } else if (tok::parse_byte_token(t) >= 0) {
      spec.types[i] = tok::kByte;
    } else {
      std::string s;
      s.reserve(t.size() + 8);
      for (char c : t) {
        if (c == ' ')
          s += "\xE2\x96\x81";
        else
          s.push_back(c);
      }
      t = std::move(s);
    }
  }
  return spec;
}

}  // namespace lowbit
