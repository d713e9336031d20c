// SentencePiece-style BPE on scores (GGUF "llama" vocabularies, llama2.c tokenizer.bin), as llama.cpp does it:
// the text (with ' ' -> U+2581 and an optional leading U+2581) is split into UTF-8 characters; the adjacent
// pair whose concatenation is a vocabulary piece with the highest score (leftmost on ties) is merged until no
// pair is a piece; pieces that are still unknown become <0xXX> byte tokens, or unk.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cmath>
#include <queue>

#include "lowbit/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace lowbit::tok {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581

std::string escape_spaces(std::string_view s) {
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  for (char c : s) {
    if (c == ' ')
      out += kSpace;
    else
      out.push_back(c);
  }
  return out;
}

std::string unescape_spaces(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, kSpace.size(), kSpace) == 0) {
      out.push_back(' ');
      i += kSpace.size();
    } else {
      out.push_back(s[i++]);
    }
  }
  return out;
}

class SpmTokenizer final : public BaseTokenizer {
 public:
  explicit SpmTokenizer(const TokenizerSpec& spec) {
    source_ = spec.source;
    const size_t n = spec.tokens.size();
    if (n == 0) fail(source_, "tokenizer.ggml.tokens", "empty vocabulary");
    if (n > static_cast<size_t>(INT32_MAX)) fail(source_, "tokenizer.ggml.tokens", "vocabulary too large");
    if (!spec.scores.empty() && spec.scores.size() != n)
      fail(source_, "tokenizer.ggml.scores", std::to_string(spec.scores.size()) + " scores for " + std::to_string(n) + " tokens");
    if (!spec.types.empty() && spec.types.size() != n)
      fail(source_, "tokenizer.ggml.token_type", std::to_string(spec.types.size()) + " types for " + std::to_string(n) + " tokens");
    text_ = spec.tokens;
    scores_ = spec.scores.empty() ? std::vector<float>(n, 0.0f) : spec.scores;
    types_.resize(n);
    pieces_.resize(n);
    skipped_.assign(n, 0);
    byte_tok_.fill(-1);
    std::array<int32_t, 256> single_char{};
    single_char.fill(-1);
    lookup_.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = text_[i];
      int32_t type = spec.types.empty() ? infer_type(t, static_cast<int32_t>(i), spec) : spec.types[i];
      types_[i] = type;
      lookup_[std::string_view(text_[i])] = static_cast<int32_t>(i);  // like llama.cpp: the last duplicate wins
      max_len_ = std::max(max_len_, t.size());
      int b = parse_byte_token(t);
      switch (type) {
        case kByte:
          if (b < 0) fail(source_, "tokenizer.ggml.tokens", "token " + std::to_string(i) + " has type byte but is not <0xXX>");
          pieces_[i] = std::string(1, static_cast<char>(b));
          break;
        case kControl: case kUnknown: case kUnused:
          skipped_[i] = 1;
          break;
        case kUserDefined:
          pieces_[i] = t;
          specials_.add(t, static_cast<int32_t>(i), true);
          break;
        default:
          pieces_[i] = unescape_spaces(t);
          break;
      }
      if (type == kControl || type == kUnknown) specials_.add(t, static_cast<int32_t>(i), false);
      if (t.size() == 1) single_char[static_cast<unsigned char>(t[0])] = static_cast<int32_t>(i);
      if (std::isnan(scores_[i]))
        fail(source_, "tokenizer.ggml.scores", "score of token " + std::to_string(i) + " is NaN");
    }
    specials_.finish();
    std::array<bool, 256> in_multi{};
    for (const std::string& t : text_)
      if (t.size() > 1)
        for (unsigned char c : t) in_multi[c] = true;
    for (int c = 0; c < 0x80; ++c) isolated_[c] = !in_multi[c];
    // Byte fallback: the <0xXX> token, else the one-byte token (as llama.cpp looks them up), else unk.
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      auto it = lookup_.find(std::string_view(buf));
      if (it != lookup_.end()) {
        byte_tok_[b] = it->second;
        ++n_byte_tokens_;
      } else {
        byte_tok_[b] = single_char[b];
      }
    }
    auto in_range = [&](int32_t id) { return id >= 0 && static_cast<size_t>(id) < n ? id : -1; };
    bos_ = in_range(spec.bos);
    eos_ = in_range(spec.eos);
    unk_ = in_range(spec.unk);
    add_bos_ = spec.add_bos;
    add_space_prefix_ = spec.add_space_prefix;
    lead_strip_ = add_space_prefix_ ? LeadStrip::FirstToken : LeadStrip::None;
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    require_utf8(text, source_);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    bool prev_special = true;
    for (const Fragment& f : specials_.split(text, parse_special)) {
      if (f.id >= 0) {
        out.push_back(f.id);
        prev_special = true;
        continue;
      }
      std::string s;
      if (add_space_prefix_ && prev_special) s = kSpace;
      s += escape_spaces(f.text);
      tokenize(s, out);
      prev_special = false;
    }
    return out;
  }

  std::string describe() const override {
    std::string d = "SPM (llama), " + std::to_string(n_vocab()) + " tokens";
    if (n_byte_tokens_ == 256) d += ", byte fallback";
    else d += ", no byte tokens (unknown characters become unk)";
    return d;
  }

 private:
  struct Sym {
    int32_t prev, next;
    uint32_t start, n;
  };
  struct Bigram {
    float score;
    int32_t left, right;
    uint32_t size;
  };
  struct BigramLess {  // priority: highest score, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  static int32_t infer_type(const std::string& t, int32_t id, const TokenizerSpec& spec) {
    if (id == spec.unk) return kUnknown;
    if (id == spec.bos || id == spec.eos) return kControl;
    if (parse_byte_token(t) >= 0) return kByte;
    return kNormal;
  }

  // Bytes that occur in no multi-byte piece can never be part of a merge, so the text splits there into
  // independent runs (same result as one pass over the whole text, much less heap traffic).
  void tokenize(const std::string& s, std::vector<int32_t>& out) const {
    size_t begin = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (!isolated_[static_cast<unsigned char>(s[i])]) continue;
      if (i > begin) tokenize_run(std::string_view(s).substr(begin, i - begin), out);
      tokenize_run(std::string_view(s).substr(i, 1), out);
      begin = i + 1;
    }
    if (begin < s.size()) tokenize_run(std::string_view(s).substr(begin), out);
  }

  void tokenize_run(std::string_view s, std::vector<int32_t>& out) const {
    std::vector<Sym> sym;
    sym.reserve(s.size());
    for (size_t i = 0; i < s.size();) {
      size_t len = std::min(utf8_seq_len(static_cast<unsigned char>(s[i])), s.size() - i);
      int32_t k = static_cast<int32_t>(sym.size());
      sym.push_back({k - 1, k + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(len)});
      i += len;
    }
    if (sym.empty()) return;
    sym.back().next = -1;

    std::priority_queue<Bigram, std::vector<Bigram>, BigramLess> queue;
    auto try_add = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0) return;
      size_t size = sym[l].n + sym[r].n;
      if (size > max_len_) return;
      auto it = lookup_.find(std::string_view(s.data() + sym[l].start, size));
      if (it == lookup_.end()) return;
      queue.push({scores_[it->second], l, r, static_cast<uint32_t>(size)});
    };
    for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) try_add(i - 1, i);

    while (!queue.empty()) {
      Bigram b = queue.top();
      queue.pop();
      Sym& l = sym[b.left];
      Sym& r = sym[b.right];
      if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
      l.n += r.n;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = b.left;
      try_add(l.prev, b.left);
      try_add(b.left, l.next);
    }

    for (int32_t i = 0; i != -1; i = sym[i].next) {
      std::string_view piece(s.data() + sym[i].start, sym[i].n);
      auto it = lookup_.find(piece);
      if (it != lookup_.end()) {
        out.push_back(it->second);
        continue;
      }
      bool last_unk = false;
      for (unsigned char c : piece) {
        int32_t t = byte_tok_[c];
        if (t >= 0) {
          out.push_back(t);
          last_unk = false;
        } else if (unk_ >= 0) {
          if (!last_unk) out.push_back(unk_);
          last_unk = true;
        } else {
          std::string msg(piece);
          msg += " cannot be represented: no byte token and no unk token";
          fail(source_, "input text", msg);
        }
      }
    }
  }

  std::vector<std::string> text_;
  std::array<bool, 256> isolated_{};
  std::vector<float> scores_;
  std::vector<int32_t> types_;
  PieceMap lookup_;
  std::array<int32_t, 256> byte_tok_{};
  int n_byte_tokens_ = 0;
  size_t max_len_ = 0;
  int32_t unk_ = -1;
  bool add_space_prefix_ = true;
  SpecialSplitter specials_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(const TokenizerSpec& spec) {
  return std::make_unique<SpmTokenizer>(spec);
}

}  // namespace lowbit::tok
