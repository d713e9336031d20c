// SIMD matrix products on llama.cpp's block types (ops/ggml_dot.h). Compiled once per Highway target:
//  - AVX3_DL (AVX-512 VNNI/VBMI): the weights of a 256-value chunk (one K-type super-block, or eight 32-value
//    blocks) are unpacked in registers into four 64-byte vectors of unsigned codes u (nibble masks and shifts,
//    high bits from vptestmb masks, IQ4 levels by vpshufb) and multiplied with the int8 activations by vpdpbusd;
//    the 16 int32 lanes of each product are scaled by their 16-value group's S_g * da (one float FMA per 64
//    weights) and the centre/min terms (S_g * c + M_g) * da * A_g are one FMA per chunk. Block headers are read
//    with scalar code (K types) or eight fp16 loads and one vcvtph2ps (32-value types).
//    Batches of tokens: each row is unpacked once into an L1 buffer and dotted with every token from there.
//  - other targets: the scalar reference (ggml_dot_ref.cpp).
// Rows whose length is not a multiple of 256 (32-value types only) finish their last < 8 blocks with the reference.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "formats/ggml.h"
#include "lowbit/error.h"
#include "ops/ggml_dot.h"
#include "ops/ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/ggml_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/highway.h"


HWY_BEFORE_NAMESPACE();
namespace lowbit::ops::HWY_NAMESPACE {

#if HWY_TARGET == HWY_AVX3_DL

using detail::GgmlActs;

// Highway 1.0.3's AVX3_DL target string lacks avx512vnni (vpdpbusd on zmm); add it for these functions.
#define LOWBIT_GGML_VNNI __attribute__((target(HWY_TARGET_STR ",avx512vnni")))

// One 256-value chunk: codes u[4] (values 64k .. 64k+63 in order), per-group S and S * c + M.
struct Chunk {
  __m512i u[4];
  __m512 S, Mf;
};

inline float F16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}
inline uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline __m512i Join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }
inline __m256i HighBits32(uint32_t bits, char value) { return _mm256_maskz_set1_epi8(bits, value); }

// IQ4 levels + 128 (as unsigned bytes), for vpshufb.
inline __m512i Iq4Table() {
  alignas(16) uint8_t t[16];
  for (int i = 0; i < 16; ++i) t[i] = static_cast<uint8_t>(formats::kIq4nlValues[i] + 128);
  return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(t)));
}

// Two blocks' 16 packed nibble bytes (a, b) -> 64 codes: a's low nibbles, a's high, b's low, b's high.
inline __m512i NibblePair(const uint8_t* a, const uint8_t* b) {
  const __m256i ab = _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), 1);
  __m512i z = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(ab));
  z = _mm512_mask_srli_epi16(z, 0xFF00FF00u, z, 4);  // 16-bit lanes of the 2nd and 4th 16 bytes
  return _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
}

// 16 per-group values from 8 per-block ones: lanes 2k, 2k+1 <- block k.
inline __m512 PerBlock(__m256 s8) {
  const __m512i idx = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  return _mm512_permutexvar_ps(idx, _mm512_castps256_ps512(s8));
}
// 16 bytes -> 16 floats (unsigned).
inline __m512 BytesToFloats(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b)); }

// ---- Transposed unpacking (ggml_dot.h, GgmlActs::qt): vector k, 32-bit lane g = group g's codes 4k..4k+3. ----
template <DType T>
constexpr bool kTransposed = T == DType::Q4_0 || T == DType::Q4_1 || T == DType::IQ4_NL || T == DType::Q2_K ||
                             T == DType::Q3_K || T == DType::Q4_K || T == DType::Q5_K || T == DType::Q6_K ||
                             T == DType::IQ4_XS;

// Per-k dword permutations and per-lane shifts for the K types and IQ4_XS (idx into the code bytes, idx2 / shift2
// for the high bits).
struct DwordTables {
  alignas(64) int32_t idx[4][16], shift[4][16], idx2[4][16], shift2[4][16];
};

template <DType T>
const DwordTables& Tables() {
  static const DwordTables t = [] {
    DwordTables d{};
    for (int k = 0; k < 4; ++k)
      for (int g = 0; g < 16; ++g) {
        int idx = 0, shift = 0, idx2 = 0, shift2 = 0;
        if (T == DType::Q4_K || T == DType::Q5_K) {  // group 4c + t: t = 0/1 low nibbles, 2/3 high
          const int c = g / 4, t = g % 4;
          idx = 8 * c + (t % 2) * 4 + k;
          idx2 = (t % 2) * 4 + k, shift2 = 2 * c + t / 2;  // Q5_K: qh byte l, bit 2c (+1 for high nibbles)
        } else if (T == DType::IQ4_XS) {  // group 2 ib + h: low / high nibbles of the sub-block's 16 bytes
          idx = 4 * (g / 2) + k;
        } else if (T == DType::Q2_K || T == DType::Q3_K) {  // group 8n + 2j + h: bits 2j of qs[32n + 16h + ...]
          const int n = g / 8, j = (g % 8) / 2, h = g % 2;
          idx = 8 * n + 4 * h + k, shift = 2 * j;
          idx2 = 4 * h + k, shift2 = 4 * n + j;  // Q3_K: hmask byte 16h + 4k + b, bit 4n + j
        } else if (T == DType::Q6_K) {  // group 8n + 2s + h: ql nibble (s >= 2: high) + 2 bits of qh at 2s
          const int n = g / 8, s2 = (g % 8) / 2, h = g % 2;
          idx = 16 * n + 8 * (s2 % 2) + 4 * h + k;
          idx2 = 8 * n + 4 * h + k, shift2 = 2 * s2;
        }
        d.idx[k][g] = idx, d.shift[k][g] = shift, d.idx2[k][g] = idx2, d.shift2[k][g] = shift2;
      }
    return d;
  }();
  return t;
}

// Byte permutations for the 32-value nibble types (eight blocks of bb bytes per chunk): lanes 2b / 2b + 1 take
// dword k of block b's 16 code bytes (low / high nibbles). Bytes in the first 128 of the chunk come from one
// two-source vpermt2b, the rest from the chunk's last 64 bytes (mask).
struct ByteTables {
  alignas(64) uint8_t a[4][64], b[4][64];
  uint64_t mask_b[4];
};

template <DType T>
const ByteTables& BTables() {
  static const ByteTables t = [] {
    constexpr int bb = T == DType::Q4_1 ? 20 : 18, hdr = T == DType::Q4_1 ? 4 : 2, cb = 8 * bb;
    ByteTables d{};
    for (int k = 0; k < 4; ++k)
      for (int blk = 0; blk < 8; ++blk)
        for (int j = 0; j < 4; ++j) {
          const int src = blk * bb + hdr + 4 * k + j;
          for (int lane : {2 * blk, 2 * blk + 1}) {
            const int pos = 4 * lane + j;
            if (src < 128) {
              d.a[k][pos] = static_cast<uint8_t>(src);
            } else {
              d.b[k][pos] = static_cast<uint8_t>(src - (cb - 64));
              d.mask_b[k] |= uint64_t{1} << pos;
            }
          }
        }
    return d;
  }();
  return t;
}

inline __m512i Ld512(const void* p) { return _mm512_loadu_si512(p); }
inline __m512i Idx(const int32_t* v) { return _mm512_load_si512(v); }

template <DType T>
LOWBIT_GGML_VNNI HWY_INLINE void UnpackCodesT(const uint8_t* p, Chunk& c) {
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  if constexpr (T == DType::Q4_0 || T == DType::Q4_1 || T == DType::IQ4_NL) {
    constexpr int cb = 8 * (T == DType::Q4_1 ? 20 : 18);
    const ByteTables& t = BTables<T>();
    const __m512i z0 = Ld512(p), z1 = Ld512(p + 64), z2 = Ld512(p + cb - 64);
    for (int k = 0; k < 4; ++k) {
      __m512i u = _mm512_permutex2var_epi8(z0, _mm512_load_si512(t.a[k]), z1);
      u = _mm512_mask_permutexvar_epi8(u, t.mask_b[k], _mm512_load_si512(t.b[k]), z2);
      u = _mm512_and_si512(_mm512_mask_srli_epi32(u, 0xAAAA, u, 4), m4);
      if constexpr (T == DType::IQ4_NL) u = _mm512_shuffle_epi8(Iq4Table(), u);
      c.u[k] = u;
    }
  } else {
    const DwordTables& t = Tables<T>();
    if constexpr (T == DType::Q4_K || T == DType::Q5_K || T == DType::IQ4_XS) {
      constexpr int off = T == DType::Q4_K ? 16 : T == DType::Q5_K ? 48 : 8;
      constexpr __mmask16 hi = T == DType::IQ4_XS ? 0xAAAA : 0xCCCC;
      const __m512i z0 = Ld512(p + off), z1 = Ld512(p + off + 64);
      __m512i qh = _mm512_setzero_si512();
      if constexpr (T == DType::Q5_K) qh = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
      for (int k = 0; k < 4; ++k) {
        __m512i u = _mm512_permutex2var_epi32(z0, Idx(t.idx[k]), z1);
        u = _mm512_and_si512(_mm512_mask_srli_epi32(u, hi, u, 4), m4);
        if constexpr (T == DType::Q5_K) {
          __m512i h = _mm512_srlv_epi32(_mm512_permutexvar_epi32(Idx(t.idx2[k]), qh), Idx(t.shift2[k]));
          u = _mm512_or_si512(u, _mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi8(1)), 4));
        }
        if constexpr (T == DType::IQ4_XS) u = _mm512_shuffle_epi8(Iq4Table(), u);
        c.u[k] = u;
      }
    } else if constexpr (T == DType::Q2_K || T == DType::Q3_K) {
      const __m512i z = Ld512(p + (T == DType::Q3_K ? 32 : 16));
      __m512i hm = _mm512_setzero_si512();
      if constexpr (T == DType::Q3_K) hm = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      for (int k = 0; k < 4; ++k) {
        __m512i u = _mm512_srlv_epi32(_mm512_permutexvar_epi32(Idx(t.idx[k]), z), Idx(t.shift[k]));
        u = _mm512_and_si512(u, _mm512_set1_epi8(3));
        if constexpr (T == DType::Q3_K) {
          __m512i h = _mm512_srlv_epi32(_mm512_permutexvar_epi32(Idx(t.idx2[k]), hm), Idx(t.shift2[k]));
          u = _mm512_or_si512(u, _mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi8(1)), 2));
        }
        c.u[k] = u;
      }
    } else if constexpr (T == DType::Q6_K) {
      const __m512i ql0 = Ld512(p), ql1 = Ld512(p + 64), qh = Ld512(p + 128);
      for (int k = 0; k < 4; ++k) {
        __m512i u = _mm512_permutex2var_epi32(ql0, Idx(t.idx[k]), ql1);
        u = _mm512_and_si512(_mm512_mask_srli_epi32(u, 0xF0F0, u, 4), m4);
        __m512i h = _mm512_srlv_epi32(_mm512_permutexvar_epi32(Idx(t.idx2[k]), qh), Idx(t.shift2[k]));
        c.u[k] = _mm512_or_si512(u, _mm512_slli_epi32(_mm512_and_si512(h, _mm512_set1_epi8(3)), 4));
      }
    }
  }
}

template <DType T>
LOWBIT_GGML_VNNI HWY_INLINE void Unpack(const uint8_t* p, Chunk& c) {
  if constexpr (T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q5_0 ||
                T == DType::Q5_1 || T == DType::IQ4_NL) {
    constexpr int bb = T == DType::Q8_0 ? 34 : T == DType::Q4_1 ? 20 : T == DType::Q5_0 ? 22 : T == DType::Q5_1 ? 24 : 18;
    constexpr bool has_min = T == DType::Q4_1 || T == DType::Q5_1;
    constexpr int hdr = has_min ? 4 : 2;  // bytes before qh / the codes
    constexpr float centre = T == DType::Q8_0 ? 128.f : T == DType::Q4_0 ? 8.f : T == DType::Q5_0 ? 16.f
                             : T == DType::IQ4_NL ? 128.f : 0.f;
    // The eight blocks' first 4 bytes in one gather: d in the low half, m (q4_1 / q5_1) in the high half.
    const __m256i hdrs = _mm256_i32gather_epi32(reinterpret_cast<const int*>(p),
                                                _mm256_setr_epi32(0, bb, 2 * bb, 3 * bb, 4 * bb, 5 * bb, 6 * bb, 7 * bb), 1);
    c.S = PerBlock(_mm256_cvtph_ps(_mm256_cvtepi32_epi16(hdrs)));
    c.Mf = _mm512_mul_ps(c.S, _mm512_set1_ps(centre));
    if constexpr (has_min)
      c.Mf = _mm512_sub_ps(c.Mf, PerBlock(_mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(hdrs, 16)))));
    if constexpr (kTransposed<T>) {
      UnpackCodesT<T>(p, c);
    } else {
      for (int k = 0; k < 4; ++k) {
        const uint8_t* a = p + 2 * k * bb;
        const uint8_t* b = a + bb;
        if constexpr (T == DType::Q8_0) {
          c.u[k] = _mm512_xor_si512(Join(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 2)),
                                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2))),
                                    _mm512_set1_epi8(-128));
        } else if constexpr (T == DType::Q5_0 || T == DType::Q5_1) {
          const uint64_t qh = static_cast<uint64_t>(U32(a + hdr)) | (static_cast<uint64_t>(U32(b + hdr)) << 32);
          c.u[k] = _mm512_or_si512(NibblePair(a + hdr + 4, b + hdr + 4), _mm512_maskz_set1_epi8(qh, 0x10));
        } else {
          c.u[k] = NibblePair(a + hdr, b + hdr);
        }
      }
      if constexpr (T == DType::IQ4_NL) {
        const __m512i tab = Iq4Table();
        for (int k = 0; k < 4; ++k) c.u[k] = _mm512_shuffle_epi8(tab, c.u[k]);
      }
    }
  } else {
    if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
      // 8 six-bit scales and mins from 12 bytes (the layout of formats/ggml_kquants.h's q4k_scale_min).
      const uint32_t x0 = U32(p + 4), x1 = U32(p + 8), x2 = U32(p + 12);
      const uint32_t sc_lo = x0 & 0x3f3f3f3f, m_lo = x1 & 0x3f3f3f3f;
      const uint32_t sc_hi = (x2 & 0x0f0f0f0f) | (((x0 >> 6) & 0x03030303) << 4);
      const uint32_t m_hi = ((x2 >> 4) & 0x0f0f0f0f) | (((x1 >> 6) & 0x03030303) << 4);
      const __m512 v = BytesToFloats(_mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi),
                                                    static_cast<int>(m_lo), static_cast<int>(m_hi)));
      const __m512i isc = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
      const __m512i im = _mm512_add_epi32(isc, _mm512_set1_epi32(8));
      c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p)), _mm512_permutexvar_ps(isc, v));
      c.Mf = _mm512_mul_ps(_mm512_set1_ps(F16(p + 2)), _mm512_permutexvar_ps(im, v));
    } else if constexpr (T == DType::Q6_K) {
      c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + 208)),
                          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)))));
      c.Mf = _mm512_mul_ps(c.S, _mm512_set1_ps(32.0f));
    } else if constexpr (T == DType::Q3_K || T == DType::Q2_K) {
      if constexpr (T == DType::Q3_K) {
        // 16 six-bit scales from 12 bytes: low nibbles in bytes 0..7, high 2 bits in bytes 8..11.
        const uint32_t a0 = U32(p + 96), a1 = U32(p + 100), a2 = U32(p + 104);
        const uint32_t s0 = (a0 & 0x0f0f0f0f) | ((a2 & 0x03030303) << 4);
        const uint32_t s1 = (a1 & 0x0f0f0f0f) | (((a2 >> 2) & 0x03030303) << 4);
        const uint32_t s2 = ((a0 >> 4) & 0x0f0f0f0f) | (((a2 >> 4) & 0x03030303) << 4);
        const uint32_t s3 = ((a1 >> 4) & 0x0f0f0f0f) | (((a2 >> 6) & 0x03030303) << 4);
        const __m512 v = BytesToFloats(_mm_setr_epi32(static_cast<int>(s0), static_cast<int>(s1),
                                                      static_cast<int>(s2), static_cast<int>(s3)));
        c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + 108)), _mm512_sub_ps(v, _mm512_set1_ps(32.0f)));
        c.Mf = _mm512_mul_ps(c.S, _mm512_set1_ps(4.0f));
      } else {
        const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + 80)),
                            _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(0xF))));
        c.Mf = _mm512_mul_ps(_mm512_set1_ps(F16(p + 82)), _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)));
      }
    } else if constexpr (T == DType::IQ4_XS) {
      // 8 six-bit sub-block scales: low 4 bits in scales_l (nibbles), high 2 bits in scales_h (pairs of bits).
      uint16_t sh;
      std::memcpy(&sh, p + 2, 2);
      const uint32_t sl = U32(p + 4);
      uint64_t ls = 0;
      for (int ib = 0; ib < 8; ++ib)
        ls |= static_cast<uint64_t>(((sl >> (4 * ib)) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)) << (8 * ib);
      const __m512 v = BytesToFloats(_mm_cvtsi64_si128(static_cast<long long>(ls)));
      c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p)), _mm512_sub_ps(PerBlock(_mm512_castps512_ps256(v)), _mm512_set1_ps(32.0f)));
      c.Mf = _mm512_mul_ps(c.S, _mm512_set1_ps(128.0f));
    }
    UnpackCodesT<T>(p, c);
  }
}

// Running sums of one (row, token) dot: two product chains (so consecutive FMAs do not wait on each other) and
// the centre/min term.
struct Acc {
  __m512 p0, p1, off;
  void zero() { p0 = p1 = off = _mm512_setzero_ps(); }
  float total() const { return _mm512_reduce_add_ps(_mm512_sub_ps(_mm512_add_ps(p0, p1), off)); }
};

// Adds chunk c's products with the activations at q (256 codes), dg / ag (16 groups) to acc.
LOWBIT_GGML_VNNI HWY_INLINE void DotChunk(const Chunk& c, const int8_t* q, const float* dg, const int32_t* ag,
                                          Acc& acc) {
  const __m512 dgv = _mm512_loadu_ps(dg);
  const __m512 sc = _mm512_mul_ps(c.S, dgv);
  for (int k = 0; k < 4; ++k) {
    const __m512i idx = _mm512_set_epi32(4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 3, 4 * k + 2, 4 * k + 2, 4 * k + 2,
                                         4 * k + 2, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k + 1, 4 * k, 4 * k, 4 * k,
                                         4 * k);
    const __m512i prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c.u[k],
                                             _mm512_loadu_si512(reinterpret_cast<const void*>(q + 64 * k)));
    __m512& chain = (k & 1) ? acc.p1 : acc.p0;
    chain = _mm512_fmadd_ps(_mm512_cvtepi32_ps(prod), _mm512_permutexvar_ps(idx, sc), chain);
  }
  acc.off = _mm512_fmadd_ps(_mm512_mul_ps(c.Mf, dgv),
                        _mm512_cvtepi32_ps(_mm512_loadu_si512(reinterpret_cast<const void*>(ag))), acc.off);
}

// The transposed layout: the four products accumulate in one int32 vector whose lane g is group g's sum, then one
// float FMA with the group scales.
LOWBIT_GGML_VNNI HWY_INLINE void DotChunkT(const Chunk& c, const int8_t* qt, const float* dg, const int32_t* ag,
                                           Acc& acc) {
  __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c.u[0], _mm512_loadu_si512(qt));
  s = _mm512_dpbusd_epi32(s, c.u[1], _mm512_loadu_si512(qt + 64));
  s = _mm512_dpbusd_epi32(s, c.u[2], _mm512_loadu_si512(qt + 128));
  s = _mm512_dpbusd_epi32(s, c.u[3], _mm512_loadu_si512(qt + 192));
  const __m512 dgv = _mm512_loadu_ps(dg);
  acc.p0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(c.S, dgv), acc.p0);
  acc.off = _mm512_fmadd_ps(_mm512_mul_ps(c.Mf, dgv),
                            _mm512_cvtepi32_ps(_mm512_loadu_si512(reinterpret_cast<const void*>(ag))), acc.off);
}

template <DType T>
LOWBIT_GGML_VNNI HWY_INLINE void Dot(const Chunk& c, const GgmlActs& a, int64_t ch, Acc& acc) {
  if constexpr (kTransposed<T>)
    DotChunkT(c, a.qt.data() + 256 * ch, a.dg.data() + 16 * ch, a.ag.data() + 16 * ch, acc);
  else
    DotChunk(c, a.q.data() + 256 * ch, a.dg.data() + 16 * ch, a.ag.data() + 16 * ch, acc);
}

constexpr size_t kPrefetch = 16384;  // bytes ahead of the chunk being unpacked

template <DType T>
LOWBIT_GGML_VNNI void RowsT(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  const size_t bb = dtype_info(T).block_bytes;
  const int B = static_cast<int>(dtype_info(T).block);
  const int64_t nblocks = w.cols / B;
  const int64_t per_chunk = 256 / B;
  const int64_t nchunks = nblocks / per_chunk;
  const size_t chunk_bytes = bb * static_cast<size_t>(per_chunk);
  if (n_tok == 1) {
    const GgmlActs& a = acts[0];
    // Four rows at a time: four independent streams keep more cache-line fills in flight than one.
    constexpr int kRows = 4;
    for (int64_t r = r0; r < r1; r += kRows) {
      const int nr = static_cast<int>(std::min<int64_t>(kRows, r1 - r));
      const uint8_t* rows[kRows];
      Acc acc[kRows];
      for (int i = 0; i < nr; ++i) {
        rows[i] = reinterpret_cast<const uint8_t*>(w.data + static_cast<size_t>(r + i) * w.row_bytes);
        acc[i].zero();
      }
      for (int64_t ch = 0; ch < nchunks; ++ch)
        for (int i = 0; i < nr; ++i) {
          // Software prefetch well ahead of each stream: the hardware prefetcher alone left decode at about half
          // the cache-resident speed.
          const uint8_t* cp = rows[i] + ch * chunk_bytes;
          for (size_t o = 0; o < chunk_bytes; o += 64)
            _mm_prefetch(reinterpret_cast<const char*>(cp + kPrefetch + o), _MM_HINT_T0);
          Chunk c;
          Unpack<T>(cp, c);
          Dot<T>(c, a, ch, acc[i]);
        }
      for (int i = 0; i < nr; ++i) {
        float s = acc[i].total();
        if (nchunks * per_chunk < nblocks)
          s += detail::ggml_dot_blocks_ref(T, reinterpret_cast<const std::byte*>(rows[i]), a, nchunks * per_chunk,
                                           nblocks);
        y[r + i - r0] = s;
      }
    }
    return;
  }
  // Batches: a panel of up to 8 rows is unpacked into a 64-byte aligned buffer of at most ~32 KiB (L1), then every
  // token's activations are loaded once per chunk and dotted with each row of the panel. Per (row, token) the
  // arithmetic is the decode path's, in the same order, so batched and single-token results are identical.
  constexpr int kMaxPanel = 8;
  const int64_t panel = std::clamp<int64_t>((32 << 10) / std::max<int64_t>(1, nchunks * static_cast<int64_t>(sizeof(Chunk))),
                                            1, kMaxPanel);
  thread_local hwy::AlignedFreeUniquePtr<Chunk[]> buf;
  thread_local int64_t cap = 0;
  if (cap < panel * nchunks) {
    buf = hwy::AllocateAligned<Chunk>(static_cast<size_t>(panel * nchunks));
    cap = panel * nchunks;
  }
  for (int64_t p0 = r0; p0 < r1; p0 += panel) {
    const int64_t np = std::min(panel, r1 - p0);
    for (int64_t i = 0; i < np; ++i) {
      const uint8_t* row = reinterpret_cast<const uint8_t*>(w.data + static_cast<size_t>(p0 + i) * w.row_bytes);
      for (int64_t ch = 0; ch < nchunks; ++ch) Unpack<T>(row + ch * chunk_bytes, buf[static_cast<size_t>(i * nchunks + ch)]);
    }
    for (int64_t t = 0; t < n_tok; ++t) {
      const GgmlActs& a = acts[t];
      Acc acc[kMaxPanel];
      for (int64_t i = 0; i < np; ++i) acc[i].zero();
      for (int64_t ch = 0; ch < nchunks; ++ch)
        for (int64_t i = 0; i < np; ++i)
          Dot<T>(buf[static_cast<size_t>(i * nchunks + ch)], a, ch, acc[i]);
      for (int64_t i = 0; i < np; ++i) {
        float s = acc[i].total();
        if (nchunks * per_chunk < nblocks)
          s += detail::ggml_dot_blocks_ref(T, w.data + static_cast<size_t>(p0 + i) * w.row_bytes, a,
                                           nchunks * per_chunk, nblocks);
        y[t * ldy + (p0 + i - r0)] = s;
      }
    }
  }
}

LOWBIT_GGML_VNNI void GemmGgmlRows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                  int64_t ldy) {
  switch (w.dtype) {
    case DType::Q8_0: return RowsT<DType::Q8_0>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q4_0: return RowsT<DType::Q4_0>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q4_1: return RowsT<DType::Q4_1>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q5_0: return RowsT<DType::Q5_0>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q5_1: return RowsT<DType::Q5_1>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::IQ4_NL: return RowsT<DType::IQ4_NL>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q2_K: return RowsT<DType::Q2_K>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q3_K: return RowsT<DType::Q3_K>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q4_K: return RowsT<DType::Q4_K>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q5_K: return RowsT<DType::Q5_K>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::Q6_K: return RowsT<DType::Q6_K>(w, acts, n_tok, r0, r1, y, ldy);
    case DType::IQ4_XS: return RowsT<DType::IQ4_XS>(w, acts, n_tok, r0, r1, y, ldy);
    default: fail("", "matmul", "no native kernel for type " + std::string(dtype_name(w.dtype)));
  }
}

#undef LOWBIT_GGML_VNNI
#else  // portable targets: the scalar reference

void GemmGgmlRows(const WeightView& w, const detail::GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                  int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < n_tok; ++t)
      y[t * ldy + (r - r0)] = detail::ggml_dot_row_ref(w.dtype, w.data + static_cast<size_t>(r) * w.row_bytes, acts[t]);
}

#endif

}  // namespace lowbit::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lowbit::ops::detail {
HWY_EXPORT(GemmGgmlRows);
void gemm_ggml_rows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                    int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmGgmlRows)(w, acts, n_tok, r0, r1, y, ldy);
}
}  // namespace lowbit::ops::detail
#endif
