// lowbit formats: decoders for the ggml block types lowbit reads but does not write (Q8_1, Q8_K, the i-quants
// IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, and the ternary TQ1_0, TQ2_0). Each one computes the
// same floats as ggml's dequantize_row_<type> (same operations in the same order), so a tensor of these types
// reads back bit for bit as llama.cpp sees it.
//
// Layouts (little-endian; fp16 = IEEE half; "sub-block" = 32 consecutive weights; levels of the i-quant grids
// come from ggml_iq_grids.inc, one byte per weight):
//   q8_1    32 w,  36 B: d fp16 | s fp16 (= d * sum q, not needed to decode) | 32 x int8 q     value d * q
//   q8_K   256 w, 292 B: d float32 | 256 x int8 q | 16 x int16 group sums (not needed)       value d * q
//   tq1_0  256 w,  54 B: qs[48] | qh[4] | d fp16. Each byte packs 5 (qs) or 4 (qh) trits t in 0..2 as a fixed-
//                        point fraction; trit n of byte b is ((uint8_t)(b * 3^n) * 3) >> 8. Weights 0..159
//                        come from qs[0..31] (weight 32n + m = trit n of qs[m]), 160..239 from qs[32..47]
//                        (160 + 16n + m = trit n of qs[32 + m]), 240..255 from qh (240 + 4n + j = trit n of
//                        qh[j]).                                                               value (t - 1) * d
//   tq2_0  256 w,  66 B: qs[64] | d fp16. Weight 128h + 32l + m = bits 2l..2l+1 of qs[32h + m].  value (q - 1) * d
//   iq2_xxs 256 w, 66 B: d fp16 | 8 sub-blocks x 8 B: 4 grid indices (bytes) | u32 with 4 x 7 sign bits (bits
//                        7l..7l+6 for group l) and a 4-bit scale s in bits 28..31.
//                        db = d * (0.5 + s) * 0.25; weight 8l + j = db * iq2xxs_grid[idx_l][j] * sign
//   iq2_xs  256 w, 74 B: d fp16 | 32 x u16 (9-bit grid index | 7 sign bits << 9) | scales[8] (two 4-bit scales
//                        per sub-block, low nibble for its groups 0-1, high for 2-3); db = d * (0.5 + s) * 0.25
//   iq2_s   256 w, 82 B: d fp16 | idx_lo[32] | signs[32] | qh[8] | scales[8]; group l of sub-block b has grid
//                        index idx_lo[4b + l] | bits 2l..2l+1 of qh[b] << 8 (1024-entry grid) and all 8 sign
//                        bits in signs[4b + l]; scales as iq2_xs
//   iq3_xxs 256 w, 98 B: d fp16 | idx[64] (one 4-weight grid entry each) | 8 x u32 (4 x 7 sign bits | 4-bit
//                        scale s in bits 28..31); db = d * (0.5 + s) * 0.5
//   iq3_s  256 w, 110 B: d fp16 | idx_lo[64] | qh[8] (bit k of qh[b] = bit 8 of the k-th index of sub-block b)
//                        | signs[32] (one byte per 8 weights) | scales[4] (4 bits per sub-block, low nibble
//                        first); db = d * (1 + 2 s)
//   iq1_s   256 w, 50 B: d fp16 | idx_lo[32] | 8 x u16 qh: bits 3l..3l+2 = high bits of group l's 11-bit index,
//                        bits 12..14 = scale s, bit 15 = sign of delta. dl = d * (2 s + 1);
//                        weight = dl * (iq1s_grid[idx][j] + delta), delta = +-0.125, grid levels -1, 0, 1
//   iq1_m   256 w, 56 B: idx_lo[32] | qh[16] (per group pair: 3 high index bits, then a delta-sign bit, in each
//                        nibble) | 4 x u16 scales: 3-bit scales (4 per u16, two per sub-block: groups 0-1, 2-3)
//                        and, in the top nibbles of the four u16, the 16 bits of the fp16 d (u16 k gives bits
//                        4k..4k+3). dl = d * (2 s + 1); weight = dl * (grid + delta)
// Signs: a set sign bit negates the weight. Seven explicit bits cover weights 0..6 of a group of 8; the eighth
// sign is their parity (an even number of weights is negated), ggml's ksigns_iq2xs table.
#include <bit>
#include <cstring>
#include <string>

#include "core/half.h"
#include "formats/ggml.h"
#include "lowbit/error.h"

#include "formats/ggml_iq_grids.inc"

namespace lowbit::formats {

namespace {

using iq_grids::kIq1sGrid;
using iq_grids::kIq2sGrid;
using iq_grids::kIq2xsGrid;
using iq_grids::kIq2xxsGrid;
using iq_grids::kIq3sGrid;
using iq_grids::kIq3xxsGrid;

inline uint8_t byte_at(const std::byte* p, size_t i) { return static_cast<uint8_t>(p[i]); }
inline uint16_t load_u16(const std::byte* p) {
  return static_cast<uint16_t>(byte_at(p, 0) | (byte_at(p, 1) << 8));
}
inline uint32_t load_u32(const std::byte* p) {
  return static_cast<uint32_t>(byte_at(p, 0)) | (static_cast<uint32_t>(byte_at(p, 1)) << 8) |
         (static_cast<uint32_t>(byte_at(p, 2)) << 16) | (static_cast<uint32_t>(byte_at(p, 3)) << 24);
}
inline float load_f16(const std::byte* p) { return f16_to_f32(load_u16(p)); }

// Byte j (0 = least significant) of a grid entry: the level of weight j of that entry.
inline uint8_t level_u8(uint64_t entry, int j) { return static_cast<uint8_t>(entry >> (8 * j)); }
inline int8_t level_i8(uint64_t entry, int j) { return static_cast<int8_t>(level_u8(entry, j)); }

// 7 explicit sign bits -> 8 sign bits, the 8th making the number of set bits even.
inline uint8_t expand_signs(uint32_t seven) {
  seven &= 127u;
  uint32_t parity = seven ^ (seven >> 4);  // folded by hand: std::popcount is a libgcc call without -mpopcnt
  parity ^= parity >> 2;
  parity ^= parity >> 1;
  return static_cast<uint8_t>(seven | ((parity & 1u) << 7));
}

void decode_q8_1(const std::byte* b, float* y) {
  const float d = load_f16(b);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(byte_at(b, 4 + j)));
}

void decode_q8_k(const std::byte* b, float* y) {
  float d;
  std::memcpy(&d, b, 4);
  for (int j = 0; j < 256; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(byte_at(b, 4 + j)));
}

// Trit n of a packed byte: multiplying by 3^n (mod 256) brings trit n to the top of the fraction.
inline float trit_minus_one(uint8_t packed, int n) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const uint8_t q = static_cast<uint8_t>(packed * kPow3[n]);
  const int t = (static_cast<uint16_t>(q) * 3) >> 8;
  return static_cast<float>(t - 1);
}

void decode_tq1_0(const std::byte* b, float* y) {
  const std::byte* qs = b;
  const std::byte* qh = b + 48;
  const float d = load_f16(b + 52);
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 32; ++m) *y++ = trit_minus_one(byte_at(qs, m), n) * d;
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 16; ++m) *y++ = trit_minus_one(byte_at(qs, 32 + m), n) * d;
  for (int n = 0; n < 4; ++n)
    for (int j = 0; j < 4; ++j) *y++ = trit_minus_one(byte_at(qh, j), n) * d;
}

void decode_tq2_0(const std::byte* b, float* y) {
  const float d = load_f16(b + 64);
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 4; ++l)
      for (int m = 0; m < 32; ++m) {
        const int q = (byte_at(b, 32 * h + m) >> (2 * l)) & 3;
        *y++ = static_cast<float>(q - 1) * d;
      }
}

// The i-quants decode through their integer form (ggml.h IqBlockLevels): weight i = (step * scale[i / 16]) *
// level[i]. That is the float ggml computes: its db = d * (0.5 + s) * 0.25 (IQ2) is d / 8 * (2 s + 1) rounded once
// either way (a power-of-two factor commutes with rounding), db * grid * sign = db * (+-grid), and IQ1's
// dl * (grid +- 1/8) = dl / 8 * (8 grid +- 1), with dl / 8 exact. tests/formats/ggml_decode_other_test.cpp's golden
// blocks compute ggml's expressions independently.
inline int8_t signed_level(uint8_t magnitude, uint8_t signs, int j) {
  return static_cast<int8_t>((signs >> j) & 1u ? -magnitude : magnitude);
}
inline void same_scale(IqBlockLevels& o, int ib, int s) {  // both 16-value groups of sub-block ib: 2 s + 1
  o.scale[2 * ib] = o.scale[2 * ib + 1] = static_cast<uint8_t>(2 * s + 1);
}

void levels_iq2_xxs(const std::byte* b, IqBlockLevels& o) {
  o.step = load_f16(b) * 0.125f;
  for (int ib = 0; ib < 8; ++ib) {
    const std::byte* sb = b + 2 + 8 * ib;
    const uint32_t meta = load_u32(sb + 4);
    same_scale(o, ib, static_cast<int>(meta >> 28));
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = kIq2xxsGrid[byte_at(sb, l)];
      const uint8_t signs = expand_signs(meta >> (7 * l));
      for (int j = 0; j < 8; ++j) o.level[32 * ib + 8 * l + j] = signed_level(level_u8(g, j), signs, j);
    }
  }
}

void levels_iq2_xs(const std::byte* b, IqBlockLevels& o) {
  o.step = load_f16(b) * 0.125f;
  const std::byte* qs = b + 2;
  const std::byte* scales = b + 66;
  for (int ib = 0; ib < 8; ++ib) {
    const uint8_t sc = byte_at(scales, ib);
    o.scale[2 * ib] = static_cast<uint8_t>(2 * (sc & 0xf) + 1);
    o.scale[2 * ib + 1] = static_cast<uint8_t>(2 * (sc >> 4) + 1);
    for (int l = 0; l < 4; ++l) {
      const uint16_t q = load_u16(qs + 2 * (4 * ib + l));
      const uint64_t g = kIq2xsGrid[q & 511];
      const uint8_t signs = expand_signs(q >> 9);
      for (int j = 0; j < 8; ++j) o.level[32 * ib + 8 * l + j] = signed_level(level_u8(g, j), signs, j);
    }
  }
}

void levels_iq2_s(const std::byte* b, IqBlockLevels& o) {
  o.step = load_f16(b) * 0.125f;
  const std::byte* idx_lo = b + 2;
  const std::byte* signs = b + 34;
  const std::byte* qh = b + 66;
  const std::byte* scales = b + 74;
  for (int ib = 0; ib < 8; ++ib) {
    const uint8_t sc = byte_at(scales, ib);
    o.scale[2 * ib] = static_cast<uint8_t>(2 * (sc & 0xf) + 1);
    o.scale[2 * ib + 1] = static_cast<uint8_t>(2 * (sc >> 4) + 1);
    const unsigned hi = byte_at(qh, ib);
    for (int l = 0; l < 4; ++l) {
      const unsigned idx = byte_at(idx_lo, 4 * ib + l) | ((hi << (8 - 2 * l)) & 0x300u);
      const uint64_t g = kIq2sGrid[idx];
      const uint8_t s = byte_at(signs, 4 * ib + l);
      for (int j = 0; j < 8; ++j) o.level[32 * ib + 8 * l + j] = signed_level(level_u8(g, j), s, j);
    }
  }
}

void levels_iq3_xxs(const std::byte* b, IqBlockLevels& o) {
  o.step = load_f16(b) * 0.25f;  // db = d * (0.5 + s) * 0.5 = d / 4 * (2 s + 1)
  const std::byte* idx = b + 2;
  const std::byte* meta_p = b + 66;
  for (int ib = 0; ib < 8; ++ib) {
    const uint32_t meta = load_u32(meta_p + 4 * ib);
    same_scale(o, ib, static_cast<int>(meta >> 28));
    for (int l = 0; l < 4; ++l) {
      const uint8_t signs = expand_signs(meta >> (7 * l));
      const uint64_t g1 = kIq3xxsGrid[byte_at(idx, 8 * ib + 2 * l)];
      const uint64_t g2 = kIq3xxsGrid[byte_at(idx, 8 * ib + 2 * l + 1)];
      int8_t* y = o.level + 32 * ib + 8 * l;
      for (int j = 0; j < 4; ++j) {
        y[j] = signed_level(level_u8(g1, j), signs, j);
        y[j + 4] = signed_level(level_u8(g2, j), signs, j + 4);
      }
    }
  }
}

void levels_iq3_s(const std::byte* b, IqBlockLevels& o) {
  o.step = load_f16(b);  // db = d * (1 + 2 s)
  const std::byte* idx_lo = b + 2;
  const std::byte* qh = b + 66;
  const std::byte* signs = b + 74;
  const std::byte* scales = b + 106;
  for (int ib = 0; ib < 8; ++ib) {
    same_scale(o, ib, (byte_at(scales, ib / 2) >> (4 * (ib % 2))) & 0xf);
    const unsigned hi = byte_at(qh, ib);
    for (int l = 0; l < 4; ++l) {
      const unsigned i1 = byte_at(idx_lo, 8 * ib + 2 * l) | ((hi << (8 - 2 * l)) & 256u);
      const unsigned i2 = byte_at(idx_lo, 8 * ib + 2 * l + 1) | ((hi << (7 - 2 * l)) & 256u);
      const uint64_t g1 = kIq3sGrid[i1];
      const uint64_t g2 = kIq3sGrid[i2];
      const uint8_t sg = byte_at(signs, 4 * ib + l);
      int8_t* y = o.level + 32 * ib + 8 * l;
      for (int j = 0; j < 4; ++j) {
        y[j] = signed_level(level_u8(g1, j), sg, j);
        y[j + 4] = signed_level(level_u8(g2, j), sg, j + 4);
      }
    }
  }
}

// IQ1: level 8 * grid + (delta > 0 ? 1 : -1) at step d / 8 (delta = +-1/8 of dl = d * (2 s + 1)).
inline int8_t iq1_level(uint64_t g, int j, bool delta_minus) {
  return static_cast<int8_t>(8 * level_i8(g, j) + (delta_minus ? -1 : 1));
}

void levels_iq1_s(const std::byte* b, IqBlockLevels& o) {
  o.step = load_f16(b) * 0.125f;
  const std::byte* idx_lo = b + 2;
  const std::byte* qh_p = b + 34;
  for (int ib = 0; ib < 8; ++ib) {
    const uint16_t qh = load_u16(qh_p + 2 * ib);
    same_scale(o, ib, (qh >> 12) & 7);
    const bool minus = (qh & 0x8000u) != 0;
    for (int l = 0; l < 4; ++l) {
      const unsigned idx = byte_at(idx_lo, 4 * ib + l) | (((qh >> (3 * l)) & 7u) << 8);
      const uint64_t g = kIq1sGrid[idx];
      for (int j = 0; j < 8; ++j) o.level[32 * ib + 8 * l + j] = iq1_level(g, j, minus);
    }
  }
}

void levels_iq1_m(const std::byte* b, IqBlockLevels& o) {
  const std::byte* idx_lo = b;
  const std::byte* qh = b + 32;
  uint16_t sc[4];
  for (int k = 0; k < 4; ++k) sc[k] = load_u16(b + 48 + 2 * k);
  const uint16_t d_bits = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                                ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
  o.step = f16_to_f32(d_bits) * 0.125f;
  for (int ib = 0; ib < 8; ++ib) {
    const int shift = 6 * (ib % 2);
    o.scale[2 * ib] = static_cast<uint8_t>(2 * ((sc[ib / 2] >> shift) & 7) + 1);
    o.scale[2 * ib + 1] = static_cast<uint8_t>(2 * ((sc[ib / 2] >> (shift + 3)) & 7) + 1);
    const unsigned h0 = byte_at(qh, 2 * ib), h1 = byte_at(qh, 2 * ib + 1);
    const unsigned idx[4] = {byte_at(idx_lo, 4 * ib + 0) | ((h0 << 8) & 0x700u),
                             byte_at(idx_lo, 4 * ib + 1) | ((h0 << 4) & 0x700u),
                             byte_at(idx_lo, 4 * ib + 2) | ((h1 << 8) & 0x700u),
                             byte_at(idx_lo, 4 * ib + 3) | ((h1 << 4) & 0x700u)};
    const bool minus[4] = {(h0 & 0x08u) != 0, (h0 & 0x80u) != 0, (h1 & 0x08u) != 0, (h1 & 0x80u) != 0};
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = kIq1sGrid[idx[l]];
      for (int j = 0; j < 8; ++j) o.level[32 * ib + 8 * l + j] = iq1_level(g, j, minus[l]);
    }
  }
}

using LevelsDecoder = void (*)(const std::byte*, IqBlockLevels&);

LevelsDecoder levels_for(DType t) {
  switch (t) {
    case DType::IQ2_XXS: return levels_iq2_xxs;
    case DType::IQ2_XS: return levels_iq2_xs;
    case DType::IQ2_S: return levels_iq2_s;
    case DType::IQ3_XXS: return levels_iq3_xxs;
    case DType::IQ3_S: return levels_iq3_s;
    case DType::IQ1_S: return levels_iq1_s;
    case DType::IQ1_M: return levels_iq1_m;
    default: return nullptr;
  }
}

using BlockDecoder = void (*)(const std::byte*, float*);

BlockDecoder decoder_for(DType t) {
  switch (t) {
    case DType::Q8_1: return decode_q8_1;
    case DType::Q8_K: return decode_q8_k;
    case DType::TQ1_0: return decode_tq1_0;
    case DType::TQ2_0: return decode_tq2_0;
    default: return nullptr;
  }
}

}  // namespace

std::span<const uint64_t> ggml_iq2_grid(DType t) {
  if (t == DType::IQ2_XXS) return kIq2xxsGrid;
  if (t == DType::IQ2_XS) return kIq2xsGrid;
  if (t == DType::IQ2_S) return kIq2sGrid;
  return {};
}

std::span<const uint64_t> ggml_iq1_grid() { return kIq1sGrid; }

std::span<const uint32_t> ggml_iq3_grid(DType t) {
  if (t == DType::IQ3_XXS) return kIq3xxsGrid;
  if (t == DType::IQ3_S) return kIq3sGrid;
  return {};
}

bool ggml_iq_block_levels(DType t, const std::byte* block, IqBlockLevels& out) {
  const LevelsDecoder dec = levels_for(t);
  if (!dec) return false;
  dec(block, out);
  return true;
}

const IqLevelSet& ggml_iq_level_set(DType t) {
  // The distinct levels of every block of t: the grids' magnitudes with both signs (IQ1: 8 * {-1, 0, 1} +- 1).
  static const auto make = [](DType type) {
    bool seen[256] = {};
    auto mark = [&](int v) { seen[v + 128] = true; };
    if (type == DType::IQ1_S || type == DType::IQ1_M) {
      for (int g : {-1, 0, 1}) mark(8 * g + 1), mark(8 * g - 1);
    } else if (!ggml_iq2_grid(type).empty()) {
      for (uint64_t e : ggml_iq2_grid(type))
        for (int j = 0; j < 8; ++j) mark(level_u8(e, j)), mark(-level_u8(e, j));
    } else if (!ggml_iq3_grid(type).empty()) {
      for (uint32_t e : ggml_iq3_grid(type))
        for (int j = 0; j < 4; ++j) mark(level_u8(e, j)), mark(-level_u8(e, j));
    }
    IqLevelSet s;
    for (int v = 0; v < 256; ++v)
      if (seen[v]) {
        if (v - 128 < -63 || v - 128 > 63) fail("", "ggml_iq_level_set", "a level outside [-63, 63]");
        if (s.count == 16) fail("", "ggml_iq_level_set", std::string(dtype_name(type)) + " has more than 16 levels");
        s.level[s.count++] = static_cast<int8_t>(v - 128);
      }
    return s;
  };
  static const IqLevelSet kSets[] = {make(DType::IQ2_XXS), make(DType::IQ2_XS), make(DType::IQ2_S),
                                     make(DType::IQ3_XXS), make(DType::IQ3_S),  make(DType::IQ1_S), IqLevelSet{}};
  switch (t) {
    case DType::IQ2_XXS: return kSets[0];
    case DType::IQ2_XS: return kSets[1];
    case DType::IQ2_S: return kSets[2];
    case DType::IQ3_XXS: return kSets[3];
    case DType::IQ3_S: return kSets[4];
    case DType::IQ1_S: case DType::IQ1_M: return kSets[5];
    default: return kSets[6];
  }
}

bool ggml_decode_other_row(DType t, const std::byte* in, int64_t n, float* out) {
  const BlockDecoder dec = decoder_for(t);
  const LevelsDecoder lev = levels_for(t);
  if (!dec && !lev) return false;
  const DTypeInfo info = dtype_info(t);
  if (n < 0 || n % info.block != 0)
    fail("", "dtype", "cannot decode " + std::to_string(n) + " values of type " + std::string(info.name) +
                          " (expected a multiple of its block of " + std::to_string(info.block) + ")");
  const int64_t nb = n / info.block;
  if (dec) {
    for (int64_t i = 0; i < nb; ++i) dec(in + i * info.block_bytes, out + i * info.block);
    return true;
  }
  IqBlockLevels L;
  for (int64_t i = 0; i < nb; ++i) {
    lev(in + i * info.block_bytes, L);
    float* y = out + i * info.block;
    for (int g = 0; g < 16; ++g) {
      const float S = L.step * static_cast<float>(L.scale[g]);
      for (int j = 0; j < 16; ++j) y[16 * g + j] = S * static_cast<float>(L.level[16 * g + j]);
    }
  }
  return true;
}

}  // namespace lowbit::formats
