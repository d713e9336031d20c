// Unicode helpers for the tokenizers: UTF-8 decoding, the general-category classes the pre-tokenizer
// regexes use (\p{L}, \p{N}, \p{P}, \s) and GPT-2's byte <-> printable-character mapping.
//
// Categories come from a generated range table (unicode_tables.inc, Unicode 14.0 via Python's unicodedata;
// regenerate with gen_unicode_tables.py). Limits: code points assigned after Unicode 14 count as "other";
// only the four classes below are distinguished (marks, symbols and separators are all "other").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace lowbit::tok {

enum class CharClass : uint8_t { Other = 0, Letter = 1, Number = 2, Punct = 3 };

// Code point used for a byte that is not part of valid UTF-8 (one per such byte). Classed as Other.
inline constexpr uint32_t kInvalidCp = 0xFFFFFFFFu;

CharClass char_class(uint32_t cp);
bool is_whitespace(uint32_t cp);  // Unicode White_Space (what \s matches)
inline bool is_letter(uint32_t cp) { return char_class(cp) == CharClass::Letter; }
inline bool is_number(uint32_t cp) { return char_class(cp) == CharClass::Number; }
const char* unicode_version();

// Length of the UTF-8 sequence a lead byte announces (1 for continuation / invalid bytes, like llama.cpp).
inline size_t utf8_seq_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

// Decodes one code point at s[i], advancing i. Invalid / truncated / overlong / surrogate sequences give
// kInvalidCp and advance by one byte.
uint32_t next_cp(std::string_view s, size_t& i);
// Offset of the first byte that is not valid UTF-8, or npos.
size_t find_invalid_utf8(std::string_view s);
void append_utf8(std::string& out, uint32_t cp);

// GPT-2 byte-level mapping: each byte to a printable code point, and back (-1 when cp is not in the map).
uint32_t byte_to_cp(uint8_t b);
int cp_to_byte(uint32_t cp);
// The UTF-8 of the mapped characters of each byte of s.
std::string bytes_to_unicode(std::string_view s);
// Inverse: mapped characters back to bytes; characters outside the map are kept as their UTF-8.
std::string unicode_to_bytes(std::string_view s);

}  // namespace lowbit::tok
