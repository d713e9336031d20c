// lowbit formats: the row helpers and the name -> Format registry.
#include <string>

#include "formats/format.h"
#include "formats/intn.h"
#include "lowbit/error.h"

namespace lowbit::formats {

namespace {
void check_row(const Format& f, int64_t n) {
  if (n < 0 || n % f.block() != 0)
    fail("", "format", f.name() + ": row length " + std::to_string(n) + " is not a multiple of the block size " +
                           std::to_string(f.block()));
}
}  // namespace

size_t row_bytes(const Format& f, int64_t n) {
  check_row(f, n);
  return static_cast<size_t>(n / f.block()) * f.block_bytes();
}

void encode_row(const Format& f, std::span<const float> w, std::span<const float> importance, std::byte* out) {
  const int64_t n = static_cast<int64_t>(w.size());
  check_row(f, n);
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", f.name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                           std::to_string(w.size()) + " weights");
  const size_t g = static_cast<size_t>(f.block());
  for (size_t b = 0; b < w.size() / g; ++b) {
    auto wb = w.subspan(b * g, g);
    auto ib = importance.empty() ? std::span<const float>() : importance.subspan(b * g, g);
    BlockParams p = f.fit(wb, ib);
    f.encode(wb, p, out + b * f.block_bytes());
  }
}

void decode_row(const Format& f, const std::byte* in, std::span<float> out) {
  check_row(f, static_cast<int64_t>(out.size()));
  const size_t g = static_cast<size_t>(f.block());
  for (size_t b = 0; b < out.size() / g; ++b) f.decode(in + b * f.block_bytes(), out.subspan(b * g, g));
}

std::unique_ptr<Format> make_format(std::string_view name) { return make_intn_format(name); }

}  // namespace lowbit::formats
