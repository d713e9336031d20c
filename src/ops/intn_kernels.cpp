// GEMV on lowbit's packed intN weights (formats/intn.h) without decoding them to floats: activations are
// quantized to int16 per weight block and every block's dot product is an integer one. (int8 activations, as
// llama.cpp uses, moved the fixture models' perplexity by 0.2-0.6% against the dequantized f32 path; int16 keeps
// it within 0.01%, and the kernel stays memory-bound.)
//
//   y_r = sum over blocks b of  s_b * d_b * (sum_i c_i q_i  -  off_b * sum_i q_i)
//
// with s_b / off_b the block's fp16 scale and offset, c_i its B-bit codes (unsigned), and d_b / q_i the block's
// activation scale and int16 codes (d_b = max|x| / 32767, q_i = round(x_i / d_b)). sum(q) is computed once per
// call, so the inner loop is only 16-bit products summed in pairs (vpdpwssd on AVX-512 VNNI). The offset is an integer
// in every file lowbit writes, so the bracket is computed exactly in int32; a fractional offset (a foreign file)
// takes a float correction instead.
//
// Paths (this file is compiled once per Highway target):
//  - AVX3_DL (AVX-512 VNNI + VBMI): codes are unpacked in registers. 2- and 4-bit codes: 32 code bytes are
//    zero-extended to 16-bit lanes and split by shift-and-mask into "planes" (plane p of a 32-byte run holds
//    codes 8/B * i + p), with the activations stored in the same plane order, so no shuffles; 8-bit codes are
//    zero-extended as they are; 3/5/6/7-bit codes by vpermb (gather each 8 codes' B bytes into one 64-bit lane)
//    and vpmultishiftqb (pick 8 bits at offset B * j), a mask, then zero-extension.
//  - every other target: a block's codes are unpacked to bytes (scalar) and dotted with Highway's 16-bit
//    widening multiply-accumulate, activations in natural order.
// The activation layout therefore depends on the target: quantize_acts and the GEMV are dispatched together.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "formats/intn.h"
#include "lowbit/error.h"
#include "ops/kernels.h"
#include "ops/ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/intn_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace lowbit::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_AVX3_DL
constexpr bool kPlanes = true;  // 2/4-bit activations stored in plane order (see the file comment)
#else
constexpr bool kPlanes = false;
#endif

// Bytes of codes per block; the AVX3_DL kernel loads 2/4-bit codes in runs ("chunks") of at most 32 bytes.
inline int CodeBytes(int bits, int group) { return group * bits / 8; }
constexpr int kChunk = 32;

// Position of code i of a block in the activation layout of this target.
inline int ActPos(int bits, int group, int i) {
  if (!kPlanes || (bits != 2 && bits != 4)) return i;
  const int per_byte = 8 / bits;
  const int nb = CodeBytes(bits, group);
  const int byte = i / per_byte, plane = i % per_byte;
  const int chunk = byte / kChunk, len = std::min(kChunk, nb - kChunk * chunk);
  return chunk * kChunk * per_byte + plane * len + (byte - kChunk * chunk);
}

void QuantizeActsIntN(const formats::IntNFormat& f, const float* x, int64_t n, detail::IntNActs& a) {
  const int g = f.block();
  a.n = n;
  a.block = g;
  a.bits = f.bits();
  a.blocks = (n + g - 1) / g;
  a.q.assign(static_cast<size_t>(a.blocks * g), 0);
  a.d.resize(static_cast<size_t>(a.blocks));
  a.qsum.resize(static_cast<size_t>(a.blocks));
  std::vector<int> pos(static_cast<size_t>(g));
  for (int i = 0; i < g; ++i) pos[i] = ActPos(a.bits, g, i);
  for (int64_t b = 0; b < a.blocks; ++b) {
    const int64_t i0 = b * g, len = std::min<int64_t>(g, n - i0);
    float amax = 0.0f;
    for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[i0 + i]));
    const float d = amax / 32767.0f;
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    int16_t* q = a.q.data() + i0;
    for (int64_t i = 0; i < len; ++i) {
      const int v = static_cast<int>(std::nearbyint(x[i0 + i] * inv));
      const int c = std::clamp(v, -32767, 32767);
      q[pos[static_cast<size_t>(i)]] = static_cast<int16_t>(c);
      sum += c;
    }
    a.d[b] = d;
    a.qsum[b] = sum;
  }
}

// ---- portable path ------------------------------------------------------------------------------------------
// sum_i codes[i] * q[i]; a scalar tail finishes what the vectors leave.
HWY_INLINE int32_t DotU8I16(const uint8_t* HWY_RESTRICT codes, const int16_t* HWY_RESTRICT q, int n) {
#if HWY_TARGET == HWY_SCALAR
  int32_t s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<int32_t>(codes[i]) * q[i];
  return s;
#else
  const hn::ScalableTag<int32_t> d32;
  const hn::Repartition<int16_t, decltype(d32)> d16;
  const hn::RebindToUnsigned<decltype(d16)> du16;
  const hn::Rebind<uint8_t, decltype(d16)> du8;
  const int N = static_cast<int>(hn::Lanes(d16));
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  int i = 0;
  for (; i + N <= n; i += N) {
    const auto c = hn::BitCast(d16, hn::PromoteTo(du16, hn::LoadU(du8, codes + i)));
    s0 = hn::ReorderWidenMulAccumulate(d32, c, hn::LoadU(d16, q + i), s0, s1);
  }
  int32_t s = hn::GetLane(hn::SumOfLanes(d32, hn::Add(s0, s1)));
  for (; i < n; ++i) s += static_cast<int32_t>(codes[i]) * q[i];
  return s;
#endif
}

float RowDotPortable(const formats::IntNFormat& f, const std::byte* row, const detail::IntNActs& a) {
  const int g = f.block();
  const size_t bb = f.block_bytes();
  uint8_t codes[128];
  float acc = 0.0f;
  for (int64_t b = 0; b < a.blocks; ++b) {
    const formats::IntNBlock blk = formats::intn_unpack_block(f, row + b * bb, codes);
    const int32_t dot = DotU8I16(codes, a.q.data() + b * g, g);
    const auto off = static_cast<int32_t>(blk.offset);
    if (static_cast<float>(off) == blk.offset)
      acc += blk.scale * a.d[b] * static_cast<float>(dot - off * a.qsum[b]);
    else
      acc += blk.scale * a.d[b] * (static_cast<float>(dot) - blk.offset * static_cast<float>(a.qsum[b]));
  }
  return acc;
}

#if HWY_TARGET == HWY_AVX3_DL
// ---- AVX-512 VNNI + VBMI path ---------------------------------------------------------------------------------
// Highway 1.0.3's AVX3_DL target string names "avxvnni" (the VEX form) but not avx512vnni, which vpdpbusd on
// zmm registers needs; the CPUs it selects AVX3_DL for (Ice Lake and later, Zen 4) all have it.
#define LOWBIT_VNNI __attribute__((target(HWY_TARGET_STR ",avx512vnni")))
HWY_INLINE __mmask64 ByteMask(int n) { return n >= 64 ? ~__mmask64{0} : ((__mmask64{1} << n) - 1); }

// vpermb indices and vpmultishiftqb shifts that turn 8*B packed bytes into 64 byte-sized B-bit codes.
struct SpreadTables {
  __m512i perm, shift, mask;
};
HWY_INLINE SpreadTables MakeSpread(int bits) {
  alignas(64) uint8_t perm[64], shift[64];
  for (int q = 0; q < 8; ++q)
    for (int t = 0; t < 8; ++t) {
      perm[8 * q + t] = static_cast<uint8_t>(std::min(63, q * bits + t));  // bytes q*B .. q*B+7 of the run
      shift[8 * q + t] = static_cast<uint8_t>(t * bits);                   // code t of the lane's 8
    }
  return {_mm512_load_si512(perm), _mm512_load_si512(shift), _mm512_set1_epi8(static_cast<char>((1 << bits) - 1))};
}

HWY_INLINE __mmask32 WordMask(int n) { return n >= 32 ? ~__mmask32{0} : ((__mmask32{1} << n) - 1); }

template <int B>
LOWBIT_VNNI HWY_INLINE __m512i BlockDot(const uint8_t* HWY_RESTRICT codes, const int16_t* HWY_RESTRICT q, int g,
                                        const SpreadTables& sp) {
  __m512i acc = _mm512_setzero_si512();
  if constexpr (B == 4 || B == 2) {
    constexpr int per = 8 / B;
    const int nb = g * B / 8;
    const __m512i m = _mm512_set1_epi16((1 << B) - 1);
    for (int c = 0; c < nb; c += kChunk) {
      const int len = std::min(kChunk, nb - c);
      const __mmask32 k = WordMask(len);
      const __m512i v = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(k, codes + c));  // 32 code bytes, widened
      const int16_t* qc = q + c * per;
      for (int p = 0; p < per; ++p) {
        const __m512i plane = _mm512_and_si512(p == 0 ? v : _mm512_srli_epi16(v, p * B), m);
        acc = _mm512_dpwssd_epi32(acc, plane, _mm512_maskz_loadu_epi16(k, qc + p * len));
      }
    }
  } else if constexpr (B == 8) {
    for (int c = 0; c < g; c += 32) {
      const __mmask32 k = WordMask(g - c);
      acc = _mm512_dpwssd_epi32(acc, _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(k, codes + c)),
                                _mm512_maskz_loadu_epi16(k, q + c));
    }
  } else {
    for (int c = 0; c < g; c += 64) {  // 64 codes = 8 * B bytes
      const int n = std::min(64, g - c);
      const __m512i raw = _mm512_maskz_loadu_epi8(ByteMask(n * B / 8), codes + c * B / 8);
      const __m512i spread = _mm512_permutexvar_epi8(sp.perm, raw);
      const __m512i v = _mm512_and_si512(_mm512_multishift_epi64_epi8(sp.shift, spread), sp.mask);
      acc = _mm512_dpwssd_epi32(acc, _mm512_cvtepu8_epi16(_mm512_castsi512_si256(v)),
                                _mm512_maskz_loadu_epi16(WordMask(n), q + c));
      if (n > 32)
        acc = _mm512_dpwssd_epi32(acc, _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(v, 1)),
                                  _mm512_maskz_loadu_epi16(WordMask(n - 32), q + c + 32));
    }
  }
  return acc;
}

template <int B>
LOWBIT_VNNI float RowDotVnni(const std::byte* row, int g, size_t bb, bool asym, const detail::IntNActs& a,
                 const SpreadTables& sp) {
  const size_t hdr = asym ? 4 : 2;
  __m512 acc = _mm512_setzero_ps();
  float corr = 0.0f;  // fractional offsets only
  for (int64_t b = 0; b < a.blocks; ++b) {
    const uint8_t* blk = reinterpret_cast<const uint8_t*>(row + b * bb);
    uint16_t hs, hz = 0;
    std::memcpy(&hs, blk, 2);
    if (asym) std::memcpy(&hz, blk + 2, 2);
    const float s = _cvtsh_ss(hs);
    __m512i dot = BlockDot<B>(blk + hdr, a.q.data() + b * g, g, sp);
    const float sd = s * a.d[b];
    int32_t off = 1 << (B - 1);
    if (asym) {
      const float offf = _cvtsh_ss(hz);
      off = static_cast<int32_t>(offf);
      if (static_cast<float>(off) != offf) {
        corr += sd * (offf - static_cast<float>(off)) * static_cast<float>(a.qsum[b]);
      }
    }
    dot = _mm512_mask_sub_epi32(dot, 1, dot, _mm512_set1_epi32(off * a.qsum[b]));  // lane 0 takes off * sum(q)
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(sd), acc);
  }
  return _mm512_reduce_add_ps(acc) - corr;
}

template <int B>
void RowsVnni(const WeightView& w, const detail::IntNActs& a, int64_t r0, int64_t r1, float* y) {
  const SpreadTables sp = MakeSpread(B);
  const int g = w.intn->block();
  const size_t bb = w.intn->block_bytes();
  const bool asym = w.intn->asymmetric();
  for (int64_t r = r0; r < r1; ++r) y[r - r0] = RowDotVnni<B>(w.data + r * w.row_bytes, g, bb, asym, a, sp);
}
#endif

void GemvIntNRows(const WeightView& w, const detail::IntNActs& a, int64_t r0, int64_t r1, float* y) {
#if HWY_TARGET == HWY_AVX3_DL
  switch (w.intn->bits()) {
    case 2: return RowsVnni<2>(w, a, r0, r1, y);
    case 3: return RowsVnni<3>(w, a, r0, r1, y);
    case 4: return RowsVnni<4>(w, a, r0, r1, y);
    case 5: return RowsVnni<5>(w, a, r0, r1, y);
    case 6: return RowsVnni<6>(w, a, r0, r1, y);
    case 7: return RowsVnni<7>(w, a, r0, r1, y);
    default: return RowsVnni<8>(w, a, r0, r1, y);
  }
#else
  for (int64_t r = r0; r < r1; ++r) y[r - r0] = RowDotPortable(*w.intn, w.data + r * w.row_bytes, a);
#endif
}

}  // namespace lowbit::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lowbit::ops {

HWY_EXPORT(QuantizeActsIntN);
HWY_EXPORT(GemvIntNRows);

namespace detail {
void quantize_acts_intn(const formats::IntNFormat& f, const float* x, int64_t n, IntNActs& a) {
  HWY_DYNAMIC_DISPATCH(QuantizeActsIntN)(f, x, n, a);
}
void gemv_intn_rows(const WeightView& w, const IntNActs& a, int64_t r0, int64_t r1, float* y) {
  if (a.n != w.cols || a.block != w.intn->block() || a.bits != w.intn->bits())
    fail("", "gemv_intn", "activations were quantized for another format or length");
  HWY_DYNAMIC_DISPATCH(GemvIntNRows)(w, a, r0, r1, y);
}
}  // namespace detail

}  // namespace lowbit::ops
#endif
