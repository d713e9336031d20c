// lowbit formats: intN (see intn.h for the layout and the fitting rules).
#include "formats/intn.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>

#include "core/half.h"
#include "lowbit/error.h"

namespace lowbit::formats {

namespace {

constexpr float kF16Max = 65504.0f;
constexpr float kF16MinSubnormal = 5.9604645e-08f;  // 2^-24

float f16_round(float v) { return f16_to_f32(f32_to_f16(v)); }

// A positive step rounded to fp16 without becoming 0 or infinity.
float f16_scale(float s) {
  if (!(s > 0.0f)) return 0.0f;
  if (s >= kF16Max) return kF16Max;
  float h = f16_round(s);
  return h > 0.0f ? h : kF16MinSubnormal;
}

uint16_t load_u16(const std::byte* p) {
  return static_cast<uint16_t>(static_cast<unsigned>(p[0]) | (static_cast<unsigned>(p[1]) << 8));
}
void store_u16(std::byte* p, uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xff);
  p[1] = static_cast<std::byte>(v >> 8);
}

// Eight B-bit codes live in exactly B bytes (8 * B bits), starting on a byte boundary.
inline uint64_t load_chunk(const std::byte* p, int bits) {
  uint64_t v = 0;
  for (int k = 0; k < bits; ++k) v |= static_cast<uint64_t>(p[k]) << (8 * k);
  return v;
}

struct Header {
  float scale, offset;
};

}  // namespace

IntNFormat::IntNFormat(int bits, int group, bool asymmetric, IntNFitOptions options)
    : bits_(bits), group_(group), asym_(asymmetric), opt_(options) {
  if (bits < 2 || bits > 8)
    fail("", "format", "intN: bits " + std::to_string(bits) + " out of range (expected 2..8)");
  if (group != 32 && group != 64 && group != 128)
    fail("", "format", "intN: group " + std::to_string(group) + " not supported (expected 32, 64 or 128)");
  if (opt_.grid_steps < 0 || !(opt_.min_shrink > 0.0f && opt_.min_shrink <= 1.0f))
    fail("", "format", "intN: fit options need grid_steps >= 0 and min_shrink in (0, 1]");
}

std::string IntNFormat::name() const {
  return "int" + std::to_string(bits_) + "g" + std::to_string(group_) + (asym_ ? "a" : "s");
}

size_t IntNFormat::block_bytes() const {
  return 2 + (asym_ ? 2 : 0) + static_cast<size_t>(group_) * bits_ / 8;
}

namespace {
// The nearest code to w for a step s > 0 and offset off (both already fp16-exact), codes 0..maxc.
inline int nearest_code(float w, float s, float off, int maxc) {
  float x = w / s + off;
  if (!(x >= 0.0f)) x = 0.0f;  // also NaN
  if (!(x <= static_cast<float>(maxc))) x = static_cast<float>(maxc);
  int c = static_cast<int>(std::nearbyint(x));
  // The division may be off by an ulp near a midpoint: settle on the neighbour with the smaller float error.
  int best = c;
  float best_err = std::fabs(w - s * (static_cast<float>(c) - off));
  if (c > 0) {
    float e = std::fabs(w - s * (static_cast<float>(c - 1) - off));
    if (e < best_err) best = c - 1, best_err = e;
  }
  if (c < maxc) {
    float e = std::fabs(w - s * (static_cast<float>(c + 1) - off));
    if (e < best_err) best = c + 1;
  }
  return best;
}
}  // namespace

int IntNFormat::code_of(float w, const BlockParams& p) const {
  const int maxc = (1 << bits_) - 1;
  const float s = f16_scale(p.scale);
  const float off = asym_ ? f16_round(p.zero) : static_cast<float>(1 << (bits_ - 1));
  if (s == 0.0f) {
    float z = std::nearbyint(off);
    return z < 0.0f ? 0 : (z > static_cast<float>(maxc) ? maxc : static_cast<int>(z));
  }
  return nearest_code(w, s, off, maxc);
}

float IntNFormat::round(float w, const BlockParams& p, int /*index_in_block*/) const {
  const float s = f16_scale(p.scale);
  const float off = asym_ ? f16_round(p.zero) : static_cast<float>(1 << (bits_ - 1));
  return s * (static_cast<float>(code_of(w, p)) - off);
}

BlockParams IntNFormat::fit(std::span<const float> w, std::span<const float> importance) const {
  if (static_cast<int>(w.size()) != group_)
    fail("", "format", name() + ": fit got " + std::to_string(w.size()) + " weights for a block of " +
                           std::to_string(group_));
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", name() + ": importance size " + std::to_string(importance.size()) + " != block size");
  float lo = 0.0f, hi = 0.0f;
  for (float v : w) {
    if (!std::isfinite(v)) fail("", "format", name() + ": fit got a non-finite weight");
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const int maxc = (1 << bits_) - 1;
  const float half = static_cast<float>(1 << (bits_ - 1));

  auto candidate = [&](float factor) {
    BlockParams p;
    if (asym_) {
      const float l = lo * factor, h = hi * factor;
      p.scale = f16_scale((h - l) / static_cast<float>(maxc));
      float z = p.scale > 0.0f ? std::nearbyint(-l / p.scale) : 0.0f;
      p.zero = std::clamp(z, 0.0f, static_cast<float>(maxc));
    } else {
      p.scale = f16_scale(factor * std::max(-lo / half, hi / (half - 1.0f)));
      p.zero = 0.0f;
    }
    return p;
  };
  BlockParams best = candidate(1.0f);
  if (!opt_.clip_search || opt_.grid_steps == 0 || best.scale == 0.0f) return best;

  // The search's error uses a plain multiply-clamp-round (no ulp tie settling, unlike nearest_code): candidates
  // are compared on it, and an evaluation stops as soon as it exceeds the best so far.
  auto error = [&](const BlockParams& p, double bound) {
    const float s = p.scale, off = asym_ ? p.zero : half;  // fp16-exact already (candidate() made them so)
    if (s == 0.0f) return std::numeric_limits<double>::infinity();
    const float inv = 1.0f / s, top = static_cast<float>(maxc);
    double e = 0.0;
    const size_t n = w.size();
    for (size_t i0 = 0; i0 < n; i0 += 16) {  // check the bound every 16 weights
      float part = 0.0f;
      const size_t i1 = std::min(n, i0 + 16);
      for (size_t i = i0; i < i1; ++i) {
        // Clamp, then round half to even with the 1.5 * 2^23 trick (exact for 0 <= x <= 255, as nearbyint).
        const float x = std::min(std::max(w[i] * inv + off, 0.0f), top);
        const float c = (x + 12582912.0f) - 12582912.0f;
        const float d = w[i] - s * (c - off);
        part += (importance.empty() ? 1.0f : importance[i]) * d * d;
      }
      e += part;
      if (e > bound) return e;
    }
    return e;
  };
  double best_err = error(best, std::numeric_limits<double>::infinity());
  for (int k = 1; k <= opt_.grid_steps; ++k) {
    const float factor = 1.0f - (1.0f - opt_.min_shrink) * static_cast<float>(k) / static_cast<float>(opt_.grid_steps);
    BlockParams p = candidate(factor);
    const double e = error(p, best_err);
    if (e < best_err) best = p, best_err = e;
  }
  return best;
}

void IntNFormat::encode(std::span<const float> w, const BlockParams& p, std::byte* out) const {
  if (static_cast<int>(w.size()) != group_)
    fail("", "format", name() + ": encode got " + std::to_string(w.size()) + " weights for a block of " +
                           std::to_string(group_));
  store_u16(out, f32_to_f16(f16_scale(p.scale)));
  std::byte* codes = out + 2;
  if (asym_) {
    store_u16(out + 2, f32_to_f16(p.zero));
    codes += 2;
  }
  uint64_t acc = 0;
  int nbits = 0;
  for (float v : w) {
    acc |= static_cast<uint64_t>(code_of(v, p)) << nbits;
    nbits += bits_;
    while (nbits >= 8) {
      *codes++ = static_cast<std::byte>(acc & 0xff);
      acc >>= 8;
      nbits -= 8;
    }
  }
}

namespace {
template <typename Fn>
inline void for_each_code(const std::byte* codes, int bits, int group, Fn&& fn) {
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  for (int i = 0; i < group; i += 8, codes += bits) {
    const uint64_t v = load_chunk(codes, bits);
    for (int j = 0; j < 8; ++j) fn(i + j, static_cast<float>((v >> (j * bits)) & mask));
  }
}
}  // namespace

void IntNFormat::decode(const std::byte* in, std::span<float> out) const {
  const float s = f16_to_f32(load_u16(in));
  const float off = asym_ ? f16_to_f32(load_u16(in + 2)) : static_cast<float>(1 << (bits_ - 1));
  const std::byte* codes = in + (asym_ ? 4 : 2);
  const int n = std::min<int>(group_, static_cast<int>(out.size()));
  if (n != group_) fail("", "format", name() + ": decode needs " + std::to_string(group_) + " outputs");
  for_each_code(codes, bits_, group_, [&](int i, float c) { out[i] = s * (c - off); });
}

IntNBlock intn_block_params(const IntNFormat& f, const std::byte* in) {
  return {f16_to_f32(load_u16(in)),
          f.asymmetric() ? f16_to_f32(load_u16(in + 2)) : static_cast<float>(1 << (f.bits() - 1))};
}

IntNBlock intn_unpack_block(const IntNFormat& f, const std::byte* in, uint8_t* codes) {
  const IntNBlock b = intn_block_params(f, in);
  for_each_code(in + intn_codes_offset(f), f.bits(), f.block(), [&](int i, float c) { codes[i] = static_cast<uint8_t>(c); });
  return b;
}

float IntNFormat::dot(const std::byte* in, const float* x) const {
  const float s = f16_to_f32(load_u16(in));
  const float off = asym_ ? f16_to_f32(load_u16(in + 2)) : static_cast<float>(1 << (bits_ - 1));
  const std::byte* codes = in + (asym_ ? 4 : 2);
  float acc = 0.0f;
  for_each_code(codes, bits_, group_, [&](int i, float c) { acc += (c - off) * x[i]; });
  return s * acc;
}

namespace {
// One instantiation per bit width so the eight-code unpack unrolls into constant shifts.
template <int B>
void decode_row_bits(const std::byte* in, int64_t blocks, int g, bool asym, size_t bb, float* out) {
  constexpr uint64_t mask = (uint64_t{1} << B) - 1;
  constexpr float sym_off = static_cast<float>(1 << (B - 1));
  for (int64_t b = 0; b < blocks; ++b, in += bb, out += g) {
    const float s = f16_to_f32(load_u16(in));
    const float off = asym ? f16_to_f32(load_u16(in + 2)) : sym_off;
    const std::byte* codes = in + (asym ? 4 : 2);
    for (int i = 0; i < g; i += 8, codes += B) {
      const uint64_t v = load_chunk(codes, B);
      for (int j = 0; j < 8; ++j) out[i + j] = s * (static_cast<float>((v >> (j * B)) & mask) - off);
    }
  }
}
}  // namespace

void intn_decode_row_f32(const IntNFormat& f, const std::byte* in, int64_t n, float* out) {
  const int g = f.block();
  if (n < 0) fail("", "format", f.name() + ": negative row length " + std::to_string(n));
  const int64_t blocks = n / g;
  const bool asym = f.asymmetric();
  const size_t bb = f.block_bytes();
  switch (f.bits()) {
    case 2: decode_row_bits<2>(in, blocks, g, asym, bb, out); break;
    case 3: decode_row_bits<3>(in, blocks, g, asym, bb, out); break;
    case 4: decode_row_bits<4>(in, blocks, g, asym, bb, out); break;
    case 5: decode_row_bits<5>(in, blocks, g, asym, bb, out); break;
    case 6: decode_row_bits<6>(in, blocks, g, asym, bb, out); break;
    case 7: decode_row_bits<7>(in, blocks, g, asym, bb, out); break;
    default: decode_row_bits<8>(in, blocks, g, asym, bb, out); break;
  }
  if (const int64_t tail = n - blocks * g; tail > 0)  // a partial last block (see format.h)
    decode_block(f, in + blocks * bb, std::span<float>(out + blocks * g, static_cast<size_t>(tail)));
}

std::unique_ptr<IntNFormat> make_intn_format(std::string_view name, IntNFitOptions options) {
  auto bad = [&]() -> std::unique_ptr<IntNFormat> {
    fail("", "format", "unknown format '" + std::string(name) + "' (expected int{2..8}g{32,64,128}{s,a})");
  };
  auto num = [](std::string_view s, size_t& pos, int& v) {
    size_t start = pos;
    v = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && pos - start < 4) v = v * 10 + (s[pos++] - '0');
    return pos > start;
  };
  if (name.substr(0, 3) != "int") return bad();
  size_t pos = 3;
  int bits = 0, group = 0;
  if (!num(name, pos, bits) || pos >= name.size() || name[pos] != 'g') return bad();
  ++pos;
  if (!num(name, pos, group) || pos + 1 != name.size() || (name[pos] != 's' && name[pos] != 'a')) return bad();
  if (bits < 2 || bits > 8 || (group != 32 && group != 64 && group != 128)) return bad();
  return std::make_unique<IntNFormat>(bits, group, name[pos] == 'a', options);
}

const IntNFormat& intn_format(std::string_view name) {
  static std::mutex mu;
  static std::map<std::string, std::unique_ptr<IntNFormat>, std::less<>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(std::string(name), make_intn_format(name)).first;
  return *it->second;
}

}  // namespace lowbit::formats
