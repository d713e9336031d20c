// lowbit formats: the partial-block and row helpers, and the name -> Format registry.
#include <algorithm>
#include <string>
#include <vector>

#include "formats/format.h"
#include "formats/ggml.h"
#include "formats/intn.h"
#include "lowbit/error.h"

namespace lowbit::formats {

namespace {
void check_partial(const Format& f, size_t n, const char* what) {
  if (n == 0 || n > static_cast<size_t>(f.block()))
    fail("", "format", f.name() + ": " + what + " got " + std::to_string(n) + " weights (expected 1.." +
                           std::to_string(f.block()) + ")");
}
}  // namespace

BlockParams fit_block(const Format& f, std::span<const float> w, std::span<const float> importance) {
  check_partial(f, w.size(), "fit_block");
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", f.name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                           std::to_string(w.size()) + " weights");
  const size_t g = static_cast<size_t>(f.block());
  if (w.size() == g) return f.fit(w, importance);
  std::vector<float> wp(g, 0.0f), ip(g, 0.0f);  // padding: zero weight, zero importance
  std::copy(w.begin(), w.end(), wp.begin());
  if (importance.empty())
    std::fill_n(ip.begin(), w.size(), 1.0f);
  else
    std::copy(importance.begin(), importance.end(), ip.begin());
  return f.fit(wp, ip);
}

void encode_block(const Format& f, std::span<const float> w, const BlockParams& p, std::byte* out) {
  check_partial(f, w.size(), "encode_block");
  const size_t g = static_cast<size_t>(f.block());
  if (w.size() == g) return f.encode(w, p, out);
  std::vector<float> wp(g, 0.0f);
  std::copy(w.begin(), w.end(), wp.begin());
  f.encode(wp, p, out);
}

void decode_block(const Format& f, const std::byte* in, std::span<float> out) {
  check_partial(f, out.size(), "decode_block");
  const size_t g = static_cast<size_t>(f.block());
  if (out.size() == g) return f.decode(in, out);
  std::vector<float> full(g);
  f.decode(in, full);
  std::copy_n(full.begin(), out.size(), out.begin());
}

float dot_block(const Format& f, const std::byte* in, std::span<const float> x) {
  check_partial(f, x.size(), "dot_block");
  const size_t g = static_cast<size_t>(f.block());
  if (x.size() == g) return f.dot(in, x.data());
  std::vector<float> xp(g, 0.0f);  // the padding weights meet zero activations
  std::copy(x.begin(), x.end(), xp.begin());
  return f.dot(in, xp.data());
}

void Format::fit_row(std::span<const float> w, std::span<const float> importance, std::span<BlockParams> out) const {
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                           std::to_string(w.size()) + " weights");
  const size_t g = static_cast<size_t>(block());
  const int64_t nb = row_blocks(*this, static_cast<int64_t>(w.size()));
  if (out.size() != static_cast<size_t>(nb))
    fail("", "format", name() + ": fit_row needs " + std::to_string(nb) + " params, got " + std::to_string(out.size()));
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * g, len = std::min(g, w.size() - off);
    out[static_cast<size_t>(b)] =
        fit_block(*this, w.subspan(off, len), importance.empty() ? importance : importance.subspan(off, len));
  }
}

int64_t row_blocks(const Format& f, int64_t n) {
  if (n < 0) fail("", "format", f.name() + ": negative row length " + std::to_string(n));
  return (n + f.block() - 1) / f.block();
}

size_t row_bytes(const Format& f, int64_t n) { return static_cast<size_t>(row_blocks(f, n)) * f.block_bytes(); }

void encode_row(const Format& f, std::span<const float> w, std::span<const float> importance, std::byte* out) {
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", f.name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                           std::to_string(w.size()) + " weights");
  const size_t g = static_cast<size_t>(f.block());
  const int64_t nb = row_blocks(f, static_cast<int64_t>(w.size()));
  std::vector<BlockParams> params(static_cast<size_t>(nb));
  f.fit_row(w, importance, params);
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * g, len = std::min(g, w.size() - off);
    encode_block(f, w.subspan(off, len), params[static_cast<size_t>(b)], out + b * f.block_bytes());
  }
}

void decode_row(const Format& f, const std::byte* in, std::span<float> out) {
  const size_t g = static_cast<size_t>(f.block());
  const int64_t nb = row_blocks(f, static_cast<int64_t>(out.size()));
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * g;
    decode_block(f, in + b * f.block_bytes(), out.subspan(off, std::min(g, out.size() - off)));
  }
}

float dot_row(const Format& f, const std::byte* in, std::span<const float> x) {
  const size_t g = static_cast<size_t>(f.block());
  const int64_t nb = row_blocks(f, static_cast<int64_t>(x.size()));
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const size_t off = static_cast<size_t>(b) * g;
    acc += dot_block(f, in + b * f.block_bytes(), x.subspan(off, std::min(g, x.size() - off)));
  }
  return acc;
}

std::unique_ptr<Format> make_format(std::string_view name) {
  // llama.cpp's block types by ggml's name ("q4_K", "Q8_0", "iq4_xs"), else lowbit's own intN.
  if (auto t = dtype_from_name(name); t && ggml_encodable(*t)) return make_ggml_format(*t);
  if (name.rfind("int", 0) == 0) return make_intn_format(name);
  fail("", "format",
       "unknown format '" + std::string(name) +
           "' (expected int{2..8}g{32,64,128}{s,a}, or a llama.cpp type: q8_0 q4_0 q4_1 q5_0 q5_1 q2_K q3_K q4_K q5_K "
           "q6_K iq4_nl iq4_xs)");
}

}  // namespace lowbit::formats
