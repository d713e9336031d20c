// SIMD matrix products on llama.cpp's block types (ops/ggml_dot.h). Compiled once per Highway target:
//  - AVX3_DL (AVX-512 VNNI/VBMI): the weights of a 256-value chunk (one K-type super-block, or eight 32-value
//    blocks) are unpacked in registers into four 64-byte vectors of unsigned codes u (nibble masks and shifts,
//    high bits from vptestmb masks, IQ4 levels by vpshufb) and multiplied with the int8 activations by vpdpbusd;
//    the 16 int32 lanes of each product are scaled by their 16-value group's S_g * da (one float FMA per 64
//    weights) and the centre/min terms (S_g * c + M_g) * da * A_g are one FMA per chunk. Block headers are read
//    with scalar code (K types) or eight fp16 loads and one vcvtph2ps (32-value types).
//    Batches of tokens: a register-tiled int8 GEMM over panels of unpacked rows (BatchRows).
//    The i-quants have no unrepacked AVX3_DL kernel: they are repacked at load (RepackIq: 3- or 4-bit indices into
//    their level set, looked up by vpshufb) and, unrepacked, take the reference.
//  - other targets (AVX3, AVX2, SSE4, SSSE3, ...): portable Highway kernels, see "Portable SIMD path" below.
//  - the scalar and EMU128 targets: the scalar reference (ggml_dot_ref.cpp).
// Rows whose length is not a multiple of 256 (32-value types only) finish their last < 8 blocks with the reference.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <cstdlib>
#include <sys/mman.h>
#include <type_traits>
#include <vector>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_kquants.h"
#include "formats/intn.h"
#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "ops/ggml_dot.h"
#include "ops/ops.h"
#include "ops/simd_path.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/ggml_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"


HWY_BEFORE_NAMESPACE();
namespace lowbit::ops::HWY_NAMESPACE {

namespace B = formats::blocks;

// Calls f(std::integral_constant<DType, T>{}) for an encodable llama.cpp type t (the kernels are instantiated per
// type); false for any other type.
template <class F>
bool VisitGgmlType(DType t, const F& f) {
  switch (t) {
#define LOWBIT_GGML_CASE(T) \
  case DType::T:            \
    f(std::integral_constant<DType, DType::T>{}); \
    return true;
    LOWBIT_GGML_CASE(Q8_0) LOWBIT_GGML_CASE(Q4_0) LOWBIT_GGML_CASE(Q4_1) LOWBIT_GGML_CASE(Q5_0)
    LOWBIT_GGML_CASE(Q5_1) LOWBIT_GGML_CASE(IQ4_NL) LOWBIT_GGML_CASE(Q2_K) LOWBIT_GGML_CASE(Q3_K)
    LOWBIT_GGML_CASE(Q4_K) LOWBIT_GGML_CASE(Q5_K) LOWBIT_GGML_CASE(Q6_K) LOWBIT_GGML_CASE(IQ4_XS)
#undef LOWBIT_GGML_CASE
    default:
      return false;
  }
}

// The scalar reference over rows [r0, r1) and n_tok tokens (types and targets without a SIMD kernel).
inline void RefRows(const WeightView& w, const detail::GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                    int64_t ldy) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t t = 0; t < n_tok; ++t)
      y[t * ldy + (r - r0)] = detail::ggml_dot_row_ref(w.dtype, w.data + static_cast<size_t>(r) * w.row_bytes, acts[t]);
}

#if LOWBIT_AVX512_VNNI_PATH

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

// A repacked matrix's lookup table (levels + 128 as unsigned bytes), for vpshufb.
inline __m512i LevelTable(const RepackedMatrix& m) {
  alignas(16) uint8_t t[16];
  for (int i = 0; i < 16; ++i) t[i] = static_cast<uint8_t>(m.levels[i] + 128);
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
      constexpr size_t off = T == DType::Q4_K   ? offsetof(B::Q4_K, qs)
                             : T == DType::Q5_K ? offsetof(B::Q5_K, qs)
                                                : offsetof(B::IQ4_XS, qs);
      constexpr __mmask16 hi = T == DType::IQ4_XS ? 0xAAAA : 0xCCCC;
      const __m512i z0 = Ld512(p + off), z1 = Ld512(p + off + 64);
      __m512i qh = _mm512_setzero_si512();
      if constexpr (T == DType::Q5_K)
        qh = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + offsetof(B::Q5_K, qh))));
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
      const __m512i ql0 = Ld512(p + offsetof(B::Q6_K, ql)), ql1 = Ld512(p + offsetof(B::Q6_K, ql) + 64),
                    qh = Ld512(p + offsetof(B::Q6_K, qh));
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
      // 8 six-bit scales and mins from 12 bytes.
      alignas(16) uint8_t by[16];
      formats::q4k_scales_mins16(p + offsetof(B::Q4_K, scales), by);
      const __m512 v = BytesToFloats(_mm_load_si128(reinterpret_cast<const __m128i*>(by)));
      const __m512i isc = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
      const __m512i im = _mm512_add_epi32(isc, _mm512_set1_epi32(8));
      c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + offsetof(B::Q4_K, d))), _mm512_permutexvar_ps(isc, v));
      c.Mf = _mm512_mul_ps(_mm512_set1_ps(F16(p + offsetof(B::Q4_K, dmin))), _mm512_permutexvar_ps(im, v));
    } else if constexpr (T == DType::Q6_K) {
      c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + offsetof(B::Q6_K, d))),
                          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + offsetof(B::Q6_K, scales))))));
      c.Mf = _mm512_mul_ps(c.S, _mm512_set1_ps(32.0f));
    } else if constexpr (T == DType::Q3_K || T == DType::Q2_K) {
      if constexpr (T == DType::Q3_K) {
        alignas(16) uint8_t by[16];
        formats::q3k_scales16(p + offsetof(B::Q3_K, scales), by);
        const __m512 v = BytesToFloats(_mm_load_si128(reinterpret_cast<const __m128i*>(by)));
        c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + offsetof(B::Q3_K, d))), _mm512_sub_ps(v, _mm512_set1_ps(32.0f)));
        c.Mf = _mm512_mul_ps(c.S, _mm512_set1_ps(4.0f));
      } else {
        const __m512i sc =
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + offsetof(B::Q2_K, scales))));
        c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + offsetof(B::Q2_K, d))),
                            _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(0xF))));
        c.Mf = _mm512_mul_ps(_mm512_set1_ps(F16(p + offsetof(B::Q2_K, dmin))), _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)));
      }
    } else if constexpr (T == DType::IQ4_XS) {
      // 8 six-bit sub-block scales: low 4 bits in scales_l (nibbles), high 2 bits in scales_h (pairs of bits).
      uint16_t sh;
      std::memcpy(&sh, p + offsetof(B::IQ4_XS, scales_h), 2);
      const uint32_t sl = U32(p + offsetof(B::IQ4_XS, scales_l));
      uint64_t ls = 0;
      for (int ib = 0; ib < 8; ++ib)
        ls |= static_cast<uint64_t>(((sl >> (4 * ib)) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)) << (8 * ib);
      const __m512 v = BytesToFloats(_mm_cvtsi64_si128(static_cast<long long>(ls)));
      c.S = _mm512_mul_ps(_mm512_set1_ps(F16(p + offsetof(B::IQ4_XS, d))), _mm512_sub_ps(PerBlock(_mm512_castps512_ps256(v)), _mm512_set1_ps(32.0f)));
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

// ---- Batches of tokens (prefill): a register-tiled int8 GEMM ----------------------------------------------------
// Layout (GgmlActs, gemm = true): a unit is the type's scale group (16 or 32 values), a super-chunk 16 units, and
// vector k of a super-chunk holds in 32-bit lane j unit j's codes 4k..4k+3, so K = unit / 4 vpdpbusd leave unit
// j's integer sum in lane j; then one float step per (row, token, super-chunk): acc += float(sum) * S_j * du_j
// (and, with a min, acc -= M_j * du_j * A_j). Types without a min start the integer sums at -centre * A_j, so their
// centre term costs nothing. With 32-value units that is 8 vpdpbusd per 2 float ops (4 + 4 in the decode
// kernel's 16-group layout). A panel of rows is unpacked once into an L2-resident buffer in that layout (the SIMD
// unpacking for whole 256-value chunks, rearranged; the scalar decomposition for a partial super-chunk), and
// each register tile of kTileRows rows x kTileTok tokens loads every code vector once per super-chunk.

template <DType T>
constexpr int kUnit = B::traits(T).scale_group;
template <DType T>
constexpr int kVecs = kUnit<T> / 4;  // code vectors per super-chunk

// One row's super-chunk: codes, S_j, M_j (with a min; else unused).
template <int K>
struct Super {
  __m512i u[K];
  __m512 S, M;
  __m512i C;  // Fold::Zero (decode): zero_j, 16 bits in each 32-bit lane (vpmaddwd's operand)
};

// Chunk c (natural order: u[k] = values 64k .. 64k+63) rewritten in the transposed layout.
LOWBIT_GGML_VNNI HWY_INLINE void TransposeCodes(Chunk& c) {
  alignas(64) static const struct Idx {
    uint8_t v[4][64];
    Idx() {
      for (int k = 0; k < 4; ++k)
        for (int g = 0; g < 16; ++g)
          for (int j = 0; j < 4; ++j) v[k][4 * g + j] = static_cast<uint8_t>(16 * (g % 4) + 4 * k + j);
    }
  } idx;
  __m512i out[4];
  for (int k = 0; k < 4; ++k) {
    const __m512i ix = _mm512_load_si512(idx.v[k]);
    __m512i o = _mm512_maskz_permutexvar_epi8(0x000000000000FFFFull, ix, c.u[0]);
    o = _mm512_mask_permutexvar_epi8(o, 0x00000000FFFF0000ull, ix, c.u[1]);
    o = _mm512_mask_permutexvar_epi8(o, 0x0000FFFF00000000ull, ix, c.u[2]);
    out[k] = _mm512_mask_permutexvar_epi8(o, 0xFFFF000000000000ull, ix, c.u[3]);
  }
  for (int k = 0; k < 4; ++k) c.u[k] = out[k];
}

// A 256-value chunk in the transposed 16-group layout (every type).
template <DType T>
LOWBIT_GGML_VNNI HWY_INLINE void UnpackTransposed(const uint8_t* p, Chunk& c) {
  Unpack<T>(p, c);
  if constexpr (!kTransposed<T>) TransposeCodes(c);
}

// Super-chunk from the scalar decomposition: values [v0, v1) of the row (whole blocks) fill it from the start;
// the rest is zero (codes and scales), so it adds nothing.
template <DType T>
void SuperFromTerms(const uint8_t* row, int64_t v0, int64_t v1, Super<kVecs<T>>& out) {
  constexpr int unit = kUnit<T>, Bv = B::traits(T).values;
  alignas(64) uint8_t u[kVecs<T>][64] = {};
  alignas(64) float S[16] = {}, M[16] = {};
  detail::GgmlBlockTerms bt;
  for (int64_t v = v0; v < v1; v += Bv) {
    detail::ggml_block_terms(T, reinterpret_cast<const std::byte*>(row + v / Bv * B::traits(T).bytes), bt);
    for (int i = 0; i < Bv; ++i) {
      const int64_t x = v - v0 + i;
      const int j = static_cast<int>(x / unit), w = static_cast<int>(x % unit);
      u[w / 4][4 * j + w % 4] = bt.u[i];
      S[j] = bt.S[i / 16];
      M[j] = bt.M[i / 16];
    }
  }
  for (int k = 0; k < kVecs<T>; ++k) out.u[k] = _mm512_load_si512(u[k]);
  out.S = _mm512_load_ps(S);
  out.M = _mm512_load_ps(M);
}

// Super-chunk s of a row whose values [0, n) are whole blocks.
template <DType T>
LOWBIT_GGML_VNNI HWY_INLINE void UnpackSuper(const uint8_t* row, int64_t s, int64_t n, Super<kVecs<T>>& out) {
  constexpr int super = 16 * kUnit<T>;
  constexpr size_t chunk_bytes = B::traits(T).bytes * (256 / B::traits(T).values);
  const int64_t v0 = s * super;
  if (v0 + super > n) return SuperFromTerms<T>(row, v0, n, out);
  const uint8_t* p = row + v0 / 256 * chunk_bytes;
  if constexpr (kUnit<T> == 16) {
    Chunk c;
    UnpackTransposed<T>(p, c);
    for (int k = 0; k < 4; ++k) out.u[k] = c.u[k];
    out.S = c.S;
    out.M = c.Mf;  // S * centre + M, and centre is 0 where there is a min
  } else {
    // Two chunks' 16-group layouts -> 32-value units: unit j = groups 2j, 2j+1 of chunk j / 8; vector k reads
    // group 2j + k / 4, vector k % 4.
    Chunk a, b;
    UnpackTransposed<T>(p, a);
    UnpackTransposed<T>(p + chunk_bytes, b);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int k = 0; k < 8; ++k)
      out.u[k] = _mm512_permutex2var_epi32(a.u[k % 4], k < 4 ? even : odd, b.u[k % 4]);
    out.S = _mm512_permutex2var_ps(a.S, even, b.S);
    out.M = _mm512_permutex2var_ps(a.Mf, even, b.Mf);
  }
}

constexpr int kTileRows = 4, kTileTok = 3;

// The horizontal sums of a, b, c, d as one vector (13 shuffles and adds instead of four reductions of ~8).
LOWBIT_GGML_VNNI HWY_INLINE __m128 Sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));  // a0+a2 b0+b2 a1+a3 b1+b3
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));  // a b c d
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// A tile's results: y[t * ldy + i] = sum of acc[i][t]'s lanes, for rows i < nr.
template <int NT>
LOWBIT_GGML_VNNI HWY_INLINE void StoreTile(const __m512 (&acc)[kTileRows][NT], int nr, float* y, int64_t ldy) {
  static_assert(kTileRows == 4, "Sum4 reduces four rows");
  for (int t = 0; t < NT; ++t) {
    const __m128 r = Sum4(acc[0][t], acc[1][t], acc[2][t], acc[3][t]);
    if (nr == 4) {
      _mm_storeu_ps(y + t * ldy, r);
    } else {
      alignas(16) float v[4];
      _mm_store_ps(v, r);
      for (int i = 0; i < nr; ++i) y[t * ldy + i] = v[i];
    }
  }
}

// How a tile takes the weights' offset out of its integer sums s_j = sum over unit j of u * a:
//   Centre: s starts at the token's -centre * A_j (GgmlActs::ci; types without a min, centre in the codes);
//   Min:    one more float step per (row, token), - M_j * du * A_j (GgmlActs::da; types with a float min);
//   Zero:   an integer zero point (repacked int4): s ends with - zero_j * A_j (GgmlActs::as; one vpmaddwd, both
//           within 16 bits), an exact integer, so decode and batches differ in float order only (GemvRepacked,
//           TileRepacked4).
enum class Fold { Centre, Min, Zero };

// y[t * ldy + i] for rows i < nr (Super arrays at w + i * wstride; the tile repeats the last row past nr) and
// tokens t < NT, over `supers` super-chunks.
template <int K, Fold F, int NT>
LOWBIT_GGML_VNNI HWY_INLINE void Tile(const Super<K>* w, int64_t wstride, int nr, const GgmlActs* const* tok,
                                      int64_t supers, float* y, int64_t ldy) {
  constexpr int R = kTileRows;
  const Super<K>* row[R];
  for (int i = 0; i < R; ++i) row[i] = w + std::min(i, nr - 1) * wstride;
  const int8_t* qg[NT];
  const float *du[NT], *da[NT];
  const int32_t* ci[NT];
  for (int t = 0; t < NT; ++t)
    qg[t] = tok[t]->qg.data(), du[t] = tok[t]->du.data(), da[t] = tok[t]->da.data(), ci[t] = tok[t]->ci.data();
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t sc = 0; sc < supers; ++sc) {
    __m512i s[R][NT];
    for (int t = 0; t < NT; ++t) {
      const __m512i init = F == Fold::Min ? _mm512_setzero_si512() : _mm512_loadu_si512(ci[t] + 16 * sc);
      for (int i = 0; i < R; ++i) s[i][t] = init;
    }
    for (int k = 0; k < K; ++k) {
      __m512i a[NT];
      for (int t = 0; t < NT; ++t) a[t] = _mm512_loadu_si512(qg[t] + 64 * (K * sc + k));
      for (int i = 0; i < R; ++i) {
        const __m512i u = _mm512_load_si512(&row[i][sc].u[k]);
        for (int t = 0; t < NT; ++t)  // vpdpbusd: unsigned bytes first, signed second
          s[i][t] = _mm512_dpbusd_epi32(s[i][t], u, a[t]);
      }
    }
    for (int t = 0; t < NT; ++t) {
      const __m512 d = _mm512_loadu_ps(du[t] + 16 * sc);
      for (int i = 0; i < R; ++i) {
        acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][t]), _mm512_mul_ps(row[i][sc].S, d), acc[i][t]);
        if constexpr (F == Fold::Min) acc[i][t] = _mm512_fnmadd_ps(row[i][sc].M, _mm512_loadu_ps(da[t] + 16 * sc), acc[i][t]);
      }
    }
  }
  StoreTile<NT>(acc, nr, y, ldy);
}

inline const uint8_t* RowBytes(const WeightView& w, int64_t r) {
  return reinterpret_cast<const uint8_t*>(w.data + static_cast<size_t>(r) * w.row_bytes);
}

// Rows [r0, r1) of w times n_tok tokens: panels of rows unpacked by unpack(r, s, super) into Super<K>, then
// register tiles. K (code vectors per super-chunk) and F describe the weights' units.
template <int K, Fold F, class Unpacker>
LOWBIT_GGML_VNNI void BatchTiles(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1,
                                 float* y, int64_t ldy, const Unpacker& unpack) {
  using S = Super<K>;
  const int64_t supers = (w.cols + 64 * K - 1) / (64 * K);
  for (int64_t t = 0; t < n_tok; ++t)
    if (acts[t].unit != 4 * K || acts[t].supers != supers || acts[t].n < w.cols)
      fail("", "matmul", "batched activations were not quantized for this GEMM (quantize_acts_batched)");
  // Rows per panel: about 256 KiB of unpacked super-chunks (L2), a multiple of the tile.
  const int64_t row_bytes = std::max<int64_t>(1, supers) * static_cast<int64_t>(sizeof(S));
  const int64_t panel = std::clamp<int64_t>((256 << 10) / row_bytes / kTileRows, 1, 16) * kTileRows;
  thread_local hwy::AlignedFreeUniquePtr<uint8_t[]> buf;
  thread_local size_t cap = 0;
  const size_t need = static_cast<size_t>(panel * supers) * sizeof(S);
  if (cap < need) {
    buf = hwy::AllocateAligned<uint8_t>(need);
    cap = need;
  }
  S* sup = reinterpret_cast<S*>(buf.get());
  const GgmlActs* tok[kTileTok];
  for (int64_t p0 = r0; p0 < r1; p0 += panel) {
    const int64_t np = std::min(panel, r1 - p0);
    for (int64_t i = 0; i < np; ++i)
      for (int64_t sc = 0; sc < supers; ++sc) unpack(p0 + i, sc, sup[i * supers + sc]);
    for (int64_t t0 = 0; t0 < n_tok; t0 += kTileTok) {
      const int nt = static_cast<int>(std::min<int64_t>(kTileTok, n_tok - t0));
      for (int t = 0; t < nt; ++t) tok[t] = &acts[t0 + t];
      for (int64_t i0 = 0; i0 < np; i0 += kTileRows) {
        const S* wp = sup + i0 * supers;
        const int nr = static_cast<int>(std::min<int64_t>(kTileRows, np - i0));
        float* yt = y + t0 * ldy + (p0 + i0 - r0);
        static_assert(kTileTok == 3);
        if (nt == 3)
          Tile<K, F, 3>(wp, supers, nr, tok, supers, yt, ldy);
        else if (nt == 2)
          Tile<K, F, 2>(wp, supers, nr, tok, supers, yt, ldy);
        else
          Tile<K, F, 1>(wp, supers, nr, tok, supers, yt, ldy);
      }
    }
  }
}

template <DType T>
LOWBIT_GGML_VNNI void BatchRows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1,
                                float* y, int64_t ldy) {
  BatchTiles<kVecs<T>, B::traits(T).has_min ? Fold::Min : Fold::Centre>(
      w, acts, n_tok, r0, r1, y, ldy,
      [&](int64_t r, int64_t sc, Super<kVecs<T>>& out) LOWBIT_GGML_VNNI { UnpackSuper<T>(RowBytes(w, r), sc, w.cols, out); });
}

// ---- lowbit intN weights in the unit layout (for repacking) ----
// A code c decodes to scale * (c - offset): a type with a min (S = scale, M = scale * offset, centre 0) whose
// blocks (32, 64 or 128 values) are whole 32-value units, so the activations are those of Q4_1 (Q8_0's rules).
// 4- and 8-bit codes of whole super-chunks are gathered straight into the unit layout (4-bit: the code bytes of
// vector k are bytes 2k, 2k + 1 of each unit, split into nibbles); the last partial super-chunk goes through the
// scalar block unpacking. (Other widths keep the f32 panels for prefill: their decode GEMV uses 11- or 13-bit
// activations, and int8 ones in prefill alone would differ from it by more than 0.1% in perplexity.)
LOWBIT_GGML_VNNI void UnpackSuperIntN(const formats::IntNFormat& f, const uint8_t* row, int64_t s, int64_t n,
                                      Super<8>& out) {
  const int G = f.block(), bits = f.bits();
  const size_t bb = f.block_bytes(), hdr = formats::intn_codes_offset(f);
  const int64_t v0 = s * 512, first = v0 / G;
  alignas(64) float S[16] = {}, M[16] = {};
  formats::IntNBlock p{};
  if (v0 + 512 <= n && (bits == 4 || bits == 8)) {
    alignas(64) int32_t idx[16];
    for (int j = 0; j < 16; ++j) {
      const int64_t v = v0 + 32 * j, b = v / G, o = v % G;
      idx[j] = static_cast<int32_t>((b - first) * static_cast<int64_t>(bb) + static_cast<int64_t>(hdr) + o * bits / 8);
      if (j == 0 || o == 0) p = formats::intn_block_params(f, reinterpret_cast<const std::byte*>(row + b * bb));
      S[j] = p.scale;
      M[j] = p.scale * p.offset;
    }
    const uint8_t* base = row + first * static_cast<int64_t>(bb);
    const __m512i vi = _mm512_load_si512(idx);
    if (bits == 8) {
      for (int k = 0; k < 8; ++k) out.u[k] = _mm512_i32gather_epi32(vi, base + 4 * k, 1);
    } else {
      // The dword ending at the two code bytes (its first two bytes are earlier bytes of the block: never past
      // the tensor's end), bytes 2, 2, 3, 3 of it, then low / high nibbles.
      alignas(64) static const struct Shuf {
        uint8_t v[64];
        Shuf() {
          for (int d = 0; d < 16; ++d) {
            const int l = 4 * (d % 4);  // vpshufb indexes within each 128-bit lane
            v[4 * d] = v[4 * d + 1] = static_cast<uint8_t>(l + 2);
            v[4 * d + 2] = v[4 * d + 3] = static_cast<uint8_t>(l + 3);
          }
        }
      } shuf;
      const __m512i sh = _mm512_load_si512(shuf.v);
      const __m512i m4 = _mm512_set1_epi8(0x0F);
      for (int k = 0; k < 8; ++k) {
        const __m512i wd = _mm512_i32gather_epi32(vi, base + 2 * k - 2, 1);
        const __m512i t = _mm512_shuffle_epi8(wd, sh);
        out.u[k] = _mm512_and_si512(_mm512_mask_blend_epi8(0xAAAAAAAAAAAAAAAAull, t, _mm512_srli_epi16(t, 4)), m4);
      }
    }
  } else {
    alignas(64) uint8_t u[8][64] = {};
    alignas(64) uint8_t codes[128];
    const int64_t v1 = std::min<int64_t>(v0 + 512, n);
    for (int64_t b = first; b * G < v1; ++b) {
      p = formats::intn_unpack_block(f, reinterpret_cast<const std::byte*>(row + b * bb), codes);
      for (int i = 0; i < G; ++i) {
        const int64_t v = b * G + i;
        if (v < v0 || v >= v1) continue;
        const int x = static_cast<int>(v - v0), j = x / 32, wi = x % 32;
        u[wi / 4][4 * j + wi % 4] = codes[i];
        S[j] = p.scale;
        M[j] = p.scale * p.offset;
      }
    }
    for (int k = 0; k < 8; ++k) out.u[k] = _mm512_load_si512(u[k]);
  }
  out.S = _mm512_load_ps(S);
  out.M = _mm512_load_ps(M);
}

// ---- Repacked weights (ops.h repack_for_kernels; layout in ops/ggml_dot.h RepackedMatrix) ----------------------

// Super-chunk s of row r of w (a repackable type) in the unit layout.
LOWBIT_GGML_VNNI void UnpackAnySuper(const WeightView& w, int64_t r, int64_t s, Super<8>& out) {
  if (w.intn) return UnpackSuperIntN(*w.intn, RowBytes(w, r), s, w.cols, out);
  switch (w.dtype) {
    case DType::Q4_0: return UnpackSuper<DType::Q4_0>(RowBytes(w, r), s, w.cols, out);
    case DType::Q4_1: return UnpackSuper<DType::Q4_1>(RowBytes(w, r), s, w.cols, out);
    case DType::IQ4_NL: return UnpackSuper<DType::IQ4_NL>(RowBytes(w, r), s, w.cols, out);
    case DType::Q4_K: return UnpackSuper<DType::Q4_K>(RowBytes(w, r), s, w.cols, out);
    case DType::IQ4_XS: return UnpackSuper<DType::IQ4_XS>(RowBytes(w, r), s, w.cols, out);
    case DType::Q8_0: return UnpackSuper<DType::Q8_0>(RowBytes(w, r), s, w.cols, out);
    default: fail("", "repack", "type " + std::string(dtype_name(w.dtype)) + " is not repackable");
  }
}

// The repacked form of w on this target, or a RepackedMatrix with rows == 0 where w's type has none.
LOWBIT_GGML_VNNI RepackedMatrix RepackShape(const WeightView& w) {
  RepackedMatrix m;
  if (w.intn) {
    const formats::IntNFormat& f = *w.intn;
    if (!((f.bits() == 4 || f.bits() == 8) && f.block() % 32 == 0 && f.block() <= 128)) return m;
    m.acts = DType::Q4_1, m.bits = f.bits(), m.has_min = true;
    m.zero_shift = f.block() == 32 ? 0 : f.block() == 64 ? 1 : 2;
  } else {
    // The i-quants (the types with a level set): 3-bit indices where it has at most 8 levels (IQ2, IQ1), else 4-bit
    // (IQ3), in the type's scale units.
    const int iq_levels = formats::ggml_iq_level_set(w.dtype).count;
    if (iq_levels > 0) m.bits = iq_levels <= 8 ? 3 : 4, m.lookup = true, m.unit = B::traits(w.dtype).scale_group;
    else switch (w.dtype) {
      case DType::Q4_0: case DType::Q4_1: case DType::Q4_K: m.bits = 4; break;
      case DType::IQ4_NL: case DType::IQ4_XS: m.bits = 4, m.lookup = true; break;
      case DType::Q8_0: m.bits = 8; break;
      case DType::Q2_K: m.bits = 2, m.unit = 16; break;
      case DType::Q3_K: m.bits = 3, m.unit = 16; break;
      case DType::Q6_K: m.bits = 6, m.unit = 16; break;
      default: return m;
    }
    m.acts = w.dtype;
    m.has_min = B::traits(w.dtype).has_min;
    if (m.lookup) {
      const formats::IqLevelSet& set = formats::ggml_iq_level_set(w.dtype);
      if (set.count > 0)
        std::copy(set.level, set.level + set.count, m.levels);
      else
        std::copy(formats::kIq4nlValues, formats::kIq4nlValues + 16, m.levels);
    }
  }
  if (m.unit == 16) {
    m.header = RepackHeader::K16;
    m.rows = w.rows;
    m.groups = (w.rows + 3) / 4;
    m.supers = (w.cols + 255) / 256;
    const size_t codes = m.bits == 2 ? 64 : m.bits == 3 ? 64 + 32 : m.bits == 4 ? 128 : 128 + 64;
    m.super_bytes = codes + (m.has_min ? 8 : 4) + 16;
    return m;
  }
  m.header = w.intn                                                            ? RepackHeader::Zero
             : (B::traits(w.dtype).values == 256 && w.dtype != DType::Q8_0) ? RepackHeader::Scaled  // Q4_K, IQ*
                                                                            : RepackHeader::Half;
  m.rows = w.rows;
  m.groups = (w.rows + 3) / 4;
  m.supers = (w.cols + 511) / 512;
  const int mins = m.has_min ? 2 : 1;
  m.super_bytes = static_cast<size_t>(64 * m.bits) + (m.header == RepackHeader::Half     ? 32 * mins
                                                       : m.header == RepackHeader::Scaled ? 16 + 16 * mins
                                                                                          : 3 * (16 >> m.zero_shift));
  return m;
}

// A Q2_K / Q3_K / Q6_K super-chunk (one block at blk) repacked to p (layout in ops/ggml_dot.h).
LOWBIT_GGML_VNNI void RepackK16(DType t, const uint8_t* blk, uint8_t* p) {
  Chunk c;
  const __m512i m3 = _mm512_set1_epi8(3);
  switch (t) {
    case DType::Q2_K: UnpackTransposed<DType::Q2_K>(blk, c); break;
    case DType::Q3_K: UnpackTransposed<DType::Q3_K>(blk, c); break;
    default: UnpackTransposed<DType::Q6_K>(blk, c); break;
  }
  auto pack2 = [&](const __m512i* v, int shift) {  // bits shift, shift + 1 of four vectors, two bits each per byte
    __m512i o = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k)
      o = _mm512_or_si512(o, _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(v[k], shift), m3), 2 * k));
    return o;
  };
  size_t h;
  if (t == DType::Q2_K) {
    _mm512_storeu_si512(p, pack2(c.u, 0));
    h = 64;
  } else if (t == DType::Q3_K) {
    _mm512_storeu_si512(p, pack2(c.u, 0));
    for (int k = 0; k < 4; ++k) {
      const uint64_t hb = _mm512_test_epi8_mask(c.u[k], _mm512_set1_epi8(4));
      std::memcpy(p + 64 + 8 * k, &hb, 8);
    }
    h = 96;
  } else {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; k += 2)
      _mm512_storeu_si512(p + 32 * k, _mm512_or_si512(_mm512_and_si512(c.u[k], m4),
                                                      _mm512_slli_epi16(_mm512_and_si512(c.u[k + 1], m4), 4)));
    _mm512_storeu_si512(p + 128, pack2(c.u, 4));
    h = 192;
  }
  if (t == DType::Q2_K) {
    const float d = F16(blk + offsetof(B::Q2_K, d)), dmin = F16(blk + offsetof(B::Q2_K, dmin));
    std::memcpy(p + h, &d, 4);
    std::memcpy(p + h + 4, &dmin, 4);
    std::memcpy(p + h + 8, blk + offsetof(B::Q2_K, scales), 16);
  } else if (t == DType::Q3_K) {
    const float d = F16(blk + offsetof(B::Q3_K, d));
    uint8_t by[16];
    formats::q3k_scales16(blk + offsetof(B::Q3_K, scales), by);
    int8_t sc[16];
    for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(by[j] - 32);
    std::memcpy(p + h, &d, 4);
    std::memcpy(p + h + 4, sc, 16);
  } else {
    const float d = F16(blk + offsetof(B::Q6_K, d));
    std::memcpy(p + h, &d, 4);
    std::memcpy(p + h + 4, blk + offsetof(B::Q6_K, scales), 16);
  }
}

// The four code vectors and S, M of a repacked Q2_K (Bits 2) / Q3_K (3) / Q6_K (6) super-chunk.
// Lookup: the codes are indices into tab (LevelTable): the i-quants, 3 bits as Q3_K's or 4 bits (two vectors per
// 64 bytes).
template <int Bits, bool Lookup>
LOWBIT_GGML_VNNI HWY_INLINE void RepackedK16(const uint8_t* p, Super<4>& out, __m512i tab) {
  if constexpr (Bits == 4) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; k += 2) {
      const __m512i c = _mm512_loadu_si512(p + 32 * k);
      out.u[k] = _mm512_shuffle_epi8(tab, _mm512_and_si512(c, m4));
      out.u[k + 1] = _mm512_shuffle_epi8(tab, _mm512_and_si512(_mm512_srli_epi16(c, 4), m4));
    }
    float d;
    std::memcpy(&d, p + 128, 4);
    out.S = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 132)))));
    out.M = _mm512_setzero_ps();
    return;
  }
  static_assert(!Lookup || Bits == 3 || Bits == 4, "lookups: 3 or 4 bits");
  (void)tab;
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m512i two = _mm512_loadu_si512(p + (Bits == 6 ? 128 : 0));
  for (int k = 0; k < 4; ++k) out.u[k] = _mm512_and_si512(_mm512_srli_epi16(two, 2 * k), m3);
  size_t h = 64;
  if constexpr (Bits == 3) {
    for (int k = 0; k < 4; ++k) {
      uint64_t hb;
      std::memcpy(&hb, p + 64 + 8 * k, 8);
      out.u[k] = _mm512_or_si512(out.u[k], _mm512_maskz_set1_epi8(hb, 4));
      if constexpr (Lookup) out.u[k] = _mm512_shuffle_epi8(tab, out.u[k]);
    }
    h = 96;
  } else if constexpr (Bits == 6) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; k += 2) {
      const __m512i c = _mm512_loadu_si512(p + 32 * k);
      out.u[k] = _mm512_or_si512(_mm512_and_si512(c, m4), _mm512_slli_epi16(out.u[k], 4));
      out.u[k + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(c, 4), m4), _mm512_slli_epi16(out.u[k + 1], 4));
    }
    h = 192;
  }
  float d;
  std::memcpy(&d, p + h, 4);
  if constexpr (Bits == 2) {
    float dmin;
    std::memcpy(&dmin, p + h + 4, 4);
    const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + h + 8)));
    out.S = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_and_si512(sc, _mm512_set1_epi32(0xF))));
    out.M = _mm512_mul_ps(_mm512_set1_ps(dmin), _mm512_cvtepi32_ps(_mm512_srli_epi32(sc, 4)));
  } else {
    out.S = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + h + 4)))));
    out.M = _mm512_setzero_ps();
  }
}

// The Scaled header of super-chunk sc of a Q4_K / IQ4_XS row (the two 256-value blocks' fields; zero past the row).
void ScaledHeader(const WeightView& w, const uint8_t* row, int64_t sc, uint8_t* h, bool has_min) {
  float d[4] = {0, 0, 0, 0};
  int8_t scale[16] = {}, mins[16] = {};
  for (int half = 0; half < 2; ++half) {
    const int64_t b = 2 * sc + half;
    if (b * 256 >= w.cols) break;
    const uint8_t* p = row + b * B::traits(w.dtype).bytes;
    if (w.dtype == DType::Q4_K) {
      uint8_t by[16];
      formats::q4k_scales_mins16(p + offsetof(B::Q4_K, scales), by);
      d[half] = F16(p + offsetof(B::Q4_K, d));
      d[2 + half] = F16(p + offsetof(B::Q4_K, dmin));
      for (int j = 0; j < 8; ++j) scale[8 * half + j] = static_cast<int8_t>(by[j]), mins[8 * half + j] = static_cast<int8_t>(by[8 + j]);
    } else {  // IQ4_XS: 6-bit ls, low 4 bits in scales_l (nibbles), high 2 in scales_h
      uint16_t sh;
      std::memcpy(&sh, p + offsetof(B::IQ4_XS, scales_h), 2);
      const uint32_t sl = U32(p + offsetof(B::IQ4_XS, scales_l));
      d[half] = F16(p + offsetof(B::IQ4_XS, d));
      for (int j = 0; j < 8; ++j)
        scale[8 * half + j] = static_cast<int8_t>((((sl >> (4 * j)) & 0xF) | (((sh >> (2 * j)) & 3) << 4)) - 32);
    }
  }
  std::memcpy(h, d, 16);
  std::memcpy(h + 16, scale, 16);
  if (has_min) std::memcpy(h + 32, mins, 16);
}

// The Zero header of super-chunk sc of an intN row (one scale and zero per block: 512 / block of each): false where
// a block's zero is not an integer in [0, 255] (decode accepts any fp16 there; such weights keep the unrepacked
// kernels).
bool ZeroHeader(const WeightView& w, const uint8_t* row, int64_t sc, uint8_t* h) {
  const formats::IntNFormat& f = *w.intn;
  const int n = 512 / f.block();
  alignas(64) float S[16] = {};
  uint8_t zero[16] = {};
  for (int j = 0; j < n; ++j) {
    const int64_t v = 512 * sc + int64_t{f.block()} * j;
    if (v >= w.cols) break;
    const formats::IntNBlock p = formats::intn_block_params(f, reinterpret_cast<const std::byte*>(row + v / f.block() * f.block_bytes()));
    if (!(p.offset >= 0.0f && p.offset <= 255.0f && p.offset == static_cast<float>(static_cast<int>(p.offset)))) return false;
    S[j] = p.scale;
    zero[j] = static_cast<uint8_t>(p.offset);
  }
  alignas(32) uint16_t half[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(half), _mm512_cvtps_ph(_mm512_load_ps(S), _MM_FROUND_TO_NEAREST_INT));
  std::memcpy(h, half, 2 * static_cast<size_t>(n));
  std::memcpy(h + 2 * n, zero, static_cast<size_t>(n));
  return true;
}

// Super-chunk sc of an i-quant row (m's layout: 512 values and a Scaled header, or unit 16's 256 values and K16)
// repacked to p: each level's index in m.levels (inverse[level + 64], 128 bytes), the blocks' steps and scales.
LOWBIT_GGML_VNNI void RepackIq(const WeightView& w, const RepackedMatrix& m, const uint8_t* row, int64_t sc,
                               const uint8_t* inverse, uint8_t* p) {
  const int blocks = m.unit == 16 ? 1 : 2, vecs = m.unit / 4;
  alignas(64) int8_t level[512] = {};  // the super-chunk's levels in order; past the row 0 (index 0, at step 0)
  float step[4] = {0, 0, 0, 0};
  int8_t scale[16] = {};
  formats::IqBlockLevels L;
  for (int b = 0; b < blocks; ++b) {
    const int64_t block = blocks * sc + b;
    if (block * 256 >= w.cols) break;  // past the row: zero steps (the padding's activations are zero too)
    formats::ggml_iq_block_levels(w.dtype, reinterpret_cast<const std::byte*>(row + block * B::traits(w.dtype).bytes), L);
    step[b] = L.step;
    std::memcpy(level + 256 * b, L.level, 256);
    const int units = 256 / m.unit;
    for (int u = 0; u < units; ++u) scale[units * b + u] = static_cast<int8_t>(L.scale[u * (m.unit / 16)]);
  }
  // Vector k, 32-bit lane j: values 4k .. 4k + 3 of unit j (the activations' qg layout), as level indices.
  const __m512i inv_lo = _mm512_loadu_si512(inverse), inv_hi = _mm512_loadu_si512(inverse + 64);
  const __m512i unit_starts = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                                 _mm512_set1_epi32(m.unit));
  __m512i codes[8];
  for (int k = 0; k < vecs; ++k) {
    const __m512i v = _mm512_i32gather_epi32(unit_starts, level + 4 * k, 1);
    codes[k] = _mm512_permutex2var_epi8(inv_lo, _mm512_add_epi8(v, _mm512_set1_epi8(64)), inv_hi);
  }
  uint8_t* h;
  if (m.bits == 3) {
    // Four vectors' low two bits per 64 bytes (vector 4 n + k in bits 2k, 2k + 1), then each vector's third bit as a
    // 64-bit mask (RepackedCodes<3>, RepackedK16<3>: Q3_K's layout).
    const __m512i m3 = _mm512_set1_epi8(3);
    for (int n = 0; n < vecs / 4; ++n) {
      __m512i two = _mm512_setzero_si512();
      for (int k = 0; k < 4; ++k) two = _mm512_or_si512(two, _mm512_slli_epi16(_mm512_and_si512(codes[4 * n + k], m3), 2 * k));
      _mm512_storeu_si512(p + 64 * n, two);
    }
    for (int k = 0; k < vecs; ++k) {
      const uint64_t mask = _mm512_test_epi8_mask(codes[k], _mm512_set1_epi8(4));
      std::memcpy(p + 16 * vecs + 8 * k, &mask, 8);
    }
    h = p + 24 * vecs;
  } else {
    // 64 bytes hold two vectors (low, high nibbles): k and k + 4 of eight (RepackedCodes), k and k + 1 of four
    // (RepackedK16).
    for (int n = 0; n < vecs / 2; ++n) {
      const int lo = vecs == 8 ? n : 2 * n, hi = vecs == 8 ? n + 4 : 2 * n + 1;
      _mm512_storeu_si512(p + 64 * n, _mm512_or_si512(codes[lo], _mm512_slli_epi16(codes[hi], 4)));
    }
    h = p + 32 * vecs;
  }
  if (m.unit == 16) {
    std::memcpy(h, step, 4);
    std::memcpy(h + 4, scale, 16);
  } else {
    std::memcpy(h, step, 16);
    std::memcpy(h + 16, scale, 16);
  }
}

// Rows [r0, r1) repacked into m; false if some intN block cannot be (ZeroHeader).
LOWBIT_GGML_VNNI bool RepackRows(const WeightView& w, const RepackedMatrix& m, int64_t r0, int64_t r1) {
  alignas(64) static const struct Inverse {  // IQ4 level + 128 -> index
    uint8_t v[256] = {};
    Inverse() {
      for (int i = 0; i < 16; ++i) v[static_cast<uint8_t>(formats::kIq4nlValues[i] + 128)] = static_cast<uint8_t>(i);
    }
  } inv;
  if (m.lookup && formats::ggml_iq_level_set(w.dtype).count > 0) {
    alignas(64) uint8_t iq_inverse[128] = {};  // level + 64 -> index (the levels lie in [-62, 62])
    for (int i = 0; i < formats::ggml_iq_level_set(w.dtype).count; ++i) iq_inverse[m.levels[i] + 64] = static_cast<uint8_t>(i);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t sc = 0; sc < m.supers; ++sc) RepackIq(w, m, RowBytes(w, r), sc, iq_inverse, const_cast<uint8_t*>(m.super(r, sc)));
  } else if (m.unit == 16) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t sc = 0; sc < m.supers; ++sc)
        RepackK16(w.dtype, RowBytes(w, r) + sc * B::traits(w.dtype).bytes, const_cast<uint8_t*>(m.super(r, sc)));
  } else
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t sc = 0; sc < m.supers; ++sc) {
      Super<8> su;
      UnpackAnySuper(w, r, sc, su);
      uint8_t* p = const_cast<uint8_t*>(m.super(r, sc));
      if (m.lookup) {
        alignas(64) uint8_t b[64];
        for (int k = 0; k < 8; ++k) {
          _mm512_store_si512(b, su.u[k]);
          for (uint8_t& x : b) x = inv.v[x];
          su.u[k] = _mm512_load_si512(b);
        }
      }
      if (m.bits == 4)
        for (int k = 0; k < 4; ++k)
          _mm512_storeu_si512(p + 64 * k, _mm512_or_si512(su.u[k], _mm512_slli_epi16(su.u[k + 4], 4)));
      else
        for (int k = 0; k < 8; ++k) _mm512_storeu_si512(p + 64 * k, su.u[k]);
      uint8_t* h = p + 64 * m.bits;
      if (m.header == RepackHeader::Half) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h), _mm512_cvtps_ph(su.S, _MM_FROUND_TO_NEAREST_INT));
        if (m.has_min) _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + 32), _mm512_cvtps_ph(su.M, _MM_FROUND_TO_NEAREST_INT));
      } else if (m.header == RepackHeader::Scaled) {
        ScaledHeader(w, RowBytes(w, r), sc, h, m.has_min);
      } else if (!ZeroHeader(w, RowBytes(w, r), sc, h)) {
        return false;
      }
    }
  // The last group's padding rows: zero (never read for results; the group stream stays defined).
  if (r1 == m.rows)
    for (int64_t r = m.rows; r < 4 * m.groups; ++r)
      for (int64_t sc = 0; sc < m.supers; ++sc) std::memset(const_cast<uint8_t*>(m.super(r, sc)), 0, m.super_bytes);
  return true;
}

// S and M of a repacked super-chunk (codes of `Bits` bits at p, then the header).
// Lane j's index into a Zero header's per-block fields: j >> zero_shift.
LOWBIT_GGML_VNNI HWY_INLINE __m512i ZeroLanes(int zero_shift) {
  return _mm512_srlv_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(zero_shift));
}
// S of a repacked super-chunk (codes of `Bits` bits at p, then the header; zero_shift: RepackedMatrix's, Zero only).
template <int Bits, RepackHeader H>
LOWBIT_GGML_VNNI HWY_INLINE __m512 RepackedS(const uint8_t* p, int zero_shift) {
  const uint8_t* h = p + 64 * Bits;
  if constexpr (H == RepackHeader::Zero) {  // masked: the header may end the allocation
    const __mmask16 n = static_cast<__mmask16>((1u << (16 >> zero_shift)) - 1);
    return _mm512_permutexvar_ps(ZeroLanes(zero_shift), _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(n, h)));
  }
  (void)zero_shift;
  if constexpr (H == RepackHeader::Scaled) {
    const __m512 d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
                                           _mm512_castps128_ps512(_mm_loadu_ps(reinterpret_cast<const float*>(h))));
    return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 16)))));
  }
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
}
// The Zero header's integer zeros (uint8 zero[n] after the fp16 S[n], n = 16 >> zero_shift), one per 32-bit lane.
template <int Bits>
LOWBIT_GGML_VNNI HWY_INLINE __m512i RepackedZeros(const uint8_t* p, int zero_shift) {
  const int n = 16 >> zero_shift;
  const __m128i z = _mm_maskz_loadu_epi8(static_cast<__mmask16>((1u << n) - 1), p + 64 * Bits + 2 * n);
  return _mm512_permutexvar_epi32(ZeroLanes(zero_shift), _mm512_cvtepu8_epi32(z));
}
template <int Bits, RepackHeader H>
LOWBIT_GGML_VNNI HWY_INLINE __m512 RepackedM(const uint8_t* p, __m512 S, int zero_shift) {
  const uint8_t* h = p + 64 * Bits;
  if constexpr (H == RepackHeader::Scaled) {
    const __m512 d = _mm512_permutexvar_ps(_mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
                                           _mm512_castps128_ps512(_mm_loadu_ps(reinterpret_cast<const float*>(h))));
    return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 32)))));
  } else if constexpr (H == RepackHeader::Zero) {
    return _mm512_mul_ps(S, _mm512_cvtepi32_ps(RepackedZeros<Bits>(p, zero_shift)));
  }
  (void)zero_shift;
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + 32)));
}

// The eight code vectors of a repacked super-chunk at p.
template <int Bits, bool Lookup>
LOWBIT_GGML_VNNI HWY_INLINE void RepackedCodes(const uint8_t* p, __m512i* u, __m512i tab) {
  if constexpr (Bits == 8) {
    for (int k = 0; k < 8; ++k) u[k] = _mm512_loadu_si512(p + 64 * k);
  } else if constexpr (Bits == 3) {  // vectors 4n + k: bits 2k of p[64 n ..], the third bit from masks at p + 128
    static_assert(Lookup, "3-bit codes are the i-quants' indices");
    const __m512i m3 = _mm512_set1_epi8(3);
    for (int n = 0; n < 2; ++n) {
      const __m512i two = _mm512_loadu_si512(p + 64 * n);
      for (int k = 0; k < 4; ++k) {
        uint64_t hb;
        std::memcpy(&hb, p + 128 + 8 * (4 * n + k), 8);
        const __m512i c = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(two, 2 * k), m3), _mm512_maskz_set1_epi8(hb, 4));
        u[4 * n + k] = _mm512_shuffle_epi8(tab, c);
      }
    }
  } else {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    for (int k = 0; k < 4; ++k) {
      const __m512i c = _mm512_loadu_si512(p + 64 * k);
      u[k] = _mm512_and_si512(c, m4);
      u[k + 4] = _mm512_and_si512(_mm512_srli_epi16(c, 4), m4);
      if constexpr (Lookup) u[k] = _mm512_shuffle_epi8(tab, u[k]), u[k + 4] = _mm512_shuffle_epi8(tab, u[k + 4]);
    }
  }
}

constexpr size_t kPrefetchRepacked = 8192;  // bytes ahead in each row stream

// Decode on repacked weights: a group of four rows at a time (one sequential stream), the token's K code vectors
// loaded once per super-chunk for all four; unpack(p, super) reads one row's super-chunk at p.
// F: Centre and Min as in Tile; Zero (repacked int4): the integer sums end with - zero_j * A_j (Super::C = zero_j,
// GgmlActs::as = A_j) as TileRepacked4's do, so decode and prefill differ in float summation order only.
template <int K, Fold F, class Unpacker>
LOWBIT_GGML_VNNI void GemvRepacked(const RepackedMatrix& m, const GgmlActs& a, int64_t r0, int64_t r1, float* y,
                                   const Unpacker& unpack) {
  const size_t step = 4 * m.super_bytes;
  for (int64_t r = r0; r < r1; r += 4) {
    const int nr = static_cast<int>(std::min<int64_t>(4, r1 - r));
    const uint8_t* g = m.super(r, 0);  // r is a multiple of 4 (split_rows)
    __m512 acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t sc = 0; sc < m.supers; ++sc, g += step) {
      for (size_t o = 0; o < step; o += 64)
        _mm_prefetch(reinterpret_cast<const char*>(g + kPrefetchRepacked + o), _MM_HINT_T0);
      __m512i av[K];
      for (int k = 0; k < K; ++k) av[k] = _mm512_loadu_si512(a.qg.data() + 64 * (K * sc + k));
      const __m512 d = _mm512_loadu_ps(a.du.data() + 16 * sc);
      const __m512i init = F == Fold::Centre ? _mm512_loadu_si512(a.ci.data() + 16 * sc) : _mm512_setzero_si512();
      const __m512i as = F == Fold::Zero ? _mm512_loadu_si512(a.as.data() + 16 * sc) : _mm512_setzero_si512();
      for (int i = 0; i < 4; ++i) {
        Super<K> su;
        unpack(g + static_cast<size_t>(i) * m.super_bytes, su);
        __m512i s = init;
        for (int k = 0; k < K; ++k) s = _mm512_dpbusd_epi32(s, su.u[k], av[k]);
        if constexpr (F == Fold::Zero) s = _mm512_sub_epi32(s, _mm512_madd_epi16(su.C, as));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(su.S, d), acc[i]);
        if constexpr (F == Fold::Min) acc[i] = _mm512_fnmadd_ps(su.M, _mm512_loadu_ps(a.da.data() + 16 * sc), acc[i]);
      }
    }
    alignas(16) float v[4];
    _mm_store_ps(v, Sum4(acc[0], acc[1], acc[2], acc[3]));
    for (int i = 0; i < nr; ++i) y[r - r0 + i] = v[i];
  }
}

// Repacked checks shared by the kernels below.
inline void CheckRepacked(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0) {
  const RepackedMatrix& m = *w.repacked;
  if (r0 % 4 != 0) fail("", "matmul", "repacked rows must start on a group of four");
  for (int64_t t = 0; t < n_tok; ++t)
    if (acts[t].unit != m.unit || acts[t].supers != m.supers || acts[t].n < w.cols)
      fail("", "matmul", "activations were not quantized for the repacked weights (quantize_acts_batched)");
}

// Batches on repacked 4-bit weights read in place (no unpacked panel): a group's four rows stream 64 code bytes per
// pair of code vectors (k, k + 4: low and high nibbles, split in registers), so a Q4_0 super-chunk costs 288 bytes
// of cache traffic per row where the unpacked Super costs 704. On Zen 5 the unpacked panels ran at ~55 MAC/cycle
// against ~100 for the same instructions on L1-resident data (bound by L2 -> L1 traffic); this tile took
// lowbit_bench's BM_MatmulRepacked q4_0 (512 tokens) from 338-395 to 389-474 GFLOP/s, alternating runs.
// The activations of vector k + 4 are vpdpbusd's memory operand: in registers they would be the 33rd.
// F: Centre, Min or Zero (the Zero header's integer zeros: vpmaddwd of zero_j and A_j, both within 16 bits, costs
// what Min's float step does and keeps the sums exact). y[t * ldy + i] for rows i < nr of the group at g, tokens t < NT.
template <Fold F, RepackHeader H, int NT>
LOWBIT_GGML_VNNI HWY_INLINE void TileRepacked4(const RepackedMatrix& m, const uint8_t* g, int nr,
                                               const GgmlActs* const* tok, float* y, int64_t ldy) {
  constexpr int R = kTileRows;
  static_assert(R == 4, "a repacked group is four rows");
  const size_t sb = m.super_bytes;
  const int8_t* qg[NT];
  const float *du[NT], *da[NT];
  const int32_t *ci[NT], *as[NT];
  for (int t = 0; t < NT; ++t) {
    qg[t] = tok[t]->qg.data(), du[t] = tok[t]->du.data(), da[t] = tok[t]->da.data();
    ci[t] = tok[t]->ci.data(), as[t] = tok[t]->as.data();
  }
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc[R][NT];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
  for (int64_t sc = 0; sc < m.supers; ++sc, g += R * sb) {
    __m512i s[R][NT];
    // The sums start at zero (an idiom: no register copies) and take Centre's -centre * A_j (or Zero's
    // -zero_j * A_j) at the end, an integer add on a port vpdpbusd does not use.
    for (int i = 0; i < R; ++i)
      for (int t = 0; t < NT; ++t) s[i][t] = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
      __m512i a[NT];
      for (int t = 0; t < NT; ++t) a[t] = _mm512_loadu_si512(qg[t] + 64 * (8 * sc + k));
      for (int i = 0; i < R; ++i) {
        __m512i c = _mm512_loadu_si512(g + i * sb + 64 * k);
        asm("" : "+v"(c));  // one load: compilers otherwise fold it into both the and and the shift
        const __m512i lo = _mm512_and_si512(c, m4), hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), m4);
        for (int t = 0; t < NT; ++t) s[i][t] = _mm512_dpbusd_epi32(s[i][t], lo, a[t]);
        for (int t = 0; t < NT; ++t)
          s[i][t] = _mm512_dpbusd_epi32(s[i][t], hi, _mm512_loadu_si512(qg[t] + 64 * (8 * sc + k + 4)));
      }
    }
    // The rows' S (and M or zeros) through L1: four of each in registers would spill the accumulators.
    alignas(64) float S[R][16], M[R][16];
    alignas(64) int32_t Z[R][16];
    for (int i = 0; i < R; ++i) {
      const __m512 Si = RepackedS<4, H>(g + i * sb, m.zero_shift);
      _mm512_store_ps(S[i], Si);
      if constexpr (F == Fold::Min) _mm512_store_ps(M[i], RepackedM<4, H>(g + i * sb, Si, m.zero_shift));
      if constexpr (F == Fold::Zero) _mm512_store_si512(Z[i], RepackedZeros<4>(g + i * sb, m.zero_shift));
    }
    for (int t = 0; t < NT; ++t) {
      const __m512 d = _mm512_loadu_ps(du[t] + 16 * sc);
      const __m512i c0 = F == Fold::Centre ? _mm512_loadu_si512(ci[t] + 16 * sc)
                         : F == Fold::Zero ? _mm512_loadu_si512(as[t] + 16 * sc)
                                           : _mm512_setzero_si512();
      for (int i = 0; i < R; ++i) {
        if constexpr (F == Fold::Centre) s[i][t] = _mm512_add_epi32(s[i][t], c0);
        if constexpr (F == Fold::Zero) s[i][t] = _mm512_sub_epi32(s[i][t], _mm512_madd_epi16(_mm512_load_si512(Z[i]), c0));
        acc[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i][t]), _mm512_mul_ps(_mm512_load_ps(S[i]), d), acc[i][t]);
        if constexpr (F == Fold::Min) acc[i][t] = _mm512_fnmadd_ps(_mm512_load_ps(M[i]), _mm512_loadu_ps(da[t] + 16 * sc), acc[i][t]);
      }
    }
  }
  StoreTile<NT>(acc, nr, y, ldy);
}

// Rows [r0, r1) (r0 a multiple of 4) of repacked 4-bit weights times n_tok tokens: panels of groups that stay in
// L2 (~256 KiB) while every token triple passes over them.
template <Fold F, RepackHeader H>
LOWBIT_GGML_VNNI void BatchRepacked4(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1,
                                     float* y, int64_t ldy) {
  const RepackedMatrix& m = *w.repacked;
  const int64_t group_bytes = kTileRows * std::max<int64_t>(1, m.supers) * static_cast<int64_t>(m.super_bytes);
  const int64_t panel = std::clamp<int64_t>((256 << 10) / group_bytes, 1, 16);  // groups
  const int64_t g1 = (r1 + kTileRows - 1) / kTileRows;
  const GgmlActs* tok[kTileTok];
  for (int64_t p0 = r0 / kTileRows; p0 < g1; p0 += panel) {
    const int64_t p1 = std::min(g1, p0 + panel);
    for (int64_t t0 = 0; t0 < n_tok; t0 += kTileTok) {
      const int nt = static_cast<int>(std::min<int64_t>(kTileTok, n_tok - t0));
      for (int t = 0; t < nt; ++t) tok[t] = &acts[t0 + t];
      for (int64_t gi = p0; gi < p1; ++gi) {
        const int64_t row = gi * kTileRows;
        const int nr = static_cast<int>(std::min<int64_t>(kTileRows, r1 - row));
        const uint8_t* g = m.super(row, 0);
        float* yt = y + t0 * ldy + (row - r0);
        static_assert(kTileTok == 3);
        if (nt == 3)
          TileRepacked4<F, H, 3>(m, g, nr, tok, yt, ldy);
        else if (nt == 2)
          TileRepacked4<F, H, 2>(m, g, nr, tok, yt, ldy);
        else
          TileRepacked4<F, H, 1>(m, g, nr, tok, yt, ldy);
      }
    }
  }
}

template <int Bits, bool Lookup, bool HasMin, RepackHeader H>
LOWBIT_GGML_VNNI void RepackedRowsT(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1,
                                    float* y, int64_t ldy) {
  const RepackedMatrix& m = *w.repacked;
  CheckRepacked(w, acts, n_tok, r0);
  const int zs = m.zero_shift;
  const __m512i tab = LevelTable(m);
  auto unpack = [zs, tab](const uint8_t* p, Super<8>& out) LOWBIT_GGML_VNNI {
    RepackedCodes<Bits, Lookup>(p, out.u, tab);
    out.S = RepackedS<Bits, H>(p, zs);
    out.M = HasMin ? RepackedM<Bits, H>(p, out.S, zs) : _mm512_setzero_ps();
  };
  // int4's integer zeros: Fold::Zero, exact integer sums in decode and batches alike.
  constexpr Fold kFold = H == RepackHeader::Zero && Bits == 4 ? Fold::Zero : HasMin ? Fold::Min : Fold::Centre;
  if (n_tok == 1) {
    if constexpr (kFold == Fold::Zero)
      return GemvRepacked<8, Fold::Zero>(m, acts[0], r0, r1, y, [zs, tab](const uint8_t* p, Super<8>& out) LOWBIT_GGML_VNNI {
        RepackedCodes<4, false>(p, out.u, tab);
        out.S = RepackedS<4, H>(p, zs);
        out.C = RepackedZeros<4>(p, zs);
      });
    else
      return GemvRepacked<8, kFold>(m, acts[0], r0, r1, y, unpack);
  }
  // IQ4 lookups keep the unpacked panel: a vpshufb per code vector in the tile competes with vpdpbusd for its
  // ports (IQ4_XS pp512 126-130 t/s in place against 157-161 from the panel, 1 thread).
  if constexpr (Bits == 4 && !Lookup)
    BatchRepacked4<kFold, H>(w, acts, n_tok, r0, r1, y, ldy);
  else
    BatchTiles<8, kFold>(
        w, acts, n_tok, r0, r1, y, ldy, [&](int64_t r, int64_t sc, Super<8>& out) LOWBIT_GGML_VNNI { unpack(m.super(r, sc), out); });
}

// Decode and batches on repacked Q2_K / Q3_K / Q6_K / IQ2_XS / IQ2_S / IQ1_M: the 16-value-unit kernels (four code vectors per 256 values).
template <int Bits, bool Lookup = false>
LOWBIT_GGML_VNNI void RepackedK16RowsT(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1,
                                       float* y, int64_t ldy) {
  const RepackedMatrix& m = *w.repacked;
  constexpr bool has_min = Bits == 2;
  CheckRepacked(w, acts, n_tok, r0);
  const __m512i tab = LevelTable(m);
  auto unpack = [tab](const uint8_t* p, Super<4>& out) LOWBIT_GGML_VNNI { RepackedK16<Bits, Lookup>(p, out, tab); };
  if (n_tok == 1) return GemvRepacked<4, has_min ? Fold::Min : Fold::Centre>(m, acts[0], r0, r1, y, unpack);
  BatchTiles<4, has_min ? Fold::Min : Fold::Centre>(w, acts, n_tok, r0, r1, y, ldy,
                         [&](int64_t r, int64_t sc, Super<4>& out) LOWBIT_GGML_VNNI { unpack(m.super(r, sc), out); });
}

LOWBIT_GGML_VNNI void GemmRepackedAvx(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1,
                                      float* y, int64_t ldy) {
  const RepackedMatrix& m = *w.repacked;
  // The combinations RepackShape makes.
  using H = RepackHeader;
  if (m.unit == 16)
    return m.bits == 2   ? RepackedK16RowsT<2>(w, acts, n_tok, r0, r1, y, ldy)   // Q2_K
           : m.bits == 3 ? (m.lookup ? RepackedK16RowsT<3, true>(w, acts, n_tok, r0, r1, y, ldy)  // IQ2_XS IQ2_S IQ1_M
                                     : RepackedK16RowsT<3>(w, acts, n_tok, r0, r1, y, ldy))       // Q3_K
           : m.bits == 4 ? RepackedK16RowsT<4, true>(w, acts, n_tok, r0, r1, y, ldy)  // (i-quants of 9-16 levels)
                         : RepackedK16RowsT<6>(w, acts, n_tok, r0, r1, y, ldy);  // Q6_K
  if (m.bits == 8)
    return m.has_min ? RepackedRowsT<8, false, true, H::Zero>(w, acts, n_tok, r0, r1, y, ldy)        // int8
                     : RepackedRowsT<8, false, false, H::Half>(w, acts, n_tok, r0, r1, y, ldy);      // Q8_0
  if (m.lookup && m.bits == 3) return RepackedRowsT<3, true, false, H::Scaled>(w, acts, n_tok, r0, r1, y, ldy);  // IQ2_XXS IQ1_S
  if (m.lookup)
    return m.header == H::Half ? RepackedRowsT<4, true, false, H::Half>(w, acts, n_tok, r0, r1, y, ldy)  // IQ4_NL
                               : RepackedRowsT<4, true, false, H::Scaled>(w, acts, n_tok, r0, r1, y, ldy);  // IQ4_XS IQ3_XXS IQ3_S
  if (!m.has_min) return RepackedRowsT<4, false, false, H::Half>(w, acts, n_tok, r0, r1, y, ldy);  // Q4_0
  if (m.header == H::Half) return RepackedRowsT<4, false, true, H::Half>(w, acts, n_tok, r0, r1, y, ldy);  // Q4_1
  if (m.header == H::Scaled) return RepackedRowsT<4, false, true, H::Scaled>(w, acts, n_tok, r0, r1, y, ldy);  // Q4_K
  return RepackedRowsT<4, false, true, H::Zero>(w, acts, n_tok, r0, r1, y, ldy);  // int4
}

// The batched activations (GgmlActs GEMM layout only), as quantize_acts_ggml(gemm = true) computes them: the
// same llama.cpp rounding (Q8_0: round half to even of x * 127 / max|x|, NaN to 0; Q8_K: min(127, nearest(
// -127 / x_m * x)) with x_m the first value of largest magnitude), checked equal in tests/ops/test_ggml_dot.cpp.
LOWBIT_GGML_VNNI void QuantizeActsBatchAvx(DType wt, const float* x, int64_t n, GgmlActs& a) {
  const B::Traits tr = B::traits(wt);
  const int unit = tr.scale_group, super = 16 * unit, K = unit / 4, blk = tr.values == 32 ? 32 : 256;
  a.wtype = wt;
  a.n = n;
  a.unit = unit;
  a.supers = (n + super - 1) / super;
  a.q.clear(), a.dg.clear(), a.ag.clear(), a.qt.clear();  // decode fields: not filled here
  a.qg.resize(static_cast<size_t>(a.supers * super));
  a.du.resize(static_cast<size_t>(a.supers * 16));
  a.da.resize(a.du.size());
  a.ci.resize(a.du.size());
  a.as.resize(a.du.size());
  alignas(64) int8_t nat[512];
  alignas(64) float dunit[16];
  const __m512 sign = _mm512_set1_ps(-0.0f);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (int64_t s = 0; s < a.supers; ++s) {
    const int64_t v0 = s * super, count = std::min<int64_t>(super, n - v0);
    std::memset(nat, 0, sizeof(nat));
    std::fill(dunit, dunit + 16, 0.0f);
    for (int64_t b0 = 0; b0 < count; b0 += blk) {
      const float* xb = x + v0 + b0;
      __m512 amax = _mm512_setzero_ps();
      for (int i = 0; i < blk; i += 16) amax = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(xb + i)), amax);
      const float m = _mm512_reduce_max_ps(amax);
      float d = 0.0f, scale = 0.0f;
      if (blk == 32) {
        scale = m != 0.0f ? 127.0f / m : 0.0f;
        d = _cvtsh_ss(_cvtss_sh(m / 127.0f, 0));
      } else if (m != 0.0f) {
        const __m512 mv = _mm512_set1_ps(m);
        int first = 0;
        for (int i = 0; i < blk; i += 16) {
          const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, _mm512_loadu_ps(xb + i)), mv, _CMP_EQ_OQ);
          if (hit) {
            first = i + __builtin_ctz(hit);
            break;
          }
        }
        scale = -127.0f / xb[first];
        d = 1.0f / scale;
      }
      const __m512 sv = _mm512_set1_ps(scale);
      for (int i = 0; i < blk; i += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(xb + i), sv);
        __m512i q = _mm512_maskz_cvtps_epi32(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);  // RNE; NaN -> 0
        q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        _mm_store_si128(reinterpret_cast<__m128i*>(nat + b0 + i), _mm512_cvtepi32_epi8(q));
      }
      for (int j = static_cast<int>(b0 / unit); j < (b0 + blk) / unit; ++j) dunit[j] = d;
    }
    // Transpose to the unit layout (vector k, lane j = unit j's codes 4k..4k+3) and sum each unit's codes.
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(unit));
    __m512i sum = _mm512_setzero_si512();
    int8_t* out = a.qg.data() + s * super;
    for (int k = 0; k < K; ++k) {
      const __m512i v = _mm512_i32gather_epi32(rows, nat + 4 * k, 1);
      _mm512_storeu_si512(out + 64 * k, v);
      sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi8(1), v);
    }
    const __m512 dv = _mm512_load_ps(dunit);
    _mm512_storeu_ps(a.du.data() + 16 * s, dv);
    _mm512_storeu_ps(a.da.data() + 16 * s, _mm512_mul_ps(dv, _mm512_cvtepi32_ps(sum)));
    _mm512_storeu_si512(a.ci.data() + 16 * s, _mm512_mullo_epi32(sum, _mm512_set1_epi32(-tr.centre)));
    _mm512_storeu_si512(a.as.data() + 16 * s, sum);
  }
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
  // Batches (prefill): see BatchRows.
  BatchRows<T>(w, acts, n_tok, r0, r1, y, ldy);
}

LOWBIT_GGML_VNNI void GemmGgmlRows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1,
                                   float* y, int64_t ldy) {
  // The i-quants run repacked here (RepackIq); unrepacked (LOWBIT_REPACK=0, a bare matmul) they take the reference.
  if (formats::ggml_iq_level_set(w.dtype).count > 0) return RefRows(w, acts, n_tok, r0, r1, y, ldy);
  if (!VisitGgmlType(w.dtype, [&](auto t) { RowsT<decltype(t)::value>(w, acts, n_tok, r0, r1, y, ldy); }))
    fail("", "matmul", "no native kernel for type " + std::string(dtype_name(w.dtype)));
}

#undef LOWBIT_GGML_VNNI
#elif HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128 && !HWY_HAVE_SCALABLE
// ---- Portable SIMD path (AVX3 without VNNI, AVX2, SSE4, SSSE3, ...) ---------------------------------------------
// Layout: the activations are GgmlActs::q (natural order, int8; not qt), widened once per call to int16 in a
// per-thread buffer, since every row reads them. Work is done per 256-value chunk (one K-type
// super-block, or eight 32-value blocks). Every 16 codes of a group are unpacked into one 128-bit vector of int8
// holding u - c (the centred code, which always fits in int8: nibble masks / shifts, high bits by TestBit, IQ4
// levels by a byte table lookup), so the centre term c * A_g of the decomposition is already folded into the
// integer sum. The codes are widened to int16 and multiplied with the activations pairwise into int32 lanes
// (ReorderWidenMulAccumulate: vpmaddwd on x86). A "unit" is one group (K types) or one 32-value block (both of
// its groups share one scale, so their integer sums are added before the float step). The per-unit int32 vectors
// are then reduced together, four at a time, by interleave-and-add steps into one int32 vector whose lane j is
// unit j's exact sum (vectors are capped at 256 bits: 8 int32 lanes take two such quads and one cross-block add).
// Float step per vector of units: acc += float(sum_u) * S_u * dg_u and, for types with a min, off += M_u * dg_u *
// A_u; the row result is the horizontal sum of acc - off. Headers of the K types come from the scalar
// ggml_block_terms (once per 256 values), those of 32-value blocks from their fp16 scale (and min) directly.
// Several tokens are processed by the same per-(row, token) routine, so batches equal single-token calls bit for bit.

namespace hn = hwy::HWY_NAMESPACE;
using detail::GgmlActs;
using D32 = hn::CappedTag<int32_t, 8>;
using DF = hn::Repartition<float, D32>;
using D16 = hn::Repartition<int16_t, D32>;
using DI8 = hn::Full128<int8_t>;
using DU8 = hn::Full128<uint8_t>;
using V32 = hn::Vec<D32>;
using VI8 = hn::Vec<DI8>;
using VU8 = hn::Vec<DU8>;
constexpr int kN32 = static_cast<int>(hn::MaxLanes(D32()));
static_assert(kN32 == 4 || kN32 == 8, "the unit reduction expects 128- or 256-bit vectors");

template <DType T>
constexpr bool kPortable = T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q5_0 ||
                           T == DType::Q5_1 || T == DType::IQ4_NL || T == DType::Q2_K || T == DType::Q3_K ||
                           T == DType::Q4_K || T == DType::Q5_K || T == DType::Q6_K || T == DType::IQ4_XS;
template <DType T>
constexpr bool kIq = T == DType::IQ2_XXS || T == DType::IQ2_XS || T == DType::IQ2_S || T == DType::IQ3_XXS ||
                     T == DType::IQ3_S || T == DType::IQ1_S || T == DType::IQ1_M;
// Calls f(std::integral_constant<DType, T>{}) for an i-quant t; false for any other type.
template <class F>
bool VisitIqType(DType t, const F& f) {
  switch (t) {
#define LOWBIT_IQ_CASE(T) \
  case DType::T:          \
    f(std::integral_constant<DType, DType::T>{}); \
    return true;
    LOWBIT_IQ_CASE(IQ2_XXS) LOWBIT_IQ_CASE(IQ2_XS) LOWBIT_IQ_CASE(IQ2_S) LOWBIT_IQ_CASE(IQ3_XXS)
    LOWBIT_IQ_CASE(IQ3_S) LOWBIT_IQ_CASE(IQ1_S) LOWBIT_IQ_CASE(IQ1_M)
#undef LOWBIT_IQ_CASE
    default:
      return false;
  }
}
template <DType T>
constexpr bool kSmall = T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q5_0 ||
                        T == DType::Q5_1 || T == DType::IQ4_NL;  // 32-value blocks
template <DType T>
constexpr bool kHasMin = T == DType::Q4_1 || T == DType::Q5_1 || T == DType::Q2_K || T == DType::Q4_K ||
                         T == DType::Q5_K;
template <DType T>
constexpr int kBlockBytes = T == DType::Q8_0 ? 34 : T == DType::Q4_0 || T == DType::IQ4_NL ? 18 : T == DType::Q4_1 ? 20
                            : T == DType::Q5_0 ? 22 : T == DType::Q5_1 ? 24 : 0;

// acc + sum of 16 codes (int8) times the 16 int16 activations at q, in int32 lanes.
// (A template so that only the branch for this target's vector width is instantiated.)
template <class D = D16>
HWY_INLINE V32 Mad(VI8 codes, const int16_t* HWY_RESTRICT q, V32 acc) {
  const D32 d32;
  const D d16;
  const hn::Rebind<int8_t, D> d8;
  V32 s1 = hn::Zero(d32);  // the second accumulator of ReorderWidenMulAccumulate (unused on x86)
  if constexpr (hn::MaxLanes(D()) == 16) {
    acc = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::BitCast(d8, codes)), hn::LoadU(d16, q), acc, s1);
  } else {
    const hn::Twice<decltype(d8)> dfull;
    const auto c = hn::BitCast(dfull, codes);
    acc = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::LowerHalf(d8, c)), hn::LoadU(d16, q), acc, s1);
    acc = hn::ReorderWidenMulAccumulate(d32, hn::PromoteTo(d16, hn::UpperHalf(d8, c)), hn::LoadU(d16, q + 8), acc,
                                        s1);
  }
  return hn::Add(acc, s1);
}

// The int8 activation codes of a token widened to int16 once per call (every row reads them).
HWY_INLINE void WidenActs(const int8_t* HWY_RESTRICT q, int64_t n, int16_t* HWY_RESTRICT out) {
  const D16 d16;
  const hn::Rebind<int8_t, D16> d8;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d16));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::PromoteTo(d16, hn::LoadU(d8, q + i)), d16, out + i);
  for (; i < n; ++i) out[i] = q[i];
}

// Four vectors -> per 128-bit block, lane j = the sum of that block's lanes of vector j.
HWY_INLINE V32 Sum4(V32 a, V32 b, V32 c, V32 d) {
  const D32 d32;
  const hn::Repartition<int64_t, D32> d64;
  const V32 ab = hn::Add(hn::InterleaveLower(d32, a, b), hn::InterleaveUpper(d32, a, b));  // a b a b
  const V32 cd = hn::Add(hn::InterleaveLower(d32, c, d), hn::InterleaveUpper(d32, c, d));  // c d c d
  const auto ab64 = hn::BitCast(d64, ab), cd64 = hn::BitCast(d64, cd);
  return hn::Add(hn::BitCast(d32, hn::InterleaveLower(d64, ab64, cd64)),
                 hn::BitCast(d32, hn::InterleaveUpper(d64, ab64, cd64)));  // a b c d
}

HWY_INLINE VU8 Lo4(VU8 v) { return hn::And(v, hn::Set(DU8(), 0x0F)); }
HWY_INLINE VU8 Hi4(VU8 v) { return hn::ShiftRight<4>(v); }
HWY_INLINE VI8 Centre(VU8 v, int c) { return hn::Sub(hn::BitCast(DI8(), v), hn::Set(DI8(), static_cast<int8_t>(c))); }
// 0x10 (or `value`) in byte i where bit `bit` of byte i of h is set.
HWY_INLINE VU8 BitTo(VU8 h, uint8_t bit, uint8_t value) {
  const DU8 du8;
  return hn::IfThenElseZero(hn::TestBit(h, hn::Set(du8, bit)), hn::Set(du8, value));
}
// Bytes i = 0..15 get bit i of the 16-bit word `bits`, as 0x10.
HWY_INLINE VU8 Bits16(uint32_t bits) {
  const DU8 du8;
  alignas(16) static constexpr uint8_t kIdx[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
  alignas(16) static constexpr uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const auto w = hn::BitCast(du8, hn::Set(hn::Full128<uint16_t>(), static_cast<uint16_t>(bits)));
  const auto spread = hn::TableLookupBytes(w, hn::Load(du8, kIdx));
  return hn::IfThenElseZero(hn::TestBit(spread, hn::Load(du8, kBit)), hn::Set(du8, 0x10));
}
HWY_INLINE VI8 Iq4(VU8 idx) {
  alignas(16) static constexpr int8_t kLev[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                  1,    13,   25,  38,  53,  69,  89,  113};
  return hn::TableLookupBytes(hn::Load(DI8(), kLev), hn::BitCast(DI8(), idx));
}

// The 16 centred codes u - c of group G (values 16 G .. 16 G + 15) of the chunk at p, as int8. (The i-quants: p is
// the block's IqBlockLevels::level, decoded once per block by RowDot.)
template <DType T, int G>
HWY_INLINE VI8 Codes(const uint8_t* HWY_RESTRICT p) {
  const DU8 du8;
  const DI8 di8;
  if constexpr (kIq<T>) {
    return hn::LoadU(di8, reinterpret_cast<const int8_t*>(p) + 16 * G);
  } else if constexpr (kSmall<T>) {  // block G / 2: low nibbles (G even) or high nibbles (G odd) of its 16 code bytes
    constexpr int hdr = T == DType::Q4_1 || T == DType::Q5_1 ? 4 : 2;
    const uint8_t* b = p + (G / 2) * kBlockBytes<T>;
    if constexpr (T == DType::Q8_0) {
      return hn::LoadU(di8, reinterpret_cast<const int8_t*>(b + 2 + 16 * (G % 2)));
    } else if constexpr (T == DType::Q4_0 || T == DType::Q4_1 || T == DType::IQ4_NL) {
      const VU8 v = hn::LoadU(du8, b + hdr);
      const VU8 u = G % 2 == 0 ? Lo4(v) : Hi4(v);
      if constexpr (T == DType::IQ4_NL) return Iq4(u);
      return Centre(u, T == DType::Q4_0 ? 8 : 0);
    } else {  // Q5_0 / Q5_1: bit j of qh is the fifth bit of code j
      uint32_t qh;
      std::memcpy(&qh, b + hdr, 4);
      const VU8 v = hn::LoadU(du8, b + hdr + 4);
      const VU8 u = G % 2 == 0 ? hn::Or(Lo4(v), Bits16(qh & 0xFFFF)) : hn::Or(Hi4(v), Bits16(qh >> 16));
      return Centre(u, T == DType::Q5_0 ? 16 : 0);
    }
  } else if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
    // group 4c + t: t = 0 / 1 low nibbles of bytes 32c + 16t .. (t = 2 / 3: high nibbles of 32c + 16(t - 2) ..)
    constexpr int c = G / 4, t = G % 4, half = t % 2;
    const VU8 v = hn::LoadU(du8, p + (T == DType::Q5_K ? offsetof(B::Q5_K, qs) : offsetof(B::Q4_K, qs)) + 32 * c + 16 * half);
    VU8 u = t < 2 ? Lo4(v) : Hi4(v);
    if constexpr (T == DType::Q5_K)  // fifth bit: bit 2c (low nibbles) or 2c + 1 (high) of qh[l]
      u = hn::Or(u, BitTo(hn::LoadU(du8, p + offsetof(B::Q5_K, qh) + 16 * half), static_cast<uint8_t>(1 << (2 * c + t / 2)), 0x10));
    return hn::BitCast(di8, u);
  } else if constexpr (T == DType::Q6_K) {
    // half n = G / 8; group 8n + 2s + k: nibble of ql[64n + 32(s % 2) + 16k ..] (low for s < 2) | 2 bits of
    // qh[32n + 16k ..] at 2s, minus 32
    constexpr int n = G / 8, s = (G % 8) / 2, k = G % 2;
    const VU8 l = hn::LoadU(du8, p + offsetof(B::Q6_K, ql) + 64 * n + 32 * (s % 2) + 16 * k);
    const VU8 h = hn::LoadU(du8, p + offsetof(B::Q6_K, qh) + 32 * n + 16 * k);
    const VU8 m30 = hn::Set(du8, 0x30);
    VU8 hb;
    if constexpr (s == 0) hb = hn::And(hn::ShiftLeft<4>(h), m30);
    else if constexpr (s == 1) hb = hn::And(hn::ShiftLeft<2>(h), m30);
    else if constexpr (s == 2) hb = hn::And(h, m30);
    else hb = hn::And(hn::ShiftRight<2>(h), m30);
    return Centre(hn::Or(s < 2 ? Lo4(l) : Hi4(l), hb), 32);
  } else if constexpr (T == DType::Q2_K || T == DType::Q3_K) {
    // group 8n + 2j + k: bits 2j of qs[32n + 16k ..]; Q3_K: | bit 4n + j of hmask[16k ..] as 4, minus 4
    constexpr int n = G / 8, j = (G % 8) / 2, k = G % 2;
    const VU8 v = hn::LoadU(du8, p + (T == DType::Q3_K ? 32 : 16) + 32 * n + 16 * k);
    const VU8 u = hn::And(hn::ShiftRight<2 * j>(v), hn::Set(du8, 3));
    if constexpr (T == DType::Q2_K) return hn::BitCast(di8, u);
    return Centre(hn::Or(u, BitTo(hn::LoadU(du8, p + 16 * k), static_cast<uint8_t>(1 << (4 * n + j)), 4)), 4);
  } else {  // IQ4_XS: sub-block G / 2, low (G even) or high nibbles of qs[16 (G / 2) ..]
    const VU8 v = hn::LoadU(du8, p + 8 + 16 * (G / 2));
    return Iq4(G % 2 == 0 ? Lo4(v) : Hi4(v));
  }
}

// Types whose two groups of each 32 values share one scale (and min): a unit is 32 values, else 16.
template <DType T>
constexpr bool kUnit32 = kSmall<T> || T == DType::Q4_K || T == DType::Q5_K || T == DType::IQ4_XS ||
                         (kIq<T> && B::traits(T).scale_group == 32);
template <DType T>
constexpr int kUnits = kUnit32<T> ? 8 : 16;

// The int32 partial sums of unit U of the chunk at p with the chunk's activations q.
template <DType T, int U>
HWY_INLINE V32 Unit(const uint8_t* HWY_RESTRICT p, const int16_t* HWY_RESTRICT q) {
  const V32 z = hn::Zero(D32());
  if constexpr (kUnit32<T>)
    return Mad(Codes<T, 2 * U + 1>(p), q + 32 * U + 16, Mad(Codes<T, 2 * U>(p), q + 32 * U, z));
  else
    return Mad(Codes<T, U>(p), q + 16 * U, z);
}

// Exact int32 sums of units U0 .. U0 + kN32 - 1, unit U0 + j in lane j.
template <DType T, int U0>
HWY_INLINE V32 Units(const uint8_t* HWY_RESTRICT p, const int16_t* HWY_RESTRICT q) {
  const V32 a = Sum4(Unit<T, U0>(p, q), Unit<T, U0 + 1>(p, q), Unit<T, U0 + 2>(p, q), Unit<T, U0 + 3>(p, q));
  if constexpr (kN32 == 4) {
    return a;
  } else {
    const D32 d32;
    const V32 b = Sum4(Unit<T, U0 + 4>(p, q), Unit<T, U0 + 5>(p, q), Unit<T, U0 + 6>(p, q), Unit<T, U0 + 7>(p, q));
    return hn::Add(hn::ConcatLowerLower(d32, b, a), hn::ConcatUpperUpper(d32, b, a));
  }
}

// acc += float(sums of units J * kN32 ..) * scale; then the next vector of units.
template <DType T, int J>
HWY_INLINE void ScaleUnits(const uint8_t* HWY_RESTRICT p, const int16_t* HWY_RESTRICT q, const float* sc,
                           hn::Vec<DF>& acc) {
  if constexpr (J * kN32 < kUnits<T>) {
    const DF df;
    acc = hn::MulAdd(hn::ConvertTo(df, Units<T, J * kN32>(p, q)), hn::Load(df, sc + J * kN32), acc);
    ScaleUnits<T, J + 1>(p, q, sc, acc);
  }
}

inline float F16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return lowbit::f16_to_f32(h);
}
inline uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Float factors of the chunk at p for each unit: sc[u] = S_u * dg (the unit's step times the activation scale),
// and for types with a min off += M_u * dg * A_u. Integer scales are gathered into bytes (scalar bit tricks) and
// converted with vector ops.
template <DType T>
HWY_INLINE void Headers(const uint8_t* HWY_RESTRICT p, const float* HWY_RESTRICT dg, const int32_t* HWY_RESTRICT ag,
                        float* HWY_RESTRICT sc, hn::Vec<DF>& off) {
  const DF df;
  const D32 d32;
  const hn::Rebind<uint8_t, D32> du8;
  const hn::Rebind<int8_t, D32> di8;
  alignas(16) uint8_t by[16];
  alignas(32) int32_t A[8];
  if constexpr (kUnit32<T> && kHasMin<T>)
    for (int u = 0; u < 8; ++u) A[u] = ag[2 * u] + ag[2 * u + 1];
  if constexpr (kSmall<T>) {  // fp16 scale (and min) per block; dg per group
    alignas(32) float md[8];
    for (int b = 0; b < 8; ++b) {
      const uint8_t* h = p + b * kBlockBytes<T>;
      sc[b] = F16(h) * dg[2 * b];
      if constexpr (kHasMin<T>) md[b] = -F16(h + 2) * dg[2 * b];  // M = -m
    }
    if constexpr (kHasMin<T>)
      for (int j = 0; j < 8; j += kN32)
        off = hn::MulAdd(hn::Load(df, md + j), hn::ConvertTo(df, hn::Load(d32, A + j)), off);
    return;
  } else if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
    // 8 six-bit scales and mins from 12 bytes: by[0..8) scales, by[8..16) mins.
    formats::q4k_scales_mins16(p + offsetof(B::Q4_K, scales), by);
    const auto d = hn::Set(df, F16(p + offsetof(B::Q4_K, d)) * dg[0]), dm = hn::Set(df, F16(p + offsetof(B::Q4_K, dmin)) * dg[0]);
    for (int j = 0; j < 8; j += kN32) {
      hn::Store(hn::Mul(hn::ConvertTo(df, hn::PromoteTo(d32, hn::LoadU(du8, by + j))), d), df, sc + j);
      off = hn::MulAdd(hn::Mul(hn::ConvertTo(df, hn::PromoteTo(d32, hn::LoadU(du8, by + 8 + j))), dm),
                       hn::ConvertTo(df, hn::Load(d32, A + j)), off);
    }
  } else if constexpr (T == DType::IQ4_XS) {
    const uint32_t sh = static_cast<uint32_t>(p[offsetof(B::IQ4_XS, scales_h)]) |
                        (static_cast<uint32_t>(p[offsetof(B::IQ4_XS, scales_h) + 1]) << 8),
                   sl = U32(p + offsetof(B::IQ4_XS, scales_l));
    for (int ib = 0; ib < 8; ++ib)
      by[ib] = static_cast<uint8_t>(((sl >> (4 * ib)) & 0xF) | (((sh >> (2 * ib)) & 3) << 4));
    const auto d = hn::Set(df, F16(p + offsetof(B::IQ4_XS, d)) * dg[0]);
    const auto c32 = hn::Set(d32, 32);
    for (int j = 0; j < 8; j += kN32)
      hn::Store(hn::Mul(hn::ConvertTo(df, hn::Sub(hn::PromoteTo(d32, hn::LoadU(du8, by + j)), c32)), d), df, sc + j);
  } else if constexpr (T == DType::Q6_K) {
    const auto d = hn::Set(df, F16(p + offsetof(B::Q6_K, d)) * dg[0]);
    const int8_t* s8 = reinterpret_cast<const int8_t*>(p + offsetof(B::Q6_K, scales));
    for (int j = 0; j < 16; j += kN32)
      hn::Store(hn::Mul(hn::ConvertTo(df, hn::PromoteTo(d32, hn::LoadU(di8, s8 + j))), d), df, sc + j);
  } else if constexpr (T == DType::Q3_K) {
    // 16 six-bit scales; the value is scale - 32.
    formats::q3k_scales16(p + offsetof(B::Q3_K, scales), by);
    const auto d = hn::Set(df, F16(p + offsetof(B::Q3_K, d)) * dg[0]);
    const auto c32 = hn::Set(d32, 32);
    for (int j = 0; j < 16; j += kN32)
      hn::Store(hn::Mul(hn::ConvertTo(df, hn::Sub(hn::PromoteTo(d32, hn::LoadU(du8, by + j)), c32)), d), df, sc + j);
  } else {  // Q2_K: byte g = scale (low nibble) | min (high nibble)
    const auto d = hn::Set(df, F16(p + offsetof(B::Q2_K, d)) * dg[0]), dm = hn::Set(df, F16(p + offsetof(B::Q2_K, dmin)) * dg[0]);
    const auto m4 = hn::Set(d32, 0xF);
    for (int j = 0; j < 16; j += kN32) {
      const auto v = hn::PromoteTo(d32, hn::LoadU(du8, p + offsetof(B::Q2_K, scales) + j));
      hn::Store(hn::Mul(hn::ConvertTo(df, hn::And(v, m4)), d), df, sc + j);
      off = hn::MulAdd(hn::Mul(hn::ConvertTo(df, hn::ShiftRight<4>(v)), dm), hn::ConvertTo(df, hn::LoadU(d32, ag + j)),
                       off);
    }
  }
}

// Dot of one row with one token's activations a (q16: its codes widened to int16) over whole chunks; a 32-value
// row's last < 8 blocks by the reference.
template <DType T>
HWY_NOINLINE float RowDot(const uint8_t* HWY_RESTRICT row, int64_t nblocks, const GgmlActs& a,
                          const int16_t* HWY_RESTRICT q16) {
  const DF df;
  constexpr int64_t per_chunk = kSmall<T> ? 8 : 1;
  const size_t cb = kSmall<T> ? 8 * kBlockBytes<T> : dtype_info(T).block_bytes;
  const int64_t nchunks = nblocks / per_chunk;
  auto acc = hn::Zero(df), off = hn::Zero(df);
  alignas(32) float sc[16];
  for (int64_t ch = 0; ch < nchunks; ++ch) {
    const uint8_t* p = row + ch * cb;
    hwy::Prefetch(p + 2048);
    if constexpr (kIq<T>) {  // grids and signs decoded to levels by the scalar decoder, the products in SIMD
      formats::IqBlockLevels L;
      formats::ggml_iq_block_levels(T, reinterpret_cast<const std::byte*>(p), L);
      constexpr int per = kUnit32<T> ? 2 : 1;
      for (int u = 0; u < kUnits<T>; ++u) sc[u] = L.step * static_cast<float>(L.scale[per * u]) * a.dg[16 * ch];
      ScaleUnits<T, 0>(reinterpret_cast<const uint8_t*>(L.level), q16 + 256 * ch, sc, acc);
    } else {
      Headers<T>(p, a.dg.data() + 16 * ch, a.ag.data() + 16 * ch, sc, off);
      ScaleUnits<T, 0>(p, q16 + 256 * ch, sc, acc);
    }
  }
  float s = hn::GetLane(hn::SumOfLanes(df, hn::Sub(acc, off)));
  if (nchunks * per_chunk < nblocks)
    s += detail::ggml_dot_blocks_ref(T, reinterpret_cast<const std::byte*>(row), a, nchunks * per_chunk, nblocks);
  return s;
}

template <DType T>
void RowsPortable(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                  int64_t ldy) {
  const int64_t nblocks = w.cols / static_cast<int64_t>(dtype_info(T).block);
  thread_local std::vector<int16_t> q16;
  q16.resize(static_cast<size_t>(n_tok * w.cols));
  for (int64_t t = 0; t < n_tok; ++t) WidenActs(acts[t].q.data(), w.cols, q16.data() + t * w.cols);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(w.data + static_cast<size_t>(r) * w.row_bytes);
    for (int64_t t = 0; t < n_tok; ++t)
      y[t * ldy + (r - r0)] = RowDot<T>(row, nblocks, acts[t], q16.data() + t * w.cols);
  }
}

void GemmGgmlRows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                  int64_t ldy) {
  auto rows = [&](auto t) { RowsPortable<decltype(t)::value>(w, acts, n_tok, r0, r1, y, ldy); };
  if (!VisitGgmlType(w.dtype, rows) && !VisitIqType(w.dtype, rows)) RefRows(w, acts, n_tok, r0, r1, y, ldy);
}

#else  // the scalar target: the reference

void GemmGgmlRows(const WeightView& w, const detail::GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                  int64_t ldy) {
  RefRows(w, acts, n_tok, r0, r1, y, ldy);
}

#endif

// Repacking for this target's kernels (null where it has none for w).
RepackedMatrix* Repack(const WeightView& w) {
#if LOWBIT_AVX512_VNNI_PATH
  if (w.rows <= 0 || w.cols <= 0 || w.repacked) return nullptr;
  RepackedMatrix shape = RepackShape(w);
  if (shape.rows == 0) return nullptr;
  const size_t bytes = shape.bytes();
  // 2 MiB aligned and advised for transparent huge pages: decode streams the whole copy every token, and with 4 KiB
  // pages the page walks (and prefetches stopping at page ends) cost up to half the speed (measured 14 vs 32 t/s).
  // Only the whole huge pages are advised: a small matrix (or a large one's tail) would otherwise be rounded up to
  // a resident 2 MiB page.
  constexpr size_t kHuge = size_t{2} << 20;
  // posix_memalign: C11 aligned_alloc wants the size a multiple of the alignment. Freed with std::free.
  if (posix_memalign(&shape.storage, kHuge, (bytes + 4095) / 4096 * 4096) != 0 || !shape.storage)
    fail("", "repack", "out of memory for " + std::to_string(bytes) + " bytes");
#ifdef MADV_HUGEPAGE
  if (bytes >= kHuge) madvise(shape.storage, bytes / kHuge * kHuge, MADV_HUGEPAGE);
#endif
  auto* m = new RepackedMatrix(shape);
  const int64_t chunk = 64;
  bool ok = true;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads()) if (num_threads() > 1 && w.rows > chunk) reduction(&& : ok)
  for (int64_t r0 = 0; r0 < w.rows; r0 += chunk)
    ok = RepackRows(w, *m, r0, std::min(w.rows, r0 + chunk)) && ok;
  if (!ok) {
    std::free(m->storage);
    delete m;
    return nullptr;
  }
  return m;
#else
  (void)w;
  return nullptr;
#endif
}
void GemmRepackedRows(const WeightView& w, const detail::GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                      int64_t ldy) {
#if LOWBIT_AVX512_VNNI_PATH
  if (w.repacked) return GemmRepackedAvx(w, acts, n_tok, r0, r1, y, ldy);
#endif
  (void)acts, (void)n_tok, (void)r0, (void)r1, (void)y, (void)ldy;
  fail("", "matmul", "repacked weights on a target without their kernels");
}

// Batched activations in the layout this target's GemmGgmlRows reads.
void QuantizeActsBatch(DType wt, const float* x, int64_t n, detail::GgmlActs& a) {
#if LOWBIT_AVX512_VNNI_PATH
  if (B::traits(wt).values != 0 && n % B::traits(wt).values == 0) return QuantizeActsBatchAvx(wt, x, n, a);
#endif
  // Other targets' batched kernels read the decode fields.
  detail::quantize_acts_ggml(wt, x, n, a);
}

bool BatchesReadBatchedActs(DType t) {
#if LOWBIT_AVX512_VNNI_PATH
  return formats::ggml_iq_level_set(t).count == 0;  // GemmGgmlRows: unrepacked i-quants take RefRows
#else
  (void)t;
  return true;  // QuantizeActsBatch is the decode layout here
#endif
}

// Which of the three GemmGgmlRows above this target compiled.
const char* GgmlKernelPath() {
#if LOWBIT_AVX512_VNNI_PATH
  return "avx512-vnni";
#elif HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128 && !HWY_HAVE_SCALABLE
  return "highway";
#else
  return "scalar";
#endif
}

}  // namespace lowbit::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lowbit::ops {
HWY_EXPORT(GgmlKernelPath);
const char* ggml_kernel_path() { return HWY_DYNAMIC_DISPATCH(GgmlKernelPath)(); }
}  // namespace lowbit::ops
namespace lowbit::ops {
HWY_EXPORT(Repack);
RepackedPtr repack_for_kernels(const WeightView& w) { return RepackedPtr(HWY_DYNAMIC_DISPATCH(Repack)(w)); }
void RepackedDeleter::operator()(RepackedMatrix* m) const {
  if (!m) return;
  std::free(m->storage);
  delete m;
}
size_t repacked_bytes(const RepackedMatrix& m) { return m.bytes(); }
}  // namespace lowbit::ops
namespace lowbit::ops::detail {
HWY_EXPORT(GemmRepackedRows);
void gemm_repacked_rows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                        int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmRepackedRows)(w, acts, n_tok, r0, r1, y, ldy);
}
HWY_EXPORT(QuantizeActsBatch);
void quantize_acts_batched(DType wtype, const float* x, int64_t n, GgmlActs& a) {
  HWY_DYNAMIC_DISPATCH(QuantizeActsBatch)(wtype, x, n, a);
}
HWY_EXPORT(BatchesReadBatchedActs);
bool ggml_batches_read_batched_acts(DType t) { return HWY_DYNAMIC_DISPATCH(BatchesReadBatchedActs)(t); }
HWY_EXPORT(GemmGgmlRows);
void gemm_ggml_rows(const WeightView& w, const GgmlActs* acts, int64_t n_tok, int64_t r0, int64_t r1, float* y,
                    int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemmGgmlRows)(w, acts, n_tok, r0, r1, y, ldy);
}
}  // namespace lowbit::ops::detail
#endif
