// lowbit formats: ggml's legacy 32-weight block types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (see ggml.h for the contract).
//
// Layouts (little-endian; d and m are IEEE half):
//   q8_0  34 B: d | int8 q[32]                   value d * q
//   q4_0  18 B: d | 16 B nibbles                 value d * (q - 8)
//   q4_1  20 B: d | m | 16 B nibbles             value d * q + m
//   q5_0  22 B: d | qh u32 | 16 B nibbles        value d * (q - 16)
//   q5_1  24 B: d | m | qh u32 | 16 B nibbles    value d * q + m
// Nibble byte j holds q[j] in its low and q[j + 16] in its high half; for the 5-bit types those nibbles are the
// low 4 bits and bit j of qh is bit 4 of q[j].
//
// BlockParams: scale = the block's step d as a float, before fp16 rounding; for q4_1 / q5_1 sub_mins = {m}, also
// unrounded (an empty sub_mins means m = 0). The block stores fp16(d) (and fp16(m)); codes are picked from the
// unrounded values exactly as llama.cpp's reference quantizer does, with id = 1/d (0 when d == 0):
//   q8_0        q = round-half-away-from-zero(w * id)
//   q4_0 q5_0   q = trunc(w * id + off + 0.5)           off = 8, 16
//   q4_1 q5_1   q = trunc((w - m) * id + 0.5)
// then clamped to the code range (llama.cpp's own weights never need the clamp; GPTQ's updated weights may).
//
// fit(w, {}) is llama.cpp's quantize_row_<type>_ref: q8_0 d = amax / 127; q4_0 / q5_0 d = v / -off where v is the
// weight of largest magnitude (its sign kept, the first one on ties); q4_1 / q5_1 m = min, d = (max - min) / nmax.
// fit(w, importance) is llama.cpp's importance-weighted quantizer (quantize_row_<type>_impl, what llama-quantize
// --imatrix runs; byte-identical, checked against ../shared/reference/imatrix), with error weights
// e_i = importance_i * sqrt(sigma2 + w_i^2):
//   q4_0 q5_0  the signed search (make_qx_quants, 19 trial steps around max / nmax, nmax = 8, 16): the block stores
//              fp16 of the least-squares step of the best trial; its codes are nearest(inv * w) clamped to
//              [-nmax, nmax - 1], + nmax, with inv the best trial's inverse step (an all-zero block: codes 0).
//   q4_1 q5_1  the affine search (make_qkx3_quants, 37 trial steps, min <= 0): stores fp16 of the least-squares
//              step and min; codes nearest(inv * (w - lo)) clamped to [0, nmax], inv and lo of the best trial.
//   q8_0       llama.cpp ignores the importance (quantize_q8_0 never reads it): the plain fit.
// llama.cpp takes sigma2 = mean(w^2) over the whole row: fit_row does too; fit() of a lone block (GPTQ's fits)
// over the block. Because the stored step is not the one the codes came from, these params carry the trial's
// inverse step (and min) in sub_scales = {inv} or {inv, lo}; plain params have no sub_scales. An importance that
// is zero over a whole block gets the plain fit (llama.cpp's would set that block's step to 0), and so do weights
// so large that the error weights overflow (llama.cpp's would store NaN).
#include <algorithm>
#include <array>
#include <cstddef>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_common.h"
#include "formats/ggml_search.h"
#include "lowbit/error.h"

namespace lowbit::formats {

namespace {

using ggml_detail::load_u16;
using ggml_detail::store_u16;

constexpr int kBlock = 32;

uint32_t load_u32(const std::byte* p) {
  uint32_t v = 0;
  for (int k = 0; k < 4; ++k) v |= static_cast<uint32_t>(p[k]) << (8 * k);
  return v;
}
void store_u32(std::byte* p, uint32_t v) {
  for (int k = 0; k < 4; ++k) p[k] = static_cast<std::byte>((v >> (8 * k)) & 0xff);
}

// fp16 bits of v, round to nearest even (as ggml), but saturating at +-65504 instead of overflowing to infinity.
uint16_t half_bits(float v) {
  constexpr float kMax = 65504.0f;
  if (v > kMax) v = kMax;
  if (v < -kMax) v = -kMax;
  return f32_to_f16(v);
}

// Truncates t toward zero and clamps to [0, top]; NaN gives 0. Equals llama.cpp's (int8_t) cast wherever the
// cast is defined and lands in range.
inline int trunc_code(float t, int top) {
  if (!(t >= 0.0f)) return 0;
  if (t >= static_cast<float>(top)) return top;
  return static_cast<int>(t);
}

enum class Kind { Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 };

struct Spec {
  Kind kind;
  DType dtype;
  const char* name;
  int bits;       // code bits
  bool has_min;   // d * q + m instead of d * (q - off)
  size_t bytes;   // block bytes
};

constexpr Spec kSpecs[] = {
    {Kind::Q8_0, DType::Q8_0, "q8_0", 8, false, 34},
    {Kind::Q4_0, DType::Q4_0, "q4_0", 4, false, 18},
    {Kind::Q4_1, DType::Q4_1, "q4_1", 4, true, 20},
    {Kind::Q5_0, DType::Q5_0, "q5_0", 5, false, 22},
    {Kind::Q5_1, DType::Q5_1, "q5_1", 5, true, 24},
};

// Everything the code picking and the decoding need, derived from BlockParams.
struct Resolved {
  float id;  // 1/d, or 0
  float m;   // unrounded min (asymmetric types)
  float D;   // stored step fp16(d)
  float M;   // stored min fp16(m)
  uint16_t d_bits, m_bits;
  bool weighted;  // codes from the weighted search's rule (below) instead of from d
  ggml_detail::CodeRule rule;
};

class LegacyFormat final : public GgmlFormat {
 public:
  explicit LegacyFormat(const Spec& s)
      : s_(s),
        top_(s.kind == Kind::Q8_0 ? 127 : (1 << s.bits) - 1),
        off_(s.has_min || s.kind == Kind::Q8_0 ? 0 : 1 << (s.bits - 1)) {}

  std::string name() const override { return s_.name; }
  int block() const override { return kBlock; }
  size_t block_bytes() const override { return s_.bytes; }
  DType dtype() const override { return s_.dtype; }

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override;
  void fit_row(std::span<const float> w, std::span<const float> importance,
               std::span<BlockParams> out) const override;
  float round(float w, const BlockParams& p, int index_in_block) const override;
  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override;
  void decode(const std::byte* in, std::span<float> out) const override;
  float dot(const std::byte* in, const float* x) const override;

 private:
  Resolved resolve(const BlockParams& p) const;
  int code_of(float w, const Resolved& r) const;
  // The decoded value of code q (the same float operations as ggml's dequantization).
  float value_of(int q, float D, float M) const {
    if (s_.has_min) return static_cast<float>(q) * D + M;
    return static_cast<float>(q - off_) * D;
  }
  BlockParams fit_plain(std::span<const float> w) const;
  // The weighted fit with llama.cpp's sigma2 given (the row's or the block's mean square); nullopt when the
  // importance is zero over the whole block.
  std::optional<BlockParams> fit_weighted(std::span<const float> w, std::span<const float> importance,
                                          float sigma2) const;
  bool uses_importance() const { return s_.kind != Kind::Q8_0; }
  void check_block(size_t n, const char* what) const {
    if (n != static_cast<size_t>(kBlock))
      fail("", "format", name() + ": " + what + " got " + std::to_string(n) + " weights for a block of 32");
  }

  Spec s_;
  int top_;  // largest code (q8_0: 127, codes run from -128)
  int off_;  // the code of 0.0 for q4_0 / q5_0
};

Resolved LegacyFormat::resolve(const BlockParams& p) const {
  Resolved r{};
  const float d = p.scale;
  r.id = d != 0.0f ? 1.0f / d : 0.0f;
  r.d_bits = half_bits(d);
  r.D = f16_to_f32(r.d_bits);
  if (s_.has_min) {
    r.m = p.sub_mins.empty() ? 0.0f : p.sub_mins[0];
    r.m_bits = half_bits(r.m);
    r.M = f16_to_f32(r.m_bits);
  }
  r.weighted = !p.sub_scales.empty() && uses_importance();
  if (r.weighted) r.rule = {p.sub_scales[0], p.sub_scales.size() > 1 ? p.sub_scales[1] : 0.0f};
  return r;
}

int LegacyFormat::code_of(float w, const Resolved& r) const {
  if (r.weighted) {
    if (s_.has_min) return ggml_detail::nearest_in(r.rule.inv * (w - r.rule.lo), 0, top_);
    if (r.rule.inv == 0.0f) return 0;  // an all-zero block: the search's codes are 0
    return ggml_detail::nearest_in(r.rule.inv * w, -off_, off_ - 1) + off_;
  }
  switch (s_.kind) {
    case Kind::Q8_0: {
      const float q = std::round(w * r.id);  // roundf: halves away from zero
      if (!(q >= -128.0f)) return q < 0.0f ? -128 : 0;  // below range, or NaN
      return q > 127.0f ? 127 : static_cast<int>(q);
    }
    case Kind::Q4_0:
    case Kind::Q5_0: {
      const float x = w * r.id;
      return trunc_code(x + (static_cast<float>(off_) + 0.5f), top_);
    }
    case Kind::Q4_1:
    case Kind::Q5_1: {
      const float x = (w - r.m) * r.id;
      return trunc_code(x + 0.5f, top_);
    }
  }
  return 0;
}

BlockParams LegacyFormat::fit_plain(std::span<const float> w) const {
  BlockParams p;
  switch (s_.kind) {
    case Kind::Q8_0: {
      float amax = 0.0f;
      for (float v : w) amax = std::max(amax, std::fabs(v));
      p.scale = amax / 127;
      break;
    }
    case Kind::Q4_0:
    case Kind::Q5_0: {
      const float vmax = ggml_detail::largest_magnitude(w).value;  // the first one, sign kept
      p.scale = vmax / static_cast<float>(-off_);
      break;
    }
    case Kind::Q4_1:
    case Kind::Q5_1: {
      float lo = w[0], hi = w[0];
      for (float v : w) lo = std::min(lo, v), hi = std::max(hi, v);
      p.scale = (hi - lo) / static_cast<float>(top_);
      p.sub_mins = {lo};
      break;
    }
  }
  return p;
}

std::optional<BlockParams> LegacyFormat::fit_weighted(std::span<const float> w, std::span<const float> importance,
                                                      float sigma2) const {
  std::array<float, kBlock> e{};
  bool any = false;
  for (int i = 0; i < kBlock; ++i) {
    const float imp = importance[i] > 0.0f ? importance[i] : 0.0f;  // negative or NaN importance counts as 0
    e[i] = imp * std::sqrt(sigma2 + w[i] * w[i]);
    any = any || imp > 0.0f;
  }
  if (!any) return std::nullopt;
  // Weights near the float limit overflow sigma2 and the error weights (llama.cpp would store NaN): the plain fit.
  for (float v : e)
    if (!std::isfinite(v)) return std::nullopt;
  BlockParams p;
  ggml_detail::CodeRule rule;
  if (s_.has_min) {
    std::array<uint8_t, kBlock> L{};
    float the_min = 0.0f;
    p.scale = ggml_detail::search_affine(kBlock, top_, w.data(), e.data(), L.data(), the_min, -0.9f, 0.05f, 36, false,
                                         &rule);
    p.sub_mins = {-the_min};
    p.sub_scales = {rule.inv, rule.lo};
  } else {
    std::array<int8_t, kBlock> L{};
    p.scale = ggml_detail::search_signed(kBlock, off_, w.data(), e.data(), L.data(), &rule);
    p.sub_scales = {rule.inv};
  }
  if (!std::isfinite(p.scale) || (s_.has_min && !std::isfinite(p.sub_mins[0]))) return std::nullopt;
  return p;
}

BlockParams LegacyFormat::fit(std::span<const float> w, std::span<const float> importance) const {
  check_block(w.size(), "fit");
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                           std::to_string(w.size()) + " weights");
  for (float v : w)
    if (!std::isfinite(v)) fail("", "format", name() + ": fit got a non-finite weight");
  if (importance.empty() || !uses_importance()) return fit_plain(w);
  float sum_x2 = 0.0f;
  for (float v : w) sum_x2 += v * v;
  auto p = fit_weighted(w, importance, sum_x2 / kBlock);
  return p ? std::move(*p) : fit_plain(w);
}

void LegacyFormat::fit_row(std::span<const float> w, std::span<const float> importance,
                           std::span<BlockParams> out) const {
  if (importance.empty() || !uses_importance() || w.size() % kBlock != 0) return Format::fit_row(w, importance, out);
  if (importance.size() != w.size() || out.size() != w.size() / kBlock)
    fail("", "format", name() + ": fit_row got " + std::to_string(w.size()) + " weights, " +
                           std::to_string(importance.size()) + " importances and " + std::to_string(out.size()) +
                           " params");
  for (float v : w)
    if (!std::isfinite(v)) fail("", "format", name() + ": fit got a non-finite weight");
  // llama.cpp's sigma2: the mean square of the whole row, summed in order in float.
  float sum_x2 = 0.0f;
  for (float v : w) sum_x2 += v * v;
  const float sigma2 = sum_x2 / static_cast<float>(w.size());
  for (size_t b = 0; b < out.size(); ++b) {
    const auto wb = w.subspan(b * kBlock, kBlock);
    auto p = fit_weighted(wb, importance.subspan(b * kBlock, kBlock), sigma2);
    out[b] = p ? std::move(*p) : fit_plain(wb);
  }
}

float LegacyFormat::round(float w, const BlockParams& p, int /*index_in_block*/) const {
  const Resolved r = resolve(p);
  return value_of(code_of(w, r), r.D, r.M);
}

// encode / decode walk the layout field by field: d, then m (has_min), then qh (5-bit), then the codes.
static_assert(offsetof(blocks::Q4_0, qs) == 2 && offsetof(blocks::Q8_0, qs) == 2);
static_assert(offsetof(blocks::Q4_1, m) == 2 && offsetof(blocks::Q4_1, qs) == 4);
static_assert(offsetof(blocks::Q5_0, qh) == 2 && offsetof(blocks::Q5_0, qs) == 6);
static_assert(offsetof(blocks::Q5_1, m) == 2 && offsetof(blocks::Q5_1, qh) == 4 && offsetof(blocks::Q5_1, qs) == 8);

void LegacyFormat::encode(std::span<const float> w, const BlockParams& p, std::byte* out) const {
  check_block(w.size(), "encode");
  const Resolved r = resolve(p);
  std::array<int, kBlock> q{};
  for (int i = 0; i < kBlock; ++i) q[i] = code_of(w[i], r);
  store_u16(out, r.d_bits);
  std::byte* body = out + 2;
  if (s_.has_min) {
    store_u16(body, r.m_bits);
    body += 2;
  }
  if (s_.kind == Kind::Q8_0) {
    for (int i = 0; i < kBlock; ++i) body[i] = static_cast<std::byte>(static_cast<uint8_t>(static_cast<int8_t>(q[i])));
    return;
  }
  if (s_.bits == 5) {
    uint32_t qh = 0;
    for (int i = 0; i < kBlock; ++i) qh |= static_cast<uint32_t>((q[i] >> 4) & 1) << i;
    store_u32(body, qh);
    body += 4;
  }
  for (int j = 0; j < kBlock / 2; ++j)
    body[j] = static_cast<std::byte>((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
}

void LegacyFormat::decode(const std::byte* in, std::span<float> out) const {
  if (out.size() != static_cast<size_t>(kBlock)) fail("", "format", name() + ": decode needs 32 outputs");
  const float D = f16_to_f32(load_u16(in));
  const std::byte* body = in + 2;
  float M = 0.0f;
  if (s_.has_min) {
    M = f16_to_f32(load_u16(body));
    body += 2;
  }
  if (s_.kind == Kind::Q8_0) {
    for (int i = 0; i < kBlock; ++i) out[i] = static_cast<float>(static_cast<int8_t>(body[i])) * D;
    return;
  }
  uint32_t qh = 0;
  if (s_.bits == 5) {
    qh = load_u32(body);
    body += 4;
  }
  for (int j = 0; j < kBlock / 2; ++j) {
    const unsigned byte = static_cast<unsigned>(body[j]);
    const int lo = static_cast<int>((byte & 0x0f) | (((qh >> j) & 1u) << 4));
    const int hi = static_cast<int>((byte >> 4) | (((qh >> (j + 16)) & 1u) << 4));
    out[j] = value_of(lo, D, M);
    out[j + 16] = value_of(hi, D, M);
  }
}

float LegacyFormat::dot(const std::byte* in, const float* x) const {
  return ggml_detail::dot_by_decode<kBlock>(*this, in, x);
}

}  // namespace

std::unique_ptr<GgmlFormat> make_ggml_legacy_format(DType t) {
  return ggml_detail::make_from_specs<LegacyFormat>(kSpecs, t);
}

}  // namespace lowbit::formats
