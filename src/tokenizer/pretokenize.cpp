#include "tokenizer/pretokenize.h"

#include <algorithm>

#include "lowbit/error.h"
#include "tokenizer/unicode.h"

namespace lowbit::tok {

namespace {

// Per code point: class bits, so the matchers test flags instead of searching the table again.
enum : uint8_t { kL = 1, kN = 2, kP = 4, kWs = 8, kNl = 16 };

struct Cps {
  std::vector<uint32_t> cp;
  std::vector<uint8_t> fl;
  std::vector<size_t> off;  // byte offset of each code point; off[n] = text size
};

Cps decode(std::string_view text) {
  Cps c;
  c.cp.reserve(text.size());
  c.fl.reserve(text.size());
  c.off.reserve(text.size() + 1);
  size_t i = 0;
  while (i < text.size()) {
    c.off.push_back(i);
    uint32_t cp = next_cp(text, i);
    uint8_t f = 0;
    if (cp != kInvalidCp) {
      switch (char_class(cp)) {
        case CharClass::Letter: f = kL; break;
        case CharClass::Number: f = kN; break;
        case CharClass::Punct: f = kP; break;
        default: break;
      }
      if (is_whitespace(cp)) f |= kWs;
      if (cp == '\r' || cp == '\n') f |= kNl;
    }
    c.cp.push_back(cp);
    c.fl.push_back(f);
  }
  c.off.push_back(text.size());
  return c;
}

inline bool other(uint8_t f) { return (f & (kL | kN | kWs)) == 0; }  // [^\s\p{L}\p{N}]

inline uint32_t lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

// 's|'t|'re|'ve|'m|'ll|'d (case-insensitive when ci)
size_t contraction(const Cps& t, size_t p, size_t end, bool ci) {
  if (t.cp[p] != '\'' || p + 1 >= end) return 0;
  auto ch = [&](size_t k) { return ci ? lower_ascii(t.cp[k]) : t.cp[k]; };
  uint32_t a = ch(p + 1);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (p + 2 < end) {
    uint32_t b = ch(p + 2);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  }
  return 0;
}

template <class Pred>
size_t run(const Cps& t, size_t p, size_t end, Pred pred) {
  size_t q = p;
  while (q < end && pred(t.fl[q])) ++q;
  return q - p;
}

// \s+(?!\S)|\s+ at a whitespace character.
size_t ws_tail(const Cps& t, size_t p, size_t end) {
  size_t n = run(t, p, end, [](uint8_t f) { return (f & kWs) != 0; });
  if (p + n == end) return n;
  return n >= 2 ? n - 1 : 1;
}

size_t match_gpt2(const Cps& t, size_t p, size_t end) {
  if (size_t m = contraction(t, p, end, false)) return m;
  const uint8_t f = t.fl[p];
  size_t s = 0;  // optional leading space
  uint8_t g = f;
  if (t.cp[p] == ' ' && p + 1 < end) {
    uint8_t h = t.fl[p + 1];
    if ((h & kL) || (h & kN) || other(h)) s = 1, g = h;
  }
  if (g & kL) return s + run(t, p + s, end, [](uint8_t x) { return (x & kL) != 0; });
  if (g & kN) return s + run(t, p + s, end, [](uint8_t x) { return (x & kN) != 0; });
  if (other(g)) return s + run(t, p + s, end, other);
  return ws_tail(t, p, end);
}

size_t match_llama3(const Cps& t, size_t p, size_t end, size_t max_digits) {
  if (size_t m = contraction(t, p, end, true)) return m;
  const uint8_t f = t.fl[p];
  auto letters = [](uint8_t x) { return (x & kL) != 0; };
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (f & kL) return run(t, p, end, letters);
  if (!(f & (kNl | kN)) && p + 1 < end && (t.fl[p + 1] & kL)) return 1 + run(t, p + 1, end, letters);
  // \p{N}{1,3}
  if (f & kN) {
    size_t n = run(t, p, end, [](uint8_t x) { return (x & kN) != 0; });
    return n < max_digits ? n : max_digits;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  size_t s = (t.cp[p] == ' ' && p + 1 < end && other(t.fl[p + 1])) ? 1 : 0;
  if (s || other(f)) {
    size_t q = p + s;
    q += run(t, q, end, other);
    q += run(t, q, end, [](uint8_t x) { return (x & kNl) != 0; });
    return q - p;
  }
  // whitespace: \s*[\r\n]+ (up to and including the run's last newline), else \s+(?!\S)|\s+
  size_t n = run(t, p, end, [](uint8_t x) { return (x & kWs) != 0; });
  for (size_t k = p + n; k > p; --k)
    if (t.fl[k - 1] & kNl) return k - p;
  return ws_tail(t, p, end);
}

size_t match(SplitRegex r, const Cps& t, size_t p, size_t end) {
  const uint8_t f = t.fl[p];
  switch (r) {
    case SplitRegex::Gpt2: return match_gpt2(t, p, end);
    case SplitRegex::Llama3: return match_llama3(t, p, end, 3);
    case SplitRegex::Qwen2: return match_llama3(t, p, end, 1);
    case SplitRegex::NumberEach: return (f & kN) ? 1 : 0;
    case SplitRegex::NumberRun: return run(t, p, end, [](uint8_t x) { return (x & kN) != 0; });
    case SplitRegex::AsciiDigits3: {
      if (p + 3 > end) return 0;
      for (size_t k = p; k < p + 3; ++k)
        if (t.cp[k] < '0' || t.cp[k] > '9') return 0;
      return 3;
    }
    case SplitRegex::PunctRun: {
      size_t q = p;
      while (q < end) {
        uint32_t c = t.cp[q];
        if (!(t.fl[q] & kP) && c != '$' && c != '+' && c != '<' && c != '=' && c != '>' && c != '^' && c != '~' &&
            c != '|')
          break;
        ++q;
      }
      return q - p;
    }
  }
  return 0;
}

}  // namespace

PreTokenizerConfig pre_config_for(const std::string& pre, const std::string& source) {
  using R = SplitRegex;
  PreTokenizerConfig c;
  if (pre.empty() || pre == "default") {
    c.regexes = {R::PunctRun, R::Gpt2, R::NumberRun, R::AsciiDigits3};
  } else if (pre == "llama3" || pre == "llama-v3" || pre == "llama-bpe" || pre == "falcon3" || pre == "pixtral") {
    c.regexes = {R::Llama3};
    c.ignore_merges = true;
  } else if (pre == "dbrx" || pre == "smaug-bpe") {
    c.regexes = {R::Llama3};
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "stablelm2") {
    c.regexes = {R::Qwen2};
  } else if (pre == "gpt-2" || pre == "gpt2" || pre == "phi-2" || pre == "mpt" || pre == "olmo" ||
             pre == "jina-es" || pre == "jina-de" || pre == "jina-v1-en" || pre == "jina-v2-es" ||
             pre == "jina-v2-de" || pre == "jina-v2-code" || pre == "roberta-bpe" || pre == "gigachat") {
    c.regexes = {R::Gpt2};
  } else if (pre == "starcoder" || pre == "smollm" || pre == "refact" || pre == "command-r" || pre == "codeshell" ||
             pre == "exaone" || pre == "minerva-7b") {
    c.regexes = {R::NumberEach, R::Gpt2};
  } else {
    fail(source, "tokenizer.ggml.pre",
         "unsupported pre-tokenizer \"" + pre +
             "\" (supported: default, gpt-2, llama3/llama-bpe, qwen2, smollm/starcoder and their aliases)");
  }
  return c;
}

std::string pre_name_for(std::span<const SplitRegex> regexes, bool ignore_merges) {
  // One name per distinct behaviour of pre_config_for (the first of its aliases llama.cpp's converter writes).
  for (const char* name : {"llama-bpe", "smaug-bpe", "qwen2", "gpt-2", "smollm"}) {
    const PreTokenizerConfig c = pre_config_for(name, "");
    if (c.ignore_merges == ignore_merges &&
        std::equal(c.regexes.begin(), c.regexes.end(), regexes.begin(), regexes.end()))
      return name;
  }
  return "";
}

std::vector<std::string_view> pre_split(std::string_view text, std::span<const SplitRegex> regexes) {
  std::vector<std::string_view> result;
  if (text.empty()) return result;
  const Cps t = decode(text);
  std::vector<std::pair<size_t, size_t>> pieces{{0, t.cp.size()}}, next;
  for (SplitRegex r : regexes) {
    next.clear();
    next.reserve(pieces.size() * 2);
    for (auto [a, b] : pieces) {
      size_t p = a, gap = a;
      while (p < b) {
        size_t m = match(r, t, p, b);
        if (m == 0) {
          ++p;
          continue;
        }
        if (gap < p) next.emplace_back(gap, p);
        next.emplace_back(p, p + m);
        p += m;
        gap = p;
      }
      if (gap < b) next.emplace_back(gap, b);
    }
    pieces.swap(next);
  }
  result.reserve(pieces.size());
  for (auto [a, b] : pieces) result.push_back(text.substr(t.off[a], t.off[b] - t.off[a]));
  return result;
}

bool regex_from_pattern(std::string_view p, SplitRegex& out) {
  static const std::string kContr = "'s|'t|'re|'ve|'m|'ll|'d";
  static const std::string kContrCi1 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
  static const std::string kContrCi2 = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
  static const std::string kGpt2Tail = "| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
  static const std::string kL3Mid = "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|";
  static const std::string kL3Tail = "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  if (p == kContr + kGpt2Tail || p == kContr + kGpt2Tail.substr(0, kGpt2Tail.size() - 4)) {
    out = SplitRegex::Gpt2;
    return true;
  }
  for (const std::string* c : {&kContrCi1, &kContrCi2}) {
    if (p == *c + kL3Mid + "\\p{N}{1,3}" + kL3Tail) {
      out = SplitRegex::Llama3;
      return true;
    }
    if (p == *c + kL3Mid + "\\p{N}" + kL3Tail) {
      out = SplitRegex::Qwen2;
      return true;
    }
  }
  if (p == "\\p{N}") {
    out = SplitRegex::NumberEach;
    return true;
  }
  if (p == "\\p{N}+") {
    out = SplitRegex::NumberRun;
    return true;
  }
  return false;
}

}  // namespace lowbit::tok
