// Byte-level BPE on merge ranks (GGUF "gpt2" vocabularies), as llama.cpp does it: the text is split by the
// pre-tokenizer regexes, each piece's bytes are mapped to GPT-2's printable characters, and within a piece the
// adjacent pair with the lowest merge rank (leftmost on ties) is merged until no pair has a rank.
// Accepts arbitrary bytes (invalid UTF-8 bytes are kept as their own characters and round-trip).
#include <algorithm>
#include <queue>

#include "lowbit/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace lowbit::tok {

namespace {

struct PairKey {
  std::string_view a, b;
  bool operator==(const PairKey& o) const { return a == o.a && b == o.b; }
};
struct PairHash {
  size_t operator()(const PairKey& k) const noexcept {
    SvHash h;
    return h(k.a) * 31 + h(k.b);
  }
};

class Gpt2Tokenizer final : public BaseTokenizer {
 public:
  explicit Gpt2Tokenizer(const TokenizerSpec& spec) {
    source_ = spec.source;
    const size_t n = spec.tokens.size();
    if (n == 0) fail(source_, "tokenizer.ggml.tokens", "empty vocabulary");
    if (n > static_cast<size_t>(INT32_MAX)) fail(source_, "tokenizer.ggml.tokens", "vocabulary too large");
    if (!spec.types.empty() && spec.types.size() != n)
      fail(source_, "tokenizer.ggml.token_type", std::to_string(spec.types.size()) + " types for " + std::to_string(n) + " tokens");
    if (spec.merges.empty()) fail(source_, "tokenizer.ggml.merges", "a gpt2 tokenizer needs merges");
    pre_ = pre_config_for(spec.pre, source_);
    pre_name_ = spec.pre.empty() ? "default" : spec.pre;
    text_ = spec.tokens;
    pieces_.resize(n);
    skipped_.assign(n, 0);
    lookup_.reserve(n * 2);
    auto in_range = [&](int32_t id) { return id >= 0 && static_cast<size_t>(id) < n ? id : -1; };
    bos_ = in_range(spec.bos);
    eos_ = in_range(spec.eos);
    add_bos_ = spec.add_bos;
    for (size_t i = 0; i < n; ++i) {
      const std::string& t = text_[i];
      int32_t type = spec.types.empty() ? ((static_cast<int32_t>(i) == bos_ || static_cast<int32_t>(i) == eos_) ? kControl : kNormal)
                                        : spec.types[i];
      lookup_[std::string_view(t)] = static_cast<int32_t>(i);
      switch (type) {
        case kControl: case kUnknown: case kUnused:
          skipped_[i] = 1;
          break;
        case kUserDefined:
          pieces_[i] = t;
          break;
        case kByte: {
          int b = parse_byte_token(t);
          pieces_[i] = b >= 0 ? std::string(1, static_cast<char>(b)) : unicode_to_bytes(t);
          break;
        }
        default:
          pieces_[i] = unicode_to_bytes(t);
          break;
      }
      if (type == kControl || type == kUnknown) specials_.add(t, static_cast<int32_t>(i), false);
      if (type == kUserDefined) specials_.add(t, static_cast<int32_t>(i), true);
    }
    specials_.finish();
    merges_ = spec.merges;
    ranks_.reserve(merges_.size() * 2);
    for (size_t r = 0; r < merges_.size(); ++r) {
      std::string_view m = merges_[r];
      size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
      if (sp == std::string_view::npos || sp + 1 >= m.size())
        fail(source_, "tokenizer.ggml.merges", "merge " + std::to_string(r) + " (\"" + std::string(m) + "\") is not \"a b\"");
      ranks_.emplace(PairKey{m.substr(0, sp), m.substr(sp + 1)}, static_cast<int32_t>(r));  // first one wins
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    std::string word;
    for (const Fragment& f : specials_.split(text, parse_special)) {
      if (f.id >= 0) {
        out.push_back(f.id);
        continue;
      }
      for (std::string_view piece : pre_split(f.text, pre_.regexes)) {
        word = bytes_to_unicode(piece);
        tokenize_word(word, out);
      }
    }
    return out;
  }

  std::string describe() const override {
    return "BPE (gpt2, byte-level, pre-tokenizer " + pre_name_ + "), " + std::to_string(n_vocab()) + " tokens, " +
           std::to_string(merges_.size()) + " merges";
  }

 private:
  struct Sym {
    int32_t prev, next;
    uint32_t start, n;
  };
  struct Bigram {
    int32_t rank;
    int32_t left, right;
    uint32_t size;
  };
  struct BigramGreater {  // priority: lowest rank, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
  };

  void tokenize_word(const std::string& w, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (pre_.ignore_merges) {
      auto it = lookup_.find(std::string_view(w));
      if (it != lookup_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    std::vector<Sym> sym;
    sym.reserve(w.size());
    for (size_t i = 0; i < w.size();) {
      size_t len = std::min(utf8_seq_len(static_cast<unsigned char>(w[i])), w.size() - i);
      int32_t k = static_cast<int32_t>(sym.size());
      sym.push_back({k - 1, k + 1, static_cast<uint32_t>(i), static_cast<uint32_t>(len)});
      i += len;
    }
    sym.back().next = -1;
    std::priority_queue<Bigram, std::vector<Bigram>, BigramGreater> queue;
    auto view = [&](int32_t k) { return std::string_view(w.data() + sym[k].start, sym[k].n); };
    auto try_add = [&](int32_t l, int32_t r) {
      if (l < 0 || r < 0) return;
      auto it = ranks_.find(PairKey{view(l), view(r)});
      if (it == ranks_.end()) return;
      queue.push({it->second, l, r, sym[l].n + sym[r].n});
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
      std::string_view piece = view(i);
      auto it = lookup_.find(piece);
      if (it != lookup_.end()) {
        out.push_back(it->second);
        continue;
      }
      // Not a token (merges that make no vocabulary entry): fall back to its characters.
      for (size_t j = 0; j < piece.size();) {
        size_t len = std::min(utf8_seq_len(static_cast<unsigned char>(piece[j])), piece.size() - j);
        auto c = lookup_.find(piece.substr(j, len));
        if (c != lookup_.end()) out.push_back(c->second);
        j += len;
      }
    }
  }

  std::vector<std::string> text_;
  std::vector<std::string> merges_;
  PieceMap lookup_;
  std::unordered_map<PairKey, int32_t, PairHash> ranks_;
  PreTokenizerConfig pre_;
  std::string pre_name_;
  SpecialSplitter specials_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const TokenizerSpec& spec) {
  return std::make_unique<Gpt2Tokenizer>(spec);
}

}  // namespace lowbit::tok
