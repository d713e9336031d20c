#include "tokenizer/unicode.h"

#include <algorithm>
#include <array>

namespace lowbit::tok {

namespace {
#include "tokenizer/unicode_tables.inc"

struct Latin1Classes {
  std::array<uint8_t, 256> cls{};
  Latin1Classes() {
    for (uint32_t c = 0; c < 256; ++c) {
      auto it = std::upper_bound(std::begin(kUnicodeClassRuns), std::end(kUnicodeClassRuns), (c << 8) | 0xFFu);
      cls[c] = static_cast<uint8_t>(*(it - 1) & 0xFFu);
    }
  }
};
const Latin1Classes kLatin1;

struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> from_cp{};  // every mapped code point is < 324
  ByteMap() {
    from_cp.fill(-1);
    // Printable bytes map to themselves; the others, in order, to 256, 257, ...
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_cp[b] = printable ? b : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteMap kByteMap;
}  // namespace

const char* unicode_version() { return LOWBIT_UNICODE_VERSION; }

CharClass char_class(uint32_t cp) {
  if (cp < 256) return static_cast<CharClass>(kLatin1.cls[cp]);
  if (cp > 0x10FFFF) return CharClass::Other;
  auto it = std::upper_bound(std::begin(kUnicodeClassRuns), std::end(kUnicodeClassRuns), (cp << 8) | 0xFFu);
  return static_cast<CharClass>(*(it - 1) & 0xFFu);
}

bool is_whitespace(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

uint32_t next_cp(std::string_view s, size_t& i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  unsigned char c = p[i];
  if (c < 0x80) {
    ++i;
    return c;
  }
  size_t len = utf8_seq_len(c);
  if (len == 1 || i + len > n) {
    ++i;
    return kInvalidCp;
  }
  uint32_t cp = c & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    unsigned char d = p[i + k];
    if ((d & 0xC0) != 0x80) {
      ++i;
      return kInvalidCp;
    }
    cp = (cp << 6) | (d & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
    ++i;
    return kInvalidCp;
  }
  i += len;
  return cp;
}

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t at = i;
    if (next_cp(s, i) == kInvalidCp) return at;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

uint32_t byte_to_cp(uint8_t b) { return kByteMap.to_cp[b]; }

int cp_to_byte(uint32_t cp) { return cp < kByteMap.from_cp.size() ? kByteMap.from_cp[cp] : -1; }

std::string bytes_to_unicode(std::string_view s) {
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) append_utf8(out, byte_to_cp(static_cast<uint8_t>(c)));
  return out;
}

std::string unicode_to_bytes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    uint32_t cp = next_cp(s, i);
    int b = cp == kInvalidCp ? -1 : cp_to_byte(cp);
    if (b >= 0)
      out.push_back(static_cast<char>(b));
    else
      out.append(s.substr(start, i - start));
  }
  return out;
}

}  // namespace lowbit::tok
