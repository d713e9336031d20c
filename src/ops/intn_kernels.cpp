// GEMV on lowbit's packed intN weights (formats/intn.h) without decoding them to floats: activations are
// quantized to integers per weight block and every block's dot product is an integer one.
//
//   y_r = sum over blocks b of  s_b * d_b * (sum_i c_i q_i  -  off_b * sum_i q_i)
//
// with s_b / off_b the block's fp16 scale and offset, c_i its B-bit codes (unsigned), and d_b / q_i the block's
// activation scale and integer codes (d_b = max|x| / A, q_i = round(x_i / d_b), A = ActMax: 127 * 256 for int16
// activations, 127 * 16 for the AVX3_DL 4-bit kernel). sum(q) is computed once per call. (int8 activations, as
// llama.cpp uses, moved the fixture models' perplexity by 0.1-0.8% against the dequantized f32 path; 11-bit ones by
// at most 0.04%, 16-bit ones by less.)
//
// Paths (this file is compiled once per Highway target):
//  - AVX3_DL (AVX-512 VNNI + VBMI), codes unpacked in registers and instantiated per (bits, group, sym/asym):
//    - 2- and 4-bit (RowsDotSplit): one 64-byte vector holds 512 / (B * G) blocks; each plane of codes (the
//      codes at the same bit offset of every byte) and S = 2^(8 - B) times it, made with masks, vpmultishiftqb
//      and 16-entry tables (vpshufb), multiply the activations split q = S * hi + lo in one vpdpbusd chain
//      (11-bit activations for 4-bit weights, 13-bit for 2-bit); 4 rows at a time share the activation loads.
//    - 3/5/6/7/8-bit: q stored as two int8 halves, q = 256 * hi + lo, so the products are unsigned-by-signed
//      bytes (vpdpbusd) at int16 precision; 8-bit codes are used as they are, 3/5/6/7-bit ones by vpermb (gather
//      each 8 codes' B bytes into one 64-bit lane) and vpmultishiftqb (pick 8 bits at offset B * j), then a mask.
//    Block headers are gathered 16 blocks at a time; the offset term is one vector FMA per 16 blocks.
//  - every other target (Highway, vectors of at most 256 bits): 4- and 2-bit codes in 16-bit-lane planes (4-bit
//    runs of 64 bytes read as 32 lanes of 4 codes), unpacked with vector shifts; 8-bit codes widened; 3/5/6/7-bit
//    codes unpacked to bytes eight at a time from 64-bit words; products by the 16-bit widening multiply-accumulate
//    (vpmaddwd on x86). The bracket is exact in int32 when the offset is an integer (always, in files lowbit writes).
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
#include "ops/simd_path.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/intn_kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace lowbit::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if LOWBIT_AVX512_VNNI_PATH
constexpr bool kPlanes = true;  // the AVX3_DL kernel (int8 halves, grouped small blocks; see the file comment)
#else
constexpr bool kPlanes = false;
#endif

// Bytes of codes per block.
inline int CodeBytes(int bits, int group) { return group * bits / 8; }

// Position of code i of a block in the activation layout (every target but AVX3_DL's 2- and 4-bit kernels, see
// SplitS below). 2- and 4-bit codes are read as
// 16-bit lanes of 4 codes -- 4-bit runs of 64 bytes as they are, 2-bit runs of 32 bytes widened from bytes -- and
// split into 4 planes, plane p of a run holding codes 4j + p; their activations are stored plane after plane.
// Other widths keep the natural order.
constexpr int kChunk16 = 32;
inline bool Int16Planes(int bits) { return bits == 2 || bits == 4; }

// AVX3_DL, B = 2 or 4 bits (RowsDotSplit): blocks are read K = 512 / (B * G) at a time as one 64-byte vector of
// codes (K = 1 for 4-bit G = 128), block j of a group owning bytes [j * nb, (j + 1) * nb), nb = G * B / 8. A byte
// holds P = 8 / B codes; each group's activations take 64 * P int8 slots, plane after plane: code i of block j goes
// to slot (i % P) * 64 + j * nb + i / P. A row's last group may hold fewer than K blocks (the rest read as zeros).
//
// The activations are split q = S * hi + lo with hi in int8 and lo in [-S / 2, S / 2), S = 2^(8 - B), so that both
// halves multiply unsigned code bytes, c and S * c (<= 240 or 192), in one vpdpbusd chain. Returns S, or 0 where
// the target does not use this layout.
inline int SplitS(int bits) { return kPlanes && Int16Planes(bits) ? 1 << (8 - bits) : 0; }
inline int GroupOf(int bits, int group) { return SplitS(bits) ? 512 / (bits * group) : 1; }

// Largest activation code |q|: 127 * S for the split kernels -- 11-bit activations for 4-bit weights, 13-bit for
// 2-bit (11-bit ones moved the fixture perplexities by at most 0.04% against the f32 path, where int8 moved them by
// up to 0.8%). Every other kernel reads int16 activations: 127 * 256.
inline int ActMax(int bits) { return SplitS(bits) ? 127 * SplitS(bits) : detail::kActMax; }

inline int ActPos(int bits, int group, int i) {
  if (bits == 4) {  // 64-byte runs read as 32 16-bit lanes of 4 codes each: plane p lane j = code 4j + p
    const int nb = CodeBytes(bits, group);
    const int lane = i / 4, plane = i % 4;
    const int chunk = lane / 32, lanes = std::min(32, (nb - 64 * chunk) / 2);
    return chunk * 128 + plane * lanes + (lane - 32 * chunk);
  }
  if (bits == 2) {  // 32-byte runs widened to 16-bit lanes of 4 codes each
    const int nb = CodeBytes(bits, group);
    const int byte = i / 4, plane = i % 4;
    const int chunk = byte / kChunk16, len = std::min(kChunk16, nb - kChunk16 * chunk);
    return chunk * kChunk16 * 4 + plane * len + (byte - kChunk16 * chunk);
  }
  return i;
}

// max |x[i]| over n values (SIMD: a scalar max chain would cost 4 cycles per value).
HWY_INLINE float AbsMax(const float* HWY_RESTRICT x, int64_t n) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  auto m = hn::Zero(df);
  int64_t i = 0;
  for (; i + N <= n; i += N) m = hn::Max(m, hn::Abs(hn::LoadU(df, x + i)));
  float r = hn::GetLane(hn::MaxOfLanes(df, m));
  for (; i < n; ++i) r = std::max(r, std::fabs(x[i]));
  return r;
}

void QuantizeActsIntN(const formats::IntNFormat& f, const float* x, int64_t n, detail::IntNActs& a) {
  const int g = f.block();
  a.n = n;
  a.block = g;
  a.bits = f.bits();
  a.blocks = (n + g - 1) / g;
  const int S = SplitS(a.bits), K = GroupOf(a.bits, g);
  const size_t total = static_cast<size_t>((a.blocks + K - 1) / K * K * g);  // whole groups
  const bool split_s = S > 0;
  const bool split = kPlanes && !Int16Planes(a.bits);  // int8 halves for vpdpbusd, else int16
  a.act_max = ActMax(a.bits);
  if (split_s || split) {
    a.qh.assign(total, 0);
    a.ql.assign(total, 0);
  } else {
    a.q.assign(total, 0);
  }
  a.d.resize(static_cast<size_t>(a.blocks));
  a.qsum.resize(static_cast<size_t>(a.blocks));
  // Where code i of a block goes: pos for a lone block, gpos for block j of a full group (see GroupOf), both
  // relative to the start of the block / group. Rebuilt only when the format changes (acts are reused per thread).
  if (a.layout_bits != a.bits || a.layout_block != g || a.layout_target != HWY_TARGET) {
    a.pos.resize(static_cast<size_t>(g));
    for (int i = 0; i < g; ++i) a.pos[i] = ActPos(a.bits, g, i);
    a.gpos.resize(static_cast<size_t>(K * g));
    for (int j = 0; j < K; ++j)
      for (int i = 0; i < g; ++i) {
        const int per_byte = 8 / std::max(1, a.bits), nb = g * a.bits / 8;
        a.gpos[static_cast<size_t>(j * g + i)] = (i % per_byte) * 64 + j * nb + i / per_byte;
      }
    a.layout_bits = a.bits;
    a.layout_block = g;
    a.layout_target = HWY_TARGET;
  }
  for (int64_t b = 0; b < a.blocks; ++b) {
    const int64_t i0 = b * g, len = std::min<int64_t>(g, n - i0);
    const int64_t grp = b / K * K;
    const int* P = split_s ? a.gpos.data() + (b - grp) * g : a.pos.data();
    const int64_t base = split_s ? grp * g : i0;
    const float d = AbsMax(x + i0, len) / static_cast<float>(a.act_max);
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int64_t i = 0; i < len; ++i) {
      // Round half to even with the 1.5 * 2^23 trick (exact here: |x * inv| <= kActMax), as nearbyint does.
      const float r = (x[i0 + i] * inv + 12582912.0f) - 12582912.0f;
      const int c = std::clamp(static_cast<int>(r), -a.act_max, a.act_max);
      const size_t at = static_cast<size_t>(base + P[i]);
      if (split_s) {  // c = S * hi + lo, hi in [-127, 127], lo in [-S / 2, S / 2)
        const int hi = (c + S / 2) >> (8 - a.bits);
        a.qh[at] = static_cast<int8_t>(hi);
        a.ql[at] = static_cast<int8_t>(c - S * hi);
      } else if (split) {  // c = 256 * hi + lo with both in int8 range: |c| <= 127 * 256 keeps hi in [-127, 127]
        const int hi = (c + 128) >> 8;
        a.qh[at] = static_cast<int8_t>(hi);
        a.ql[at] = static_cast<int8_t>(c - 256 * hi);
      } else {
        a.q[at] = static_cast<int16_t>(c);
      }
      sum += c;
    }
    a.d[b] = d;
    a.qsum[b] = sum;
  }
}

// ---- portable path ------------------------------------------------------------------------------------------
#if HWY_TARGET != HWY_SCALAR
// Four B-bit fields per 16-bit lane (field p = bits [p * B, p * B + B)) of `lanes` lanes at v16, times plane p's
// int16 activations at q + p * lanes, accumulated into s0 / s1 (16-bit products summed in pairs).
// T: uint16_t (lanes read as they are) or uint8_t (bytes widened to 16-bit lanes).
template <int B, class D32, class V32, typename T>
HWY_INLINE void Planes16Portable(D32 d32, const T* HWY_RESTRICT src, const int16_t* HWY_RESTRICT q, int lanes,
                                 V32& s0, V32& s1) {
  const hn::Repartition<int16_t, D32> d16;
  const hn::RebindToUnsigned<decltype(d16)> du16;
  const hn::Rebind<T, decltype(d16)> dsrc;
  const int N = static_cast<int>(hn::Lanes(d16));
  const auto m = hn::Set(du16, static_cast<uint16_t>((1 << B) - 1));
  for (int i = 0; i < lanes; i += N) {
    hn::Vec<decltype(du16)> v;
    if constexpr (sizeof(T) == 2)
      v = hn::LoadU(du16, src + i);
    else
      v = hn::PromoteTo(du16, hn::LoadU(dsrc, src + i));
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, hn::And(v, m)), hn::LoadU(d16, q + i), s0, s1);
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, hn::And(hn::ShiftRight<B>(v), m)),
                                       hn::LoadU(d16, q + lanes + i), s0, s1);
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, hn::And(hn::ShiftRight<2 * B>(v), m)),
                                       hn::LoadU(d16, q + 2 * lanes + i), s0, s1);
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, hn::ShiftRight<3 * B>(v)), hn::LoadU(d16, q + 3 * lanes + i),
                                       s0, s1);
  }
}

// 3/5/6/7-bit codes straight into 16-bit lanes. Code j of a run starts at bit B * j, so it lies in bytes
// (B j) / 8 and the next (B <= 7: at most 15 bits from the first byte's start). 16 codes span 2B <= 14 bytes:
// one 16-byte load, copied to every 128-bit block (LoadDup128), feeds every lane's byte shuffle, which stays
// within its block as x86's vpshufb requires. Then lane = (pair * 2^(8 - shift)) >> 8, masked to B bits.
struct SpreadPortable {
  alignas(32) uint8_t idx[8][32];   // [B][2 * lane + byte]: source byte of each lane's low and high byte
  alignas(32) uint16_t mul[8][16];  // [B][lane]: 2^(8 - (B * lane) % 8)
};
inline const SpreadPortable& SpreadTablesPortable() {
  static const SpreadPortable t = [] {
    SpreadPortable s{};
    for (int b = 1; b < 8; ++b)
      for (int l = 0; l < 16; ++l) {
        const int bit = b * l;
        s.idx[b][2 * l] = static_cast<uint8_t>(bit / 8);
        s.idx[b][2 * l + 1] = static_cast<uint8_t>(std::min(15, bit / 8 + 1));
        s.mul[b][l] = static_cast<uint16_t>(1u << (8 - bit % 8));
      }
    return s;
  }();
  return t;
}

// sum_i c_i q_i over a block of g B-bit codes (3/5/6/7) in natural order, 8 or 16 lanes per step.
template <class D32>
HWY_INLINE void OddBitsDot(D32 d32, int bits, const uint8_t* codes, int g, const int16_t* HWY_RESTRICT q,
                           hn::Vec<D32>& s0, hn::Vec<D32>& s1) {
  const hn::Repartition<int16_t, D32> d16;
  const hn::RebindToUnsigned<decltype(d16)> du16;
  const hn::Repartition<uint8_t, D32> du8;
  const int N = static_cast<int>(hn::Lanes(d16));
  // The block's code bytes plus 16 bytes of slack for the last load (the row may end right after them).
  alignas(32) uint8_t buf[128 * 7 / 8 + 16] = {};
  std::memcpy(buf, codes, static_cast<size_t>(g * bits / 8));
  const SpreadPortable& t = SpreadTablesPortable();
  const auto idx = hn::Load(du8, t.idx[bits]);
  const auto mul = hn::Load(du16, t.mul[bits]);
  const auto mask = hn::Set(du16, static_cast<uint16_t>((1 << bits) - 1));
  for (int i = 0; i < g; i += N) {
    const auto raw = hn::LoadDup128(du8, buf + i * bits / 8);
    const auto pairs = hn::BitCast(du16, hn::TableLookupBytes(raw, idx));
    const auto c = hn::And(hn::ShiftRight<8>(hn::Mul(pairs, mul)), mask);
    s0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, c), hn::LoadU(d16, q + i), s0, s1);
  }
}

// sum_i c_i q_i of one block. 4-bit and 2-bit codes are unpacked with SIMD shifts (16-bit-lane planes), 8-bit
// ones widened, 3/5/6/7-bit ones by OddBitsDot.
template <class D32>
HWY_INLINE hn::Vec<D32> BlockDotPortable(D32 d32, const formats::IntNFormat& f, const uint8_t* codes,
                                         const int16_t* HWY_RESTRICT q) {
  const int g = f.block(), bits = f.bits(), nb = CodeBytes(bits, g);
  auto s0 = hn::Zero(d32), s1 = hn::Zero(d32);
  if (bits == 4) {  // each run read as 16-bit lanes (little-endian) straight from the row
    for (int c = 0; c < nb; c += 64)
      Planes16Portable<4>(d32, reinterpret_cast<const uint16_t*>(codes + c), q + c * 2, std::min(32, (nb - c) / 2), s0, s1);
  } else if (bits == 2) {  // each run's bytes widened to 16-bit lanes
    for (int c = 0; c < nb; c += 32) Planes16Portable<2>(d32, codes + c, q + c * 4, std::min(32, nb - c), s0, s1);
  } else if (bits == 8) {  // 8-bit codes are the bytes themselves, widened
    const hn::Repartition<int16_t, D32> d16;
    const hn::RebindToUnsigned<decltype(d16)> du16;
    const hn::Rebind<uint8_t, decltype(d16)> du8;
    const int N = static_cast<int>(hn::Lanes(d16));
    for (int i = 0; i < g; i += N)
      s0 = hn::ReorderWidenMulAccumulate(d32, hn::BitCast(d16, hn::PromoteTo(du16, hn::LoadU(du8, codes + i))),
                                         hn::LoadU(d16, q + i), s0, s1);
  } else {
    OddBitsDot(d32, bits, codes, g, q, s0, s1);
  }
  return hn::Add(s0, s1);
}

#else
// The scalar target: codes unpacked one by one, activations read through the layout table.
template <class D32>
int32_t BlockDotPortable(D32, const formats::IntNFormat& f, const uint8_t* codes, const int16_t* q, const int* pos) {
  uint8_t bytes[128];
  formats::intn_unpack_block(f, reinterpret_cast<const std::byte*>(codes) - (f.asymmetric() ? 4 : 2), bytes);
  int32_t s = 0;
  for (int i = 0; i < f.block(); ++i) s += static_cast<int32_t>(bytes[i]) * q[pos[i]];
  return s;
}
#endif

#if HWY_TARGET == HWY_SCALAR
float RowDotPortable(const formats::IntNFormat& f, const std::byte* row, const detail::IntNActs& a) {
  const int g = f.block();
  const size_t bb = f.block_bytes(), hdr = f.asymmetric() ? 4 : 2;
  const hn::ScalableTag<int32_t> d32;
  float acc = 0.0f;
  for (int64_t b = 0; b < a.blocks; ++b) {
    const std::byte* blk = row + b * bb;
    uint16_t hs, hz = 0;
    std::memcpy(&hs, blk, 2);
    if (hdr == 4) std::memcpy(&hz, blk + 2, 2);
    const float scale = lowbit::f16_to_f32(hs);
    const float offset = hdr == 4 ? lowbit::f16_to_f32(hz) : static_cast<float>(1 << (f.bits() - 1));
    const int32_t dot =
        BlockDotPortable(d32, f, reinterpret_cast<const uint8_t*>(blk + hdr), a.q.data() + b * g, a.pos.data());
    acc += scale * a.d[b] * (static_cast<float>(dot) - offset * static_cast<float>(a.qsum[b]));
  }
  return acc;
}
#else
// Per block: the int32 lanes of sum c q, less off * sum(q) in lane 0 (exact in int32 for an integer offset, always
// the case in files lowbit writes; other offsets are summed apart in float), converted and scaled by s * d into a
// float vector. One horizontal sum per row.
template <class D32>
float RowDotVec(D32 d32, const formats::IntNFormat& f, const std::byte* row, const detail::IntNActs& a) {
  const hn::Repartition<float, D32> df;
  const int g = f.block();
  const size_t bb = f.block_bytes(), hdr = f.asymmetric() ? 4 : 2;
  const float sym_off = static_cast<float>(1 << (f.bits() - 1));
  const auto lane0 = hn::FirstN(d32, 1);
  auto acc = hn::Zero(df);
  float off_acc = 0.0f;
  for (int64_t b = 0; b < a.blocks; ++b) {
    const std::byte* blk = row + b * bb;
    hwy::Prefetch(blk + 1024);
    uint16_t hs, hz = 0;
    std::memcpy(&hs, blk, 2);
    if (hdr == 4) std::memcpy(&hz, blk + 2, 2);
    const float sd = lowbit::f16_to_f32(hs) * a.d[b];
    const float offset = hdr == 4 ? lowbit::f16_to_f32(hz) : sym_off;
    auto dot = BlockDotPortable(d32, f, reinterpret_cast<const uint8_t*>(blk + hdr), a.q.data() + b * g);
    const auto off = static_cast<int32_t>(offset);
    if (static_cast<float>(off) == offset)
      dot = hn::Sub(dot, hn::IfThenElseZero(lane0, hn::Set(d32, off * a.qsum[b])));
    else
      off_acc += sd * offset * static_cast<float>(a.qsum[b]);
    acc = hn::MulAdd(hn::ConvertTo(df, dot), hn::Set(df, sd), acc);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc)) - off_acc;
}

float RowDotPortable(const formats::IntNFormat& f, const std::byte* row, const detail::IntNActs& a) {
  // At most 256-bit vectors (16 int16 lanes), 128-bit for 32-code blocks: every plane run (8, 16 or 32 lanes)
  // is then a whole number of vectors.
  if (f.block() >= 64) return RowDotVec(hn::CappedTag<int32_t, 8>(), f, row, a);
  return RowDotVec(hn::CappedTag<int32_t, 4>(), f, row, a);
}
#endif

#if LOWBIT_AVX512_VNNI_PATH
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


// One block's sum_i c_i q_i (3/5/6/7/8-bit), spread over the 16 int32 lanes, from the activations split as
// q = 256 * hi + lo (two int8 halves, so unsigned-by-signed byte products -- vpdpbusd -- give int16 precision).
// B and G are compile-time constants so every loop below unrolls and every load mask is a constant.
template <int B, int G>
LOWBIT_VNNI HWY_INLINE __m512i BlockDot(const uint8_t* HWY_RESTRICT codes, const int8_t* HWY_RESTRICT qh,
                                        const int8_t* HWY_RESTRICT ql, const SpreadTables& sp) {
  __m512i h0 = _mm512_setzero_si512(), h1 = _mm512_setzero_si512();
  __m512i l0 = _mm512_setzero_si512(), l1 = _mm512_setzero_si512();
  // Loads n <= 64 bytes: a plain load for a full vector, a masked one (constant mask) for a short run.
  auto load = [](const void* p, int n) {
    return n >= 64 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(ByteMask(n), p);
  };
  {
    for (int c = 0; c < G; c += 64) {
      const int n = std::min(64, G - c);
      __m512i v;
      if constexpr (B == 8) {
        v = load(codes + c, n);
      } else {  // 64 codes = 8 * B bytes: gather each 8 codes' bytes into a 64-bit lane, pick the B-bit fields
        const __m512i spread = _mm512_permutexvar_epi8(sp.perm, load(codes + c * B / 8, n * B / 8));
        v = _mm512_maskz_and_epi32(n >= 64 ? 0xffff : 0x00ff, _mm512_multishift_epi64_epi8(sp.shift, spread), sp.mask);
      }
      __m512i& h = (c / 64) % 2 ? h1 : h0;
      __m512i& l = (c / 64) % 2 ? l1 : l0;
      h = _mm512_dpbusd_epi32(h, v, load(qh + c, n));
      l = _mm512_dpbusd_epi32(l, v, load(ql + c, n));
    }
  }
  return _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(h0, h1), 8), _mm512_add_epi32(l0, l1));
}

// Headers of blocks [b0, b0 + nblk) (nblk <= 16) of R rows of bb-byte blocks: sd[r][j] = scale * d of block b0 + j,
// and the offset term sum_j scale * d * offset * sum(q) added to cacc[r]. One gather per row reads the 16 headers
// (4 bytes at each block start: fp16 scale, then, asymmetric, the fp16 zero).
template <int R, int B, bool ASYM>
LOWBIT_VNNI HWY_INLINE void BlockHeaders16(const std::byte* const* rows, const detail::IntNActs& a, int64_t b0,
                                           int nblk, size_t bb, float (*sd)[16], __m512* cacc) {
  const __m512i offsets = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                             _mm512_set1_epi32(static_cast<int>(bb)));
  const __mmask16 km = static_cast<__mmask16>((1u << nblk) - 1);
  const __m512 dv = _mm512_maskz_loadu_ps(km, a.d.data() + b0);
  const __m512 qs = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(km, a.qsum.data() + b0));
  for (int r = 0; r < R; ++r) {
    const __m512i h = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), km, offsets, rows[r] + b0 * bb, 1);
    const __m512 sdv = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(h)), dv);
    _mm512_store_ps(sd[r], sdv);
    const __m512 off = ASYM ? _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(h, 16)))
                            : _mm512_set1_ps(static_cast<float>(1 << (B - 1)));
    cacc[r] = _mm512_fmadd_ps(_mm512_mul_ps(sdv, off), qs, cacc[r]);
  }
}

// R rows at once: R independent weight streams for the memory system and R independent accumulation chains.
// Block headers are read 16 blocks at a time (one gather per row): scale * d for every block in one vector, and
// the offset term sum_b scale_b * d_b * off_b * sum(q)_b accumulated as a vector too; per block only the int32
// dot, its conversion and one FMA with the block's scale * d remain.
template <int B, int G, bool ASYM, int R>
LOWBIT_VNNI void RowsDotVnni(const std::byte* const* rows, const detail::IntNActs& a, const SpreadTables& sp,
                             float* out) {
  constexpr size_t hdr = ASYM ? 4 : 2;
  constexpr size_t bb = hdr + static_cast<size_t>(G) * B / 8;
  __m512 acc[R], cacc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps(), cacc[r] = _mm512_setzero_ps();
  const int8_t* qh = a.qh.data();
  const int8_t* ql = a.ql.data();
  for (int64_t b0 = 0; b0 < a.blocks; b0 += 16) {
    const int nblk = static_cast<int>(std::min<int64_t>(16, a.blocks - b0));
    alignas(64) float sd[R][16];
    BlockHeaders16<R, B, ASYM>(rows, a, b0, nblk, bb, sd, cacc);
    for (int j = 0; j < nblk; ++j) {
      const int64_t b = b0 + j;
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = reinterpret_cast<const uint8_t*>(rows[r] + b * bb);
        _mm_prefetch(reinterpret_cast<const char*>(blk) + 8192, _MM_HINT_T0);
        const __m512i dot = BlockDot<B, G>(blk + hdr, qh + b * G, ql + b * G, sp);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(sd[r][j]), acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[r], cacc[r]));
}

// 2- and 4-bit (layout at SplitS): R rows at a time, one 64-byte vector of codes per group of K blocks, unpacked
// into the unsigned bytes c_p and S * c_p of each plane p (the codes at bits [B p, B p + B) of every byte), so the
// dot is one vpdpbusd chain over the planes:  sum c q = sum_p (S c_p) . hi_p + c_p . lo_p.
//  - 4-bit: c_0 = v & 0x0f, S c_1 = v & 0xf0, c_1 by vpmultishiftqb, S c_0 by a 16-entry table (vpshufb).
//  - 2-bit: c_0 = v & 3, S c_3 = v & 0xc0, the rest by tables on the low and high nibbles.
// No 512-bit shifts, which share port 0 with the dot products on Intel cores. Headers are handled 16 blocks at a
// time as in RowsDotVnni; R rows share every activation load.
template <int B, int G, bool ASYM, int R>
LOWBIT_VNNI void RowsDotSplit(const std::byte* const* rows, const detail::IntNActs& a, float* out) {
  constexpr int K = 512 / (B * G), nb = G * B / 8, P = 8 / B, S = 1 << (8 - B);
  static_assert(K >= 1 && K <= 8 && 16 % K == 0);
  constexpr size_t hdr = ASYM ? 4 : 2;
  constexpr size_t bb = hdr + nb;
  __m512 acc[R], cacc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps(), cacc[r] = _mm512_setzero_ps();
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i high = _mm512_set1_epi64(0x3c342c241c140c04LL);  // byte p of each qword <- bits [8p + 4, 8p + 12)
  // Tables on a nibble n: 4-bit: S * n; 2-bit: n >> 2, S * (n & 3), S * (n >> 2).
  alignas(16) uint8_t tab[3][16];
  for (int n = 0; n < 16; ++n) {
    tab[0][n] = static_cast<uint8_t>(B == 4 ? S * n : n >> 2);
    tab[1][n] = static_cast<uint8_t>(S * (n & 3));
    tab[2][n] = static_cast<uint8_t>(S * (n >> 2));
  }
  const __m512i t0 = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(tab[0])));
  const __m512i t1 = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(tab[1])));
  const __m512i t2 = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(tab[2])));
  // Lane l of a group's int32 dot belongs to block l / (16 / K) of the group.
  const __m512i lane_block = _mm512_srli_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               K == 1 ? 4 : (K == 2 ? 3 : (K == 4 ? 2 : 1)));
  const __m512i piece = _mm512_setr_epi64(0, bb, 2 * bb, 3 * bb, 4 * bb, 5 * bb, 6 * bb, 7 * bb);  // K == 8
  const int8_t* qh = a.qh.data();
  const int8_t* ql = a.ql.data();
  for (int64_t b0 = 0; b0 < a.blocks; b0 += 16) {
    const int nblk = static_cast<int>(std::min<int64_t>(16, a.blocks - b0));
    alignas(64) float sd[R][16];
    BlockHeaders16<R, B, ASYM>(rows, a, b0, nblk, bb, sd, cacc);
    for (int j = 0; j < nblk; j += K) {
      const int64_t b = b0 + j;  // first block of the group (b0 and j are multiples of K)
      const int8_t* gh = qh + b * G;
      const int8_t* gl = ql + b * G;
      __m512i hi[P], lo[P];
      for (int p = 0; p < P; ++p) hi[p] = _mm512_loadu_si512(gh + 64 * p), lo[p] = _mm512_loadu_si512(gl + 64 * p);
      const int have = std::min(K, nblk - j);  // blocks of this group in the row
      const __m512i idx = _mm512_add_epi32(lane_block, _mm512_set1_epi32(j));
      for (int r = 0; r < R; ++r) {
        const uint8_t* blk = reinterpret_cast<const uint8_t*>(rows[r] + b * bb) + hdr;
        _mm_prefetch(reinterpret_cast<const char*>(blk) + 8192, _MM_HINT_T0);
        if constexpr (K > 1) _mm_prefetch(reinterpret_cast<const char*>(blk) + 8192 + 64, _MM_HINT_T0);
        __m512i v;
        if constexpr (K == 1) {
          v = _mm512_loadu_si512(blk);
        } else if constexpr (K == 2) {
          v = _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
          if (have > 1) v = _mm512_inserti64x4(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + bb)), 1);
        } else if constexpr (K == 4) {
          v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
          if (have > 1) v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + bb)), 1);
          if (have > 2) v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2 * bb)), 2);
          if (have > 3) v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 3 * bb)), 3);
        } else {  // eight 8-byte pieces
          v = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), static_cast<__mmask8>((1u << have) - 1), piece, blk, 1);
        }
        if (K > 1 && have < K) v = _mm512_maskz_mov_epi8(ByteMask(have * nb), v);  // no stale upper lanes
        __m512i dot;
        if constexpr (B == 4) {
          const __m512i c0 = _mm512_and_si512(v, m4);
          const __m512i s1 = _mm512_andnot_si512(m4, v);
          const __m512i s0 = _mm512_shuffle_epi8(t0, c0);
          const __m512i c1 = _mm512_and_si512(_mm512_multishift_epi64_epi8(high, v), m4);
          dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), s0, hi[0]);
          dot = _mm512_dpbusd_epi32(dot, c0, lo[0]);
          dot = _mm512_dpbusd_epi32(dot, s1, hi[1]);
          dot = _mm512_dpbusd_epi32(dot, c1, lo[1]);
        } else {
          const __m512i nl = _mm512_and_si512(v, m4);
          const __m512i nh = _mm512_and_si512(_mm512_multishift_epi64_epi8(high, v), m4);
          const __m512i m2 = _mm512_set1_epi8(3);
          __m512i d0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(t1, nl), hi[0]);
          d0 = _mm512_dpbusd_epi32(d0, _mm512_and_si512(v, m2), lo[0]);
          d0 = _mm512_dpbusd_epi32(d0, _mm512_shuffle_epi8(t2, nl), hi[1]);
          d0 = _mm512_dpbusd_epi32(d0, _mm512_shuffle_epi8(t0, nl), lo[1]);
          __m512i d1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_shuffle_epi8(t1, nh), hi[2]);
          d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(nh, m2), lo[2]);
          d1 = _mm512_dpbusd_epi32(d1, _mm512_and_si512(v, _mm512_set1_epi8(static_cast<char>(0xc0))), hi[3]);
          d1 = _mm512_dpbusd_epi32(d1, _mm512_shuffle_epi8(t0, nh), lo[3]);
          dot = _mm512_add_epi32(d0, d1);
        }
        const __m512 scale =
            K == 1 ? _mm512_set1_ps(sd[r][j]) : _mm512_permutexvar_ps(idx, _mm512_load_ps(sd[r]));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[r], cacc[r]));
}

constexpr int kRowsSplit = 4;  // rows per call: the activation loads are shared by 4 rows
template <int B, int G, bool ASYM>
void RowsSplit(const WeightView& w, const detail::IntNActs& a, int64_t r0, int64_t r1, float* y) {
  int64_t r = r0;
  for (; r + kRowsSplit <= r1; r += kRowsSplit) {
    const std::byte* rows[kRowsSplit];
    for (int i = 0; i < kRowsSplit; ++i) rows[i] = w.data + (r + i) * w.row_bytes;
    RowsDotSplit<B, G, ASYM, kRowsSplit>(rows, a, y + (r - r0));
  }
  for (; r < r1; ++r) {
    const std::byte* row = w.data + r * w.row_bytes;
    RowsDotSplit<B, G, ASYM, 1>(&row, a, y + (r - r0));
  }
}
constexpr int kRows = 1;

template <int B, int G, bool ASYM>
void RowsVnni(const WeightView& w, const detail::IntNActs& a, int64_t r0, int64_t r1, float* y) {
  const SpreadTables sp = MakeSpread(B);
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) {
    const std::byte* rows[kRows];
    for (int i = 0; i < kRows; ++i) rows[i] = w.data + (r + i) * w.row_bytes;
    RowsDotVnni<B, G, ASYM, kRows>(rows, a, sp, y + (r - r0));
  }
  for (; r < r1; ++r) {
    const std::byte* row = w.data + r * w.row_bytes;
    RowsDotVnni<B, G, ASYM, 1>(&row, a, sp, y + (r - r0));
  }
}

// 2- and 4-bit weights take the split-activation kernel, the other widths RowsDotVnni.
template <int B, int G, bool ASYM>
void RowsAny(const WeightView& w, const detail::IntNActs& a, int64_t r0, int64_t r1, float* y) {
  if constexpr (B == 2 || B == 4)
    RowsSplit<B, G, ASYM>(w, a, r0, r1, y);
  else
    RowsVnni<B, G, ASYM>(w, a, r0, r1, y);
}

template <int B>
void RowsVnniBits(const WeightView& w, const detail::IntNActs& a, int64_t r0, int64_t r1, float* y) {
  const bool asym = w.intn->asymmetric();
  switch (w.intn->block()) {
    case 32: return asym ? RowsAny<B, 32, true>(w, a, r0, r1, y) : RowsAny<B, 32, false>(w, a, r0, r1, y);
    case 64: return asym ? RowsAny<B, 64, true>(w, a, r0, r1, y) : RowsAny<B, 64, false>(w, a, r0, r1, y);
    default: return asym ? RowsAny<B, 128, true>(w, a, r0, r1, y) : RowsAny<B, 128, false>(w, a, r0, r1, y);
  }
}
#endif

void GemvIntNRows(const WeightView& w, const detail::IntNActs& a, int64_t r0, int64_t r1, float* y) {
#if LOWBIT_AVX512_VNNI_PATH
  switch (w.intn->bits()) {
    case 2: return RowsVnniBits<2>(w, a, r0, r1, y);
    case 3: return RowsVnniBits<3>(w, a, r0, r1, y);
    case 4: return RowsVnniBits<4>(w, a, r0, r1, y);
    case 5: return RowsVnniBits<5>(w, a, r0, r1, y);
    case 6: return RowsVnniBits<6>(w, a, r0, r1, y);
    case 7: return RowsVnniBits<7>(w, a, r0, r1, y);
    default: return RowsVnniBits<8>(w, a, r0, r1, y);
  }
#else
  for (int64_t r = r0; r < r1; ++r) y[r - r0] = RowDotPortable(*w.intn, w.data + r * w.row_bytes, a);
#endif
}

// ---- decode to f32 (the prefill path decodes panels of rows for SGEMM) ------------------------------------------
#if LOWBIT_AVX512_VNNI_PATH
// 64 codes per step in natural order (vpermb + vpmultishiftqb, or the bytes themselves for 8-bit), widened to
// f32 16 at a time: value = scale * code - scale * offset.
template <int B>
LOWBIT_VNNI void DecodeRowVbmi(const formats::IntNFormat& f, const std::byte* row, int64_t n, float* out) {
  const SpreadTables sp = MakeSpread(B);
  const int g = f.block();
  const size_t bb = f.block_bytes(), hdr = f.asymmetric() ? 4 : 2;
  const int64_t full = n / g;  // whole blocks; a partial last one goes through the format's decoder
  for (int64_t b = 0; b < full; ++b) {
    const uint8_t* blk = reinterpret_cast<const uint8_t*>(row + b * bb);
    uint16_t hs, hz = 0;
    std::memcpy(&hs, blk, 2);
    if (hdr == 4) std::memcpy(&hz, blk + 2, 2);
    const float s = _cvtsh_ss(hs);
    const float off = hdr == 4 ? _cvtsh_ss(hz) : static_cast<float>(1 << (B - 1));
    const __m512 vs = _mm512_set1_ps(s), vso = _mm512_set1_ps(s * off);
    const uint8_t* codes = blk + hdr;
    float* o = out + b * g;
    for (int c = 0; c < g; c += 64) {
      const int m = std::min(64, g - c);
      __m512i v;
      if constexpr (B == 8) {
        v = _mm512_maskz_loadu_epi8(ByteMask(m), codes + c);
      } else {
        const __m512i raw = _mm512_maskz_loadu_epi8(ByteMask(m * B / 8), codes + c * B / 8);
        v = _mm512_and_si512(_mm512_multishift_epi64_epi8(sp.shift, _mm512_permutexvar_epi8(sp.perm, raw)), sp.mask);
      }
      for (int k = 0; k < m; k += 16) {
        __m128i part;
        switch (k / 16) {
          case 0: part = _mm512_extracti32x4_epi32(v, 0); break;
          case 1: part = _mm512_extracti32x4_epi32(v, 1); break;
          case 2: part = _mm512_extracti32x4_epi32(v, 2); break;
          default: part = _mm512_extracti32x4_epi32(v, 3); break;
        }
        const __m512 fv = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(part));
        _mm512_storeu_ps(o + c + k, _mm512_fmsub_ps(fv, vs, vso));
      }
    }
  }
  if (full * g < n) {  // the partial last block
    const formats::IntNFormat& ff = f;
    std::vector<float> tail(static_cast<size_t>(g));
    ff.decode(row + full * bb, tail);
    std::copy_n(tail.begin(), n - full * g, out + full * g);
  }
}
#endif

void DecodeRowIntN(const formats::IntNFormat& f, const std::byte* row, int64_t n, float* out) {
#if LOWBIT_AVX512_VNNI_PATH
  switch (f.bits()) {
    case 2: return DecodeRowVbmi<2>(f, row, n, out);
    case 3: return DecodeRowVbmi<3>(f, row, n, out);
    case 4: return DecodeRowVbmi<4>(f, row, n, out);
    case 5: return DecodeRowVbmi<5>(f, row, n, out);
    case 6: return DecodeRowVbmi<6>(f, row, n, out);
    case 7: return DecodeRowVbmi<7>(f, row, n, out);
    default: return DecodeRowVbmi<8>(f, row, n, out);
  }
#else
  formats::intn_decode_row_f32(f, row, n, out);
#endif
}

// Which GemvIntNRows / DecodeRowIntN this target compiled.
const char* IntNKernelPath() {
#if LOWBIT_AVX512_VNNI_PATH
  return "avx512-vnni";
#elif HWY_TARGET != HWY_SCALAR
  return "highway";
#else
  return "scalar";
#endif
}

}  // namespace lowbit::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lowbit::ops {

HWY_EXPORT(QuantizeActsIntN);
HWY_EXPORT(GemvIntNRows);
HWY_EXPORT(DecodeRowIntN);
HWY_EXPORT(ActMax);
HWY_EXPORT(IntNKernelPath);

const char* intn_kernel_path() { return HWY_DYNAMIC_DISPATCH(IntNKernelPath)(); }

namespace detail {
void quantize_acts_intn(const formats::IntNFormat& f, const float* x, int64_t n, IntNActs& a) {
  HWY_DYNAMIC_DISPATCH(QuantizeActsIntN)(f, x, n, a);
}
int intn_act_max(int bits) { return HWY_DYNAMIC_DISPATCH(ActMax)(bits); }
void decode_intn_row(const formats::IntNFormat& f, const std::byte* row, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(DecodeRowIntN)(f, row, n, out);
}
void gemv_intn_rows(const WeightView& w, const IntNActs& a, int64_t r0, int64_t r1, float* y) {
  if (a.n != w.cols || a.block != w.intn->block() || a.bits != w.intn->bits())
    fail("", "gemv_intn", "activations were quantized for another format or length");
  HWY_DYNAMIC_DISPATCH(GemvIntNRows)(w, a, r0, r1, y);
}
}  // namespace detail

}  // namespace lowbit::ops
#endif
