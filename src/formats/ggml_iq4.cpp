// lowbit formats: ggml's 4-bit non-linear types IQ4_NL and IQ4_XS (see ggml.h for the contract).
//
// A 4-bit code q stands for the level kIq4nlValues[q] (16 int8 levels from -127 to 113, denser near zero) times
// a scale. Layouts (little-endian; d is IEEE half):
//   iq4_nl   32 w,  18 B: d | 16 B nibbles                         value d * kv[q]
//   iq4_xs  256 w, 136 B: d | scales_h u16 | scales_l[4] | qs[128]  value (d * (ls - 32)) * kv[q]
// Nibbles: within each 32-weight (sub-)block s, byte 16 s + j holds q[32 s + j] in its low and q[32 s + 16 + j]
// in its high half. iq4_xs sub-block s (0..7) has a 6-bit scale ls: its low 4 bits are nibble (s % 2) of
// scales_l[s / 2], its high 2 bits are bits 2s, 2s + 1 of scales_h.
//
// fit is llama.cpp's iq4 search (quantize_row_iq4_nl_impl with ntry = 7). Per 32-weight sub-block, with error
// weights e_j = x_j^2 (no importance) or importance_j * sqrt(sigma2 + x_j^2) (sigma2 = 2 * mean(x^2) over the
// block / super-block): codes nearest to x * 127 / vmax (vmax the weight of largest magnitude, sign kept) give a
// least-squares scale sum(e q x) / sum(e q^2); the same is tried with the reciprocal scales (t - 127) / vmax for
// t = -7..7, and the candidate with the largest sum(e q x)^2 / sum(e q^2) wins. A sub-block with every |x| below
// 1e-15 gets scale 0.
//  - iq4_nl: BlockParams.scale = that scale s (unrounded); the block stores fp16(s) and picks codes nearest to
//    x / s (x * (1/s)).
//  - iq4_xs: d = -s_max / 32 where s_max is the sub-block scale of largest magnitude; each sub-block keeps the 6-bit
//    ls = clamp(nearest(s / d), -32, 31) + 32 and picks codes nearest to x / (d * (ls - 32)).
//    BlockParams.scale = d (unrounded), sub_scales = the 8 ls values (integers 0..63).
// "Nearest" is the level search of llama.cpp (ties and float rounding included): below the first level code 0,
// above the last code 15, otherwise the lower neighbour only when strictly closer.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_blocks.h"
#include "lowbit/error.h"

namespace lowbit::formats {

namespace B = blocks;

// The IQ4_NL levels, transcribed from ggml (kvalues_iq4nl in ggml-common.h).
const int8_t kIq4nlValues[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

namespace {

constexpr int kSub = 32;        // weights per scale
constexpr int kSuper = 256;     // iq4_xs super-block
constexpr int kNtry = 7;        // scale trials either side of the start
constexpr float kTiny = 1e-15f;  // a sub-block whose largest |x| is below this gets scale 0

// kIq4nlValues as floats (the same 16 numbers; the decode tests against llama.cpp's output pin them).
struct Levels {
  float v[16];
};
constexpr Levels kLevels = {{-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113}};

uint16_t load_u16(const std::byte* p) {
  return static_cast<uint16_t>(static_cast<unsigned>(p[0]) | (static_cast<unsigned>(p[1]) << 8));
}
void store_u16(std::byte* p, uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xff);
  p[1] = static_cast<std::byte>(v >> 8);
}

// fp16 bits of v, round to nearest even (as ggml), but saturating at +-65504 instead of overflowing to infinity.
uint16_t half_bits(float v) {
  constexpr float kMax = 65504.0f;
  if (v > kMax) v = kMax;
  if (v < -kMax) v = -kMax;
  return f32_to_f16(v);
}

// The code whose level is nearest to x (llama.cpp's rule, see the header comment).
int nearest_level(float x) {
  const float* lv = kLevels.v;
  if (x <= lv[0]) return 0;
  if (x >= lv[15]) return 15;
  int hi = 1;  // first level above x; x lies in [lv[hi - 1], lv[hi])
  while (hi < 15 && x >= lv[hi]) ++hi;
  return x - lv[hi - 1] < lv[hi] - x ? hi - 1 : hi;
}

// Round half to even for |x| < 2^22 (llama.cpp's nearest_int); NaN gives 0.
int nearest_int(float x) {
  if (!(std::fabs(x) < 4194304.0f)) return x > 0.0f ? 4194304 : (x < 0.0f ? -4194304 : 0);
  return static_cast<int>(std::nearbyint(x));
}

// sum(e q x) and sum(e q^2) over a sub-block with codes nearest to inv * x (float, in llama.cpp's order).
void weighted_sums(const float* x, const float* e, float inv, float& sqx, float& sq2) {
  sqx = 0.0f, sq2 = 0.0f;
  for (int j = 0; j < kSub; ++j) {
    const float q = kLevels.v[nearest_level(inv * x[j])];
    const float eq = e[j] * q;
    sqx += eq * x[j];
    sq2 += eq * q;
  }
}

// The scale of one 32-weight sub-block (llama.cpp's search; see the header comment).
float search_scale(const float* x, const float* e) {
  float amax = 0.0f, vmax = 0.0f;
  for (int j = 0; j < kSub; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), vmax = x[j];
  if (amax < kTiny) return 0.0f;
  const float d0 = -vmax / kLevels.v[0];
  float sqx, sq2;
  weighted_sums(x, e, 1.0f / d0, sqx, sq2);
  float d = sqx / sq2;
  float best = d * sqx;
  for (int t = -kNtry; t <= kNtry; ++t) {
    weighted_sums(x, e, static_cast<float>(t + kIq4nlValues[0]) / vmax, sqx, sq2);
    if (sq2 > 0.0f && sqx * sqx > best * sq2) {
      d = sqx / sq2;
      best = d * sqx;
    }
  }
  return d;
}

// Per-sub-block scales of n weights (n = 32 or 256) with the error weights of the plain or importance fit.
// Importance that is zero over a whole sub-block leaves that sub-block on the plain weights.
void sub_block_scales(std::span<const float> w, std::span<const float> importance, float* scales) {
  const int n = static_cast<int>(w.size());
  float sigma2 = 0.0f;
  for (int j = 0; j < n; ++j) sigma2 += w[j] * w[j];
  sigma2 *= 2.0f / static_cast<float>(n);
  std::array<float, kSub> e{};
  for (int s = 0; s < n / kSub; ++s) {
    const float* x = w.data() + s * kSub;
    bool weighted = false;
    if (!importance.empty()) {
      for (int j = 0; j < kSub; ++j) {
        const float imp = std::max(0.0f, importance[s * kSub + j]);  // negative or NaN importance counts as 0
        e[j] = imp * std::sqrt(sigma2 + x[j] * x[j]);
        if (e[j] > 0.0f) weighted = true;
      }
    }
    if (!weighted)
      for (int j = 0; j < kSub; ++j) e[j] = x[j] * x[j];
    scales[s] = search_scale(x, e.data());
    if (!std::isfinite(scales[s]) && weighted) {  // only with extreme importance: redo on the plain weights
      for (int j = 0; j < kSub; ++j) e[j] = x[j] * x[j];
      scales[s] = search_scale(x, e.data());
    }
    if (!std::isfinite(scales[s])) scales[s] = 0.0f;  // weights near 1e-15 whose squares underflow
  }
}

void check_fit_args(const std::string& name, size_t block, std::span<const float> w,
                    std::span<const float> importance) {
  if (w.size() != block)
    fail("", "format", name + ": fit got " + std::to_string(w.size()) + " weights for a block of " +
                           std::to_string(block));
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", name + ": importance has " + std::to_string(importance.size()) + " values for " +
                           std::to_string(w.size()) + " weights");
  for (float v : w)
    if (!std::isfinite(v)) fail("", "format", name + ": fit got a non-finite weight");
}

// Packs 32 codes of a sub-block into 16 bytes.
void pack_nibbles(const uint8_t* q, std::byte* out) {
  for (int j = 0; j < kSub / 2; ++j) out[j] = static_cast<std::byte>(q[j] | (q[j + 16] << 4));
}

class Iq4nlFormat final : public GgmlFormat {
 public:
  std::string name() const override { return "iq4_nl"; }
  int block() const override { return kSub; }
  size_t block_bytes() const override { return 18; }
  DType dtype() const override { return DType::IQ4_NL; }

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override {
    check_fit_args(name(), kSub, w, importance);
    BlockParams p;
    sub_block_scales(w, importance, &p.scale);
    return p;
  }
  float round(float w, const BlockParams& p, int /*index_in_block*/) const override {
    return f16_to_f32(half_bits(p.scale)) * kLevels.v[code_of(w, p.scale)];
  }
  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override {
    if (w.size() != static_cast<size_t>(kSub))
      fail("", "format", name() + ": encode got " + std::to_string(w.size()) + " weights for a block of 32");
    std::array<uint8_t, kSub> q{};
    for (int j = 0; j < kSub; ++j) q[j] = static_cast<uint8_t>(code_of(w[j], p.scale));
    store_u16(out, half_bits(p.scale));
    pack_nibbles(q.data(), out + offsetof(B::IQ4_NL, qs));
  }
  void decode(const std::byte* in, std::span<float> out) const override {
    if (out.size() != static_cast<size_t>(kSub)) fail("", "format", name() + ": decode needs 32 outputs");
    const float d = f16_to_f32(load_u16(in));
    for (int j = 0; j < kSub / 2; ++j) {
      const unsigned b = static_cast<unsigned>(in[offsetof(B::IQ4_NL, qs) + j]);
      out[j] = d * kLevels.v[b & 0x0f];
      out[j + 16] = d * kLevels.v[b >> 4];
    }
  }
  float dot(const std::byte* in, const float* x) const override {
    std::array<float, kSub> v{};
    decode(in, v);
    float acc = 0.0f;
    for (int i = 0; i < kSub; ++i) acc += v[i] * x[i];
    return acc;
  }

 private:
  static int code_of(float w, float scale) {
    const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
    return nearest_level(inv * w);
  }
};

class Iq4xsFormat final : public GgmlFormat {
 public:
  static constexpr int kSubs = kSuper / kSub;

  std::string name() const override { return "iq4_xs"; }
  int block() const override { return kSuper; }
  size_t block_bytes() const override { return 136; }
  DType dtype() const override { return DType::IQ4_XS; }

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override {
    check_fit_args(name(), kSuper, w, importance);
    float scales[kSubs];
    bool any = false;
    for (float v : importance) any = any || v > 0.0f;
    sub_block_scales(w, any ? importance : std::span<const float>(), scales);
    float smax = 0.0f, amax = 0.0f;  // the sub-block scale of largest magnitude, sign kept
    for (float s : scales)
      if (std::fabs(s) > amax) amax = std::fabs(s), smax = s;
    BlockParams p;
    p.scale = -smax / 32;
    const float inv = p.scale != 0.0f ? 1.0f / p.scale : 0.0f;
    p.sub_scales.resize(kSubs);
    for (int s = 0; s < kSubs; ++s)
      p.sub_scales[s] = static_cast<float>(std::clamp(nearest_int(inv * scales[s]), -32, 31) + 32);
    return p;
  }
  float round(float w, const BlockParams& p, int index_in_block) const override {
    if (index_in_block < 0 || index_in_block >= kSuper)
      fail("", "format", name() + ": weight index " + std::to_string(index_in_block) + " outside the block");
    const int l = sub_scale(p, index_in_block / kSub) - 32;
    const float dl = f16_to_f32(half_bits(p.scale)) * static_cast<float>(l);
    return dl * kLevels.v[code_of(w, p.scale, l)];
  }
  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override {
    if (w.size() != static_cast<size_t>(kSuper))
      fail("", "format", name() + ": encode got " + std::to_string(w.size()) + " weights for a block of 256");
    store_u16(out, half_bits(p.scale));
    uint16_t scales_h = 0;
    std::byte* scales_l = out + offsetof(B::IQ4_XS, scales_l);
    std::memset(scales_l, 0, 4);
    std::byte* qs = out + offsetof(B::IQ4_XS, qs);
    std::array<uint8_t, kSub> q{};
    for (int s = 0; s < kSubs; ++s) {
      const int ls = sub_scale(p, s);
      for (int j = 0; j < kSub; ++j) q[j] = static_cast<uint8_t>(code_of(w[s * kSub + j], p.scale, ls - 32));
      pack_nibbles(q.data(), qs + s * (kSub / 2));
      scales_l[s / 2] |= static_cast<std::byte>((ls & 0x0f) << (4 * (s % 2)));
      scales_h = static_cast<uint16_t>(scales_h | ((ls >> 4) << (2 * s)));
    }
    store_u16(out + offsetof(B::IQ4_XS, scales_h), scales_h);
  }
  void decode(const std::byte* in, std::span<float> out) const override {
    if (out.size() != static_cast<size_t>(kSuper)) fail("", "format", name() + ": decode needs 256 outputs");
    const float d = f16_to_f32(load_u16(in));
    const unsigned scales_h = load_u16(in + offsetof(B::IQ4_XS, scales_h));
    for (int s = 0; s < kSubs; ++s) {
      const unsigned lo = (static_cast<unsigned>(in[offsetof(B::IQ4_XS, scales_l) + s / 2]) >> (4 * (s % 2))) & 0x0f;
      const unsigned hi = (scales_h >> (2 * s)) & 3u;
      const float dl = d * static_cast<float>(static_cast<int>(lo | (hi << 4)) - 32);
      const std::byte* qs = in + offsetof(B::IQ4_XS, qs) + s * (kSub / 2);
      float* o = out.data() + s * kSub;
      for (int j = 0; j < kSub / 2; ++j) {
        const unsigned b = static_cast<unsigned>(qs[j]);
        o[j] = dl * kLevels.v[b & 0x0f];
        o[j + 16] = dl * kLevels.v[b >> 4];
      }
    }
  }
  float dot(const std::byte* in, const float* x) const override {
    std::array<float, kSuper> v{};
    decode(in, v);
    float acc = 0.0f;
    for (int i = 0; i < kSuper; ++i) acc += v[i] * x[i];
    return acc;
  }

 private:
  int sub_scale(const BlockParams& p, int s) const {
    if (p.sub_scales.size() != static_cast<size_t>(kSubs))
      fail("", "format", name() + ": BlockParams need 8 sub_scales, got " + std::to_string(p.sub_scales.size()));
    const float v = p.sub_scales[s];
    return std::clamp(std::isfinite(v) ? static_cast<int>(std::lround(v)) : 32, 0, 63);
  }
  // Code of w in a sub-block whose signed 6-bit scale is l (-32..31): nearest to w / (d * l), unrounded d.
  static int code_of(float w, float d, int l) {
    const float dl = d * static_cast<float>(l);
    const float inv = dl != 0.0f ? 1.0f / dl : 0.0f;
    return nearest_level(inv * w);
  }
};

}  // namespace

std::unique_ptr<GgmlFormat> make_ggml_iq4_format(DType t) {
  if (t == DType::IQ4_NL) return std::make_unique<Iq4nlFormat>();
  if (t == DType::IQ4_XS) return std::make_unique<Iq4xsFormat>();
  return nullptr;
}

}  // namespace lowbit::formats
