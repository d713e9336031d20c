// lowbit formats: small unpack helpers of ggml's K-quant blocks (q2_K .. q6_K), shared by the scalar reference
// in ggml_kquants.cpp and the SIMD kernels. The formats themselves come from make_ggml_kquant_format (ggml.h).
#pragma once
#include <cstdint>
#include <cstring>

namespace lowbit::formats {

// q4_K / q5_K: the 12 scale bytes hold 8 six-bit sub-block scales and 8 six-bit sub-block mins. Sub-blocks
// 0..3 keep both in the low 6 bits of bytes j (scale) and j + 4 (min); sub-blocks 4..7 keep their low 4 bits in
// the two nibbles of byte j + 4 (scale low, min high) and their top 2 bits in the top 2 bits of bytes j - 4
// (scale) and j (min). Returns sub-block j's (0..7) scale and min, each 0..63.
void q4k_scale_min(const uint8_t* scales12, int j, uint8_t& sc, uint8_t& m);

// q3_K: the 12 scale bytes hold 16 six-bit values stored with a +32 bias. Low 4 bits: sub-block j < 8 in the low
// nibble of byte j, j >= 8 in the high nibble of byte j - 8; top 2 bits: bits 2*(j/4) .. 2*(j/4)+1 of byte
// 8 + j%4. Writes the 16 signed sub-scales (stored value - 32, so -32..31).
void q3k_scales(const uint8_t* scales12, int8_t out[16]);

// The same unpacking four bytes at a time, as the SIMD kernels want it (the scalar functions above are its
// reference; tests/formats check them against each other on every byte pattern class).
// q4_K / q5_K: out[0..8) the 8 scales, out[8..16) the 8 mins (0..63).
inline void q4k_scales_mins16(const uint8_t* s12, uint8_t out[16]) {
  uint32_t x0, x1, x2;
  std::memcpy(&x0, s12, 4);
  std::memcpy(&x1, s12 + 4, 4);
  std::memcpy(&x2, s12 + 8, 4);
  const uint32_t w[4] = {x0 & 0x3f3f3f3f, (x2 & 0x0f0f0f0f) | (((x0 >> 6) & 0x03030303) << 4), x1 & 0x3f3f3f3f,
                         ((x2 >> 4) & 0x0f0f0f0f) | (((x1 >> 6) & 0x03030303) << 4)};
  std::memcpy(out, w, 16);
}
// q3_K: the 16 scales as stored (value + 32, so 0..63).
inline void q3k_scales16(const uint8_t* s12, uint8_t out[16]) {
  uint32_t a0, a1, a2;
  std::memcpy(&a0, s12, 4);
  std::memcpy(&a1, s12 + 4, 4);
  std::memcpy(&a2, s12 + 8, 4);
  const uint32_t w[4] = {(a0 & 0x0f0f0f0f) | ((a2 & 0x03030303) << 4), (a1 & 0x0f0f0f0f) | (((a2 >> 2) & 0x03030303) << 4),
                         ((a0 >> 4) & 0x0f0f0f0f) | (((a2 >> 4) & 0x03030303) << 4),
                         ((a1 >> 4) & 0x0f0f0f0f) | (((a2 >> 6) & 0x03030303) << 4)};
  std::memcpy(out, w, 16);
}

}  // namespace lowbit::formats
