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
// fit(w, importance) searches candidate steps (and mins) for the smallest error sum_i e_i (w_i - value_i)^2 with
// e_i = importance_i * sqrt(sigma2 + w_i^2), sigma2 = 2 * mean(w^2); the plain fit is one candidate, so the search
// is never worse than it under that error. The other candidates are fp16-exact, so their codes are nearest-level
// picks on the stored grid.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_common.h"
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
float half_round(float v) { return f16_to_f32(half_bits(v)); }

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
  BlockParams fit_weighted(std::span<const float> w, std::span<const float> importance) const;
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
  return r;
}

int LegacyFormat::code_of(float w, const Resolved& r) const {
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

BlockParams LegacyFormat::fit_weighted(std::span<const float> w, std::span<const float> importance) const {
  BlockParams best = fit_plain(w);
  std::array<double, kBlock> e{};
  double sumsq = 0.0, esum = 0.0;
  for (int i = 0; i < kBlock; ++i) sumsq += static_cast<double>(w[i]) * w[i];
  const double sigma2 = 2.0 * sumsq / kBlock;
  for (int i = 0; i < kBlock; ++i) {
    const double imp = std::max(0.0f, importance[i]);  // negative or NaN importance counts as 0
    e[i] = imp * std::sqrt(sigma2 + static_cast<double>(w[i]) * w[i]);
    esum += e[i];
  }
  if (!(esum > 0.0) || !std::isfinite(esum)) return best;  // no usable importance: the plain fit

  std::array<int, kBlock> codes{};
  auto error = [&](const BlockParams& p, bool keep_codes) {
    const Resolved r = resolve(p);
    double err = 0.0;
    for (int i = 0; i < kBlock; ++i) {
      const int q = code_of(w[i], r);
      if (keep_codes) codes[i] = q;
      const double diff = static_cast<double>(w[i]) - value_of(q, r.D, r.M);
      err += e[i] * diff * diff;
    }
    return err;
  };
  double best_err = error(best, false);
  auto consider = [&](float d, float m) {
    if (!std::isfinite(d) || !std::isfinite(m) || std::fabs(d) > 65504.0f || std::fabs(m) > 65504.0f) return;
    BlockParams c;
    c.scale = half_round(d);
    if (s_.has_min) c.sub_mins = {half_round(m)};
    const double err = error(c, false);
    if (err < best_err) best_err = err, best = std::move(c);
  };

  float lo = w[0], hi = w[0], amax = 0.0f, vmax = 0.0f;
  for (float v : w) {
    lo = std::min(lo, v), hi = std::max(hi, v);
    if (std::fabs(v) > amax) amax = std::fabs(v), vmax = v;
  }
  if (s_.has_min) {
    // Trim up to 20% of the range from either end.
    const float range = hi - lo;
    if (!(range > 0.0f)) return best;
    constexpr int kSteps = 8;
    constexpr float kStep = 0.025f;
    for (int a = 0; a <= kSteps; ++a)
      for (int b = 0; b <= kSteps; ++b) {
        const float l = lo + range * kStep * static_cast<float>(a);
        const float h = hi - range * kStep * static_cast<float>(b);
        if (h > l) consider((h - l) / static_cast<float>(top_), l);
      }
  } else {
    if (!(amax > 0.0f)) return best;
    // Map the largest weight to the far end of the code range or to the near end, shrunk by 0..40%.
    const float neg_end = static_cast<float>(s_.kind == Kind::Q8_0 ? 127 : off_);
    const float pos_end = static_cast<float>(s_.kind == Kind::Q8_0 ? 127 : off_ - 1);
    const float ends[2] = {vmax / -neg_end, vmax / pos_end};
    const int steps = s_.kind == Kind::Q8_0 ? 10 : 24;
    const float shrink = s_.kind == Kind::Q8_0 ? 0.10f : 0.40f;
    for (float d0 : ends)
      for (int k = 0; k <= steps; ++k)
        consider(d0 * (1.0f - shrink * static_cast<float>(k) / static_cast<float>(steps)), 0.0f);
  }

  // Refine: the weighted least-squares step (and min) for the best candidate's codes, a few rounds.
  for (int pass = 0; pass < 3; ++pass) {
    error(best, true);
    double s0 = 0, s1 = 0, s2 = 0, sx = 0, sxq = 0;
    for (int i = 0; i < kBlock; ++i) {
      const double q = static_cast<double>(codes[i] - off_);
      s0 += e[i], s1 += e[i] * q, s2 += e[i] * q * q, sx += e[i] * w[i], sxq += e[i] * w[i] * q;
    }
    const double before = best_err;
    if (s_.has_min) {
      const double det = s0 * s2 - s1 * s1;
      if (!(det > 0.0)) break;
      const double d = (s0 * sxq - s1 * sx) / det, m = (s2 * sx - s1 * sxq) / det;
      if (d > 0.0) consider(static_cast<float>(d), static_cast<float>(m));
    } else {
      if (!(s2 > 0.0)) break;
      consider(static_cast<float>(sxq / s2), 0.0f);
    }
    if (!(best_err < before)) break;
  }
  return best;
}

BlockParams LegacyFormat::fit(std::span<const float> w, std::span<const float> importance) const {
  check_block(w.size(), "fit");
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                           std::to_string(w.size()) + " weights");
  for (float v : w)
    if (!std::isfinite(v)) fail("", "format", name() + ": fit got a non-finite weight");
  return importance.empty() ? fit_plain(w) : fit_weighted(w, importance);
}

float LegacyFormat::round(float w, const BlockParams& p, int /*index_in_block*/) const {
  const Resolved r = resolve(p);
  return value_of(code_of(w, r), r.D, r.M);
}

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
