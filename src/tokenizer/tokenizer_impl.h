// Internal pieces shared by the tokenizer implementations (not part of the public API).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lowbit/tokenizer.h"

namespace lowbit::tok {

// GGUF token types.
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Parses "<0xXX>" (two upper- or lower-case hex digits); -1 when text is not a byte token.
int parse_byte_token(std::string_view text);

// Throws lowbit::Error when text is not valid UTF-8 (for tokenizers that cannot represent arbitrary bytes).
void require_utf8(std::string_view text, const std::string& source);

// A piece of the input: raw text, or a special token recognised in it.
struct Fragment {
  int32_t id = -1;          // >= 0: a token
  std::string_view text;    // raw text (id < 0)
  size_t offset = 0;        // where the fragment starts in the input
};

// llama.cpp's special-token partition: tokens are tried longest first; each one splits every remaining raw
// fragment at all its occurrences.
class SpecialSplitter {
 public:
  // always: matched even when parse_special is false (user-defined tokens).
  void add(std::string text, int32_t id, bool always);
  void finish();  // sorts; call once after the last add
  std::vector<Fragment> split(std::string_view text, bool parse_special) const;
  bool empty() const { return items_.empty(); }

 private:
  struct Item {
    std::string text;
    int32_t id;
    bool always;
  };
  std::vector<Item> items_;
};

// What every tokenizer shares: the decoded bytes of each token and the decode rule.
class BaseTokenizer : public Tokenizer {
 public:
  // How decode treats the leading space of the text (SentencePiece-style models prepend one when encoding).
  enum class LeadStrip {
    None,
    FirstToken,       // llama.cpp: one ' ' from the first token's piece (the second's if the first is BOS)
    FirstNonSpecial,  // Hugging Face Strip/Metaspace decoders: from the first token that is not skipped
  };

  std::string token_to_piece(int32_t id) const override;
  std::string decode(std::span<const int32_t> ids) const override;
  int32_t n_vocab() const override { return static_cast<int32_t>(pieces_.size()); }
  int32_t bos() const override { return bos_; }
  int32_t eos() const override { return eos_; }
  bool add_bos() const override { return add_bos_ && bos_ >= 0; }

 protected:
  void check_id(int32_t id) const;

  std::vector<std::string> pieces_;   // bytes each token decodes to ("" for control tokens)
  std::vector<uint8_t> skipped_;      // 1: a special token that decode skips (FirstNonSpecial rule)
  int32_t bos_ = -1, eos_ = -1;
  bool add_bos_ = false;
  LeadStrip lead_strip_ = LeadStrip::None;
  std::string source_;                // the file the vocabulary came from (for messages)
};

// Hash for string_view keys that also accepts std::string lookups.
struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};
using PieceMap = std::unordered_map<std::string_view, int32_t, SvHash, std::equal_to<>>;

std::unique_ptr<Tokenizer> make_spm_tokenizer(const TokenizerSpec& spec);
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const TokenizerSpec& spec);
std::unique_ptr<Tokenizer> make_hf_tokenizer(const TokenizerSpec& spec);

}  // namespace lowbit::tok
