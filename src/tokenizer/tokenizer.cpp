// make_tokenizer, the shared decode rule, special-token partition and StreamDecoder.
#include <algorithm>

#include "lowbit/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace lowbit {

namespace tok {

int parse_byte_token(std::string_view t) {
  if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(t[3]), lo = hex(t[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

void require_utf8(std::string_view text, const std::string& source) {
  size_t bad = find_invalid_utf8(text);
  if (bad != std::string_view::npos)
    fail_at(source, "input text", static_cast<int64_t>(bad),
            "not valid UTF-8 (this tokenizer cannot represent arbitrary bytes)");
}

void SpecialSplitter::add(std::string text, int32_t id, bool always) {
  if (!text.empty()) items_.push_back({std::move(text), id, always});
}

void SpecialSplitter::finish() {
  std::stable_sort(items_.begin(), items_.end(),
                   [](const Item& a, const Item& b) { return a.text.size() > b.text.size(); });
}

std::vector<Fragment> SpecialSplitter::split(std::string_view text, bool parse_special) const {
  std::vector<Fragment> frags;
  if (text.empty()) return frags;
  frags.push_back({-1, text, 0});
  std::vector<Fragment> next;
  for (const Item& it : items_) {
    if (!it.always && !parse_special) continue;
    next.clear();
    bool changed = false;
    for (const Fragment& f : frags) {
      if (f.id >= 0) {
        next.push_back(f);
        continue;
      }
      size_t base = 0;
      for (;;) {
        size_t m = f.text.find(it.text, base);
        if (m == std::string_view::npos) break;
        changed = true;
        if (m > base) next.push_back({-1, f.text.substr(base, m - base), f.offset + base});
        next.push_back({it.id, {}, f.offset + m});
        base = m + it.text.size();
      }
      if (base < f.text.size()) next.push_back({-1, f.text.substr(base), f.offset + base});
    }
    if (changed) frags.swap(next);
  }
  return frags;
}

void BaseTokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= n_vocab())
    fail(source_, "token id",
         std::to_string(id) + " is out of range (vocabulary has " + std::to_string(n_vocab()) + " tokens)");
}

std::string BaseTokenizer::token_to_piece(int32_t id) const {
  check_id(id);
  return pieces_[id];
}

std::string BaseTokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  bool strip = lead_strip_ != LeadStrip::None;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    check_id(id);
    const std::string& p = pieces_[id];
    if (strip) {
      if (lead_strip_ == LeadStrip::FirstToken) {
        if (i == 0 && id == bos_) continue;
      } else if (skipped_[id]) {
        continue;
      }
      strip = false;
      if (!p.empty() && p[0] == ' ') {
        out.append(p, 1, std::string::npos);
        continue;
      }
    }
    out += p;
  }
  return out;
}

}  // namespace tok

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerSpec& spec) {
  if (spec.model == "llama") return tok::make_spm_tokenizer(spec);
  if (spec.model == "gpt2") return tok::make_gpt2_tokenizer(spec);
  if (spec.model == "hf-json") return tok::make_hf_tokenizer(spec);
  if (spec.model == "none" || spec.model.empty()) fail(spec.source, "tokenizer", "the model has no tokenizer");
  fail(spec.source, "tokenizer", "unsupported tokenizer model \"" + spec.model + "\" (expected llama, gpt2 or hf-json)");
}

// ---------------------------------------------------------------------------------------------------------
// StreamDecoder: decode() is prefix-stable (appending a token only appends text), so each push decodes the
// ids and returns the new complete UTF-8. To keep the cost per token bounded, once everything decoded so far
// has been returned, the ids are cut back to the shortest head whose decoding is non-empty (the leading-space
// rule has been applied by then), and emitted_ is reset to that head's length.

namespace {

// Length of the longest prefix of s that does not end inside a valid-but-incomplete UTF-8 sequence.
size_t complete_prefix(const std::string& s) {
  const size_t n = s.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: look further back
    if (c >= 0xC2 && c <= 0xF4) {
      size_t need = tok::utf8_seq_len(c);
      if (need > back) return n - back;  // the sequence is not finished yet
    }
    return n;
  }
  return n;
}

}  // namespace

StreamDecoder::StreamDecoder(const Tokenizer& tok) : tok_(tok) {}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  const std::string full = tok_.decode(ids_);
  size_t upto = std::max(complete_prefix(full), emitted_);
  std::string out = upto > emitted_ ? full.substr(emitted_, upto - emitted_) : std::string();
  emitted_ = upto;
  if (emitted_ == full.size() && ids_.size() >= 64) {
    for (size_t h = 1; h < ids_.size(); ++h) {
      std::string head = tok_.decode(std::span<const int32_t>(ids_.data(), h));
      if (!head.empty()) {
        ids_.resize(h);
        emitted_ = head.size();
        break;
      }
    }
  }
  return out;
}

std::string StreamDecoder::flush() {
  const std::string full = tok_.decode(ids_);
  std::string out = full.size() > emitted_ ? full.substr(emitted_) : std::string();
  emitted_ = full.size();
  return out;
}

}  // namespace lowbit
