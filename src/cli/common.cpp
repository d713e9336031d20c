#include "cli/common.h"

#include <algorithm>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "lowbit/error.h"

namespace lowbit::cli {

Loaded load(const std::string& model_path, const std::string& tokenizer_path) {
  Loaded m;
  LoadOptions o;
  o.tokenizer_path = tokenizer_path;
  m.file = load_model(model_path, o);
  if (m.file->tokenizer.model != "none") m.tok = make_tokenizer(m.file->tokenizer);
  return m;
}

const Tokenizer& need_tokenizer(const Loaded& m) {
  if (!m.tok)
    fail(m.file->path, "tokenizer",
         "the model has no tokenizer (llama2.c checkpoints need --tokenizer tokenizer.bin)");
  return *m.tok;
}

int64_t first_invalid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
    else return static_cast<int64_t>(i);
    if (i + len > n) return static_cast<int64_t>(i);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return static_cast<int64_t>(i);
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return static_cast<int64_t>(i);
    i += len;
  }
  return -1;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "", "cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (int64_t bad = first_invalid_utf8(s); bad >= 0)
    fail_at(path, "text", bad, "invalid UTF-8 (expected a UTF-8 text file)");
  return s;
}

int64_t window_count(const std::string& file, size_t n_tokens, int ctx, int chunks) {
  const int64_t avail = static_cast<int64_t>(n_tokens) / std::max(ctx, 1);
  const int64_t n = chunks > 0 ? std::min<int64_t>(chunks, avail) : avail;
  if (n < 1)
    fail(file, "text", "has " + std::to_string(n_tokens) + " tokens; at least " + std::to_string(ctx) +
                           " are needed for one window of --ctx " + std::to_string(ctx));
  return n;
}

void print_json(const nlohmann::json& j) {
  std::string s = j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace lowbit::cli
