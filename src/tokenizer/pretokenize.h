// Pre-tokenizer splitting for byte-level BPE: the regexes llama.cpp and Hugging Face use, hand-coded on
// Unicode classes (no std::regex: it has no \p{L}). Each regex splits every current piece into its matches
// and the unmatched gaps between them (both kept), like llama.cpp's unicode_regex_split and HF's
// Split(behavior = Isolated).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::tok {

enum class SplitRegex {
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Gpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Llama3,
  // as Llama3 with \p{N} instead of \p{N}{1,3}
  Qwen2,
  NumberEach,   // \p{N}
  NumberRun,    // \p{N}+
  AsciiDigits3, // [0-9][0-9][0-9]
  PunctRun,     // [\p{P}\$\+<=>\^~\|]+
};

struct PreTokenizerConfig {
  std::vector<SplitRegex> regexes;
  bool ignore_merges = false;  // a whole pre-token found in the vocabulary is emitted as is (llama3)
};

// The regex sequence llama.cpp uses for a GGUF tokenizer.ggml.pre value; throws lowbit::Error (naming
// `source`) for an unknown one.
PreTokenizerConfig pre_config_for(const std::string& pre, const std::string& source);

// The llama.cpp tokenizer.ggml.pre name whose regex sequence (and llama3 ignore_merges rule) is exactly
// `regexes` / `ignore_merges` ("llama-bpe", "smaug-bpe", "qwen2", "gpt-2", "smollm"), or "" when none is.
std::string pre_name_for(std::span<const SplitRegex> regexes, bool ignore_merges);

// Splits text (arbitrary bytes: invalid UTF-8 bytes count as one "other" character each) into pieces.
std::vector<std::string_view> pre_split(std::string_view text, std::span<const SplitRegex> regexes);

// Recognises a Hugging Face Split pre-tokenizer regex (exact pattern text) as one of the above.
bool regex_from_pattern(std::string_view pattern, SplitRegex& out);

}  // namespace lowbit::tok
