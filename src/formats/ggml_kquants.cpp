// lowbit formats: ggml's K-quants q2_K, q3_K, q4_K, q5_K, q6_K (256-weight super-blocks).
//
// Every type splits a super-block into sub-blocks (16 of 16 weights, or 8 of 32) with a small integer sub-scale
// (and for the affine types a sub-min) that multiplies one fp16 super-block scale d (and dmin):
//
//   q2_K  84 B  scales[16] (lo nibble sc, hi nibble m) | qs[64] | d | dmin    16 x 16 w, code q in 0..3
//               value (d*sc) * q - (dmin*m)
//   q3_K 110 B  hmask[32] | qs[64] | scales[12] (16 x 6 bit, stored sc+32) | d  16 x 16 w, code q in 0..7
//               value (d*sc) * (q - 4),  sc in -32..31; bit 2 of q lives in hmask, bits 0-1 in qs
//   q4_K 144 B  d | dmin | scales[12] (8 x 6-bit sc, 8 x 6-bit m) | qs[128]   8 x 32 w, code q in 0..15
//               value (d*sc) * q - (dmin*m)
//   q5_K 176 B  d | dmin | scales[12] | qh[32] | qs[128]                       8 x 32 w, code q in 0..31
//               value (d*sc) * q - (dmin*m); bit 4 of q lives in qh
//   q6_K 210 B  ql[128] | qh[64] | scales[16] (int8) | d                       16 x 16 w, code q in 0..63
//               value (d*sc) * (q - 32); bits 0-3 of q in ql, bits 4-5 in qh
//
// 2-bit code interleave (q2_K qs, q3_K qs, q6_K qh): in each 128-weight half, byte l (0..31) holds weights
// l, l+32, l+64, l+96 at bit offsets 0, 2, 4, 6. Nibble interleave (q4_K / q5_K qs): in each 64-weight chunk,
// byte l holds weight l (low nibble) and l+32 (high nibble); q6_K ql: byte l of a half holds weights l / l+64,
// byte l+32 holds l+32 / l+96. q3_K hmask bit b of byte l is weight 32*b + l; q5_K qh bit 2c (2c+1) of byte l is
// weight 64*c + l (64*c + l + 32).
//
// fit(w, {}) reproduces llama.cpp's quantize_row_qX_K_ref (the same float operations in the same order, rounding
// with the 1.5*2^23 trick); fit(w, importance) reproduces its imatrix variant quantize_row_qX_K_impl the same way
// (byte-identical to llama-quantize --imatrix, checked against ../shared/reference/imatrix). An importance that is
// zero over a whole super-block gets the plain fit (llama.cpp's would divide 0 by 0 there). encode runs the
// reference's final pass from the stored (fp16 / integer) parameters. Where a sub-block's step d*sc is 0 the
// reference keeps the codes of its sub-block search, so encode repeats that search there (the weighted fit hands
// its codes over in BlockParams::codes instead; the decoded values do not depend on those codes, only the bytes
// do; for q3_K / q6_K the sign of the zero they decode to does, so there round() can return -0 where decode gives
// +0 or back -- the one place round() and decode(encode()) agree only as floats, not bit for bit).
//
// Deviation from ggml, only where ggml would write an infinite scale (weights beyond ~1e6..1e8): d and dmin
// saturate at the largest finite fp16 (65504) instead of becoming inf.
#include "formats/ggml_kquants.h"

#include <algorithm>
#include <cstddef>
#include <cmath>
#include <cstring>
#include <string>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_common.h"
#include "formats/ggml_search.h"
#include "lowbit/error.h"

namespace lowbit::formats {

namespace B = blocks;

void q4k_scale_min(const uint8_t* s, int j, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = s[j] & 63;
    m = s[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

void q3k_scales(const uint8_t* s, int8_t out[16]) {
  for (int j = 0; j < 16; ++j) {
    const int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    out[j] = static_cast<int8_t>((lo | (hi << 4)) - 32);
  }
}

namespace {

using ggml_detail::kGroupMaxEps;
using ggml_detail::largest_magnitude;
using ggml_detail::load_u16;
using ggml_detail::nearest_in;
using ggml_detail::nearest_int;
using ggml_detail::search_affine;
using ggml_detail::search_signed;
using ggml_detail::store_u16;

constexpr int kQK = 256;
// fp16 bits of v, round to nearest even, saturating at +-65504 (NaN -> 0).
uint16_t f16_sat(float v) {
  const uint16_t h = f32_to_f16(v);
  if ((h & 0x7c00u) != 0x7c00u) return h;
  if (h & 0x03ffu) return 0;
  return static_cast<uint16_t>((h & 0x8000u) | 0x7bffu);
}

// q3_K's sub-block search (make_q3_quants with do_rmse): start from max/nmax, then up to 5 sweeps that move one
// code at a time when that raises the x^2-weighted fit (sumlx^2 / suml2). Codes L in 0..2*nmax-1, all 0 for an
// all-zero group.
float search_q3(int n, int nmax, const float* x, int8_t* L) {
  const auto [max, amax] = largest_magnitude({x, static_cast<size_t>(n)});
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  const float inv = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::max(-nmax, std::min(nmax - 1, nearest_int(inv * x[i])));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (!(slx > 0)) continue;
      float sl2 = suml2 - w * L[i] * L[i];
      const int nl = std::max(-nmax, std::min(nmax - 1, nearest_int(x[i] * sl2 / slx)));
      if (nl == L[i]) continue;
      slx += w * x[i] * nl;
      sl2 += w * nl * nl;
      if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = static_cast<int8_t>(nl);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Quantizes n non-negative sub-scales to integers 0..nmax against one step, weighted by qw (make_qp_quants
// style): a grid over the step, then single-code moves that improve the weighted least-squares fit.
float search_unsigned_scales(int n, int nmax, const float* x, const float* qw, uint8_t* L) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (!(max > 0)) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  auto mse = [&](float inv) {
    const float s = 1 / inv;
    float e = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = x[i] - s * nearest_in(inv * x[i], 0, nmax);
      e += qw[i] * diff * diff;
    }
    return e;
  };
  float inv = nmax / max;
  float best = mse(inv);
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float cand = (0.1f * is + nmax) / max;
    const float e = mse(cand);
    if (e < best) best = e, inv = cand;
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_in(inv * x[i], 0, nmax);
    L[i] = static_cast<uint8_t>(l);
    sumlx += qw[i] * x[i] * l;
    suml2 += qw[i] * l * l;
  }
  for (int sweep = 0; sweep < 5; ++sweep) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      float slx = sumlx - qw[i] * x[i] * L[i];
      float sl2 = suml2 - qw[i] * L[i] * L[i];
      if (!(slx > 0 && sl2 > 0)) continue;
      const int nl = nearest_in(x[i] * sl2 / slx, 0, nmax);
      if (nl == L[i]) continue;
      slx += qw[i] * x[i] * nl;
      sl2 += qw[i] * nl * nl;
      if (slx * slx * suml2 > sumlx * sumlx * sl2) {
        L[i] = static_cast<uint8_t>(nl);
        sumlx = slx;
        suml2 = sl2;
        ++changed;
      }
    }
    if (!changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ---------------------------------------------------------------------------------------------------------------
// The five types.

enum class Kind { Q2, Q3, Q4, Q5, Q6 };

struct Spec {
  Kind kind;
  DType dtype;
  const char* name;
  size_t bytes;
  int nsub;     // sub-blocks per super-block
  int sub;      // weights per sub-block
  int maxcode;  // codes 0..maxcode
  int bias;     // value = step * (code - bias) - offset
  bool affine;  // has dmin and sub-mins
  int sc_lo, sc_hi, m_hi;  // ranges of the stored sub-scales / sub-mins
};

constexpr Spec kSpecs[] = {
    {Kind::Q2, DType::Q2_K, "q2_K", sizeof(B::Q2_K), 16, 16, 3, 0, true, 0, 15, 15},
    {Kind::Q3, DType::Q3_K, "q3_K", sizeof(B::Q3_K), 16, 16, 7, 4, false, -32, 31, 0},
    {Kind::Q4, DType::Q4_K, "q4_K", sizeof(B::Q4_K), 8, 32, 15, 0, true, 0, 63, 63},
    {Kind::Q5, DType::Q5_K, "q5_K", sizeof(B::Q5_K), 8, 32, 31, 0, true, 0, 63, 63},
    {Kind::Q6, DType::Q6_K, "q6_K", sizeof(B::Q6_K), 16, 16, 63, 32, false, -128, 127, 0},
};

// A super-block's stored parameters: d / dmin as the floats their fp16 bits give, integer sub-scales / sub-mins.
struct Stored {
  uint16_t d_bits = 0, dmin_bits = 0;
  int sc[16] = {};
  int m[16] = {};
  float d() const { return f16_to_f32(d_bits); }
  float dmin() const { return f16_to_f32(dmin_bits); }
};

// Step and offset of sub-block j, as ggml computes them (fp16 value times the integer).
struct SubStep {
  float step, offset;
};

class KQuantFormat final : public GgmlFormat {
 public:
  explicit KQuantFormat(const Spec& s) : s_(s) {}
  std::string name() const override { return s_.name; }
  DType dtype() const override { return s_.dtype; }
  int block() const override { return kQK; }
  size_t block_bytes() const override { return s_.bytes; }

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override;
  float round(float w, const BlockParams& p, int index_in_block) const override;
  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override;
  void decode(const std::byte* in, std::span<float> out) const override;
  float dot(const std::byte* in, const float* x) const override;

 private:
  SubStep sub_step(const Stored& st, int j) const {
    const float step = st.d() * static_cast<float>(st.sc[j]);
    const float offset = s_.affine ? st.dmin() * static_cast<float>(st.m[j]) : 0.0f;
    return {step, offset};
  }
  // The decoded value of a code; ml = +0 for the symmetric types leaves the product's bits unchanged.
  float value(SubStep ss, int code) const { return ss.step * static_cast<float>(code - s_.bias) - ss.offset; }
  // The reference's final pass for a sub-block with a non-zero step.
  int code_of(float x, SubStep ss) const {
    return s_.bias + nearest_in((x + ss.offset) / ss.step, -s_.bias, s_.maxcode - s_.bias);
  }

  // The stored form of p (fp16 d / dmin, clamped integers); only sub-block `only` when only >= 0.
  Stored from_params(const BlockParams& p, int only = -1) const;
  BlockParams to_params(const Stored& st) const;
  Stored fit_plain(const float* x) const;
  Stored fit_weighted(const float* x, const float* imp, uint8_t* codes) const;
  // The reference's search for one sub-block: its codes (0..maxcode), scale and (affine types) min.
  float search_sub(const float* x, uint8_t* codes, float& the_min) const;
  Stored quantize_q6_scales(const float* scales) const;
  bool is_null_block(const Stored& st) const;
  void pack(const Stored& st, const uint8_t* codes, std::byte* out) const;
  void unpack(const std::byte* in, Stored& st, uint8_t* codes) const;
  void check_size(size_t n, const char* what) const {
    if (n != static_cast<size_t>(kQK))
      fail("", "format", name() + ": " + what + " got " + std::to_string(n) + " weights for a block of 256");
  }

  Spec s_;
};

Stored KQuantFormat::from_params(const BlockParams& p, int only) const {
  if (p.sub_scales.size() != static_cast<size_t>(s_.nsub) ||
      (s_.affine && p.sub_mins.size() != static_cast<size_t>(s_.nsub)))
    fail("", "format", name() + ": block params need " + std::to_string(s_.nsub) + " sub_scales" +
                           (s_.affine ? " and sub_mins" : "") + " (use fit())");
  auto to_int = [](float v, int lo, int hi) {
    if (std::isnan(v)) return 0;
    return static_cast<int>(std::clamp(std::nearbyint(v), static_cast<float>(lo), static_cast<float>(hi)));
  };
  Stored st;
  st.d_bits = f16_sat(p.scale);
  if (s_.affine) st.dmin_bits = f16_sat(p.zero);
  for (int j = only < 0 ? 0 : only; j < (only < 0 ? s_.nsub : only + 1); ++j) {
    st.sc[j] = to_int(p.sub_scales[j], s_.sc_lo, s_.sc_hi);
    if (s_.affine) st.m[j] = to_int(p.sub_mins[j], 0, s_.m_hi);
  }
  return st;
}

BlockParams KQuantFormat::to_params(const Stored& st) const {
  BlockParams p;
  p.scale = st.d();
  p.zero = s_.affine ? st.dmin() : 0.0f;
  p.sub_scales.resize(s_.nsub);
  for (int j = 0; j < s_.nsub; ++j) p.sub_scales[j] = static_cast<float>(st.sc[j]);
  if (s_.affine) {
    p.sub_mins.resize(s_.nsub);
    for (int j = 0; j < s_.nsub; ++j) p.sub_mins[j] = static_cast<float>(st.m[j]);
  }
  return p;
}

// q6_K's reference writes an all-zero block (d = 0, every sub-scale 0, every code 0) when all sub-block scales
// vanish; any other block keeps a non-zero sub-scale.
bool KQuantFormat::is_null_block(const Stored& st) const {
  if (s_.kind != Kind::Q6 || st.d() != 0.0f) return false;
  for (int j = 0; j < s_.nsub; ++j)
    if (st.sc[j] != 0) return false;
  return true;
}

float KQuantFormat::search_sub(const float* x, uint8_t* codes, float& the_min) const {
  switch (s_.kind) {
    case Kind::Q2: {
      float w[16];
      for (int l = 0; l < 16; ++l) w[l] = std::fabs(x[l]);
      return search_affine(16, 3, x, w, codes, the_min, -0.5f, 0.1f, 15, true);
    }
    case Kind::Q4:
    case Kind::Q5: {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[l] * x[l];
      const float av_x = std::sqrt(sum_x2 / 32);
      float w[32];
      for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(x[l]);
      if (s_.kind == Kind::Q4) return search_affine(32, 15, x, w, codes, the_min, -1.0f, 0.1f, 20, false);
      return search_affine(32, 31, x, w, codes, the_min, -0.5f, 0.1f, 15, false);
    }
    case Kind::Q3:
    case Kind::Q6: {
      int8_t L[16];
      const float scale = s_.kind == Kind::Q3 ? search_q3(16, 4, x, L) : search_signed(16, 32, x, nullptr, L);
      for (int l = 0; l < 16; ++l) codes[l] = static_cast<uint8_t>(L[l]);
      return scale;
    }
  }
  return 0.0f;
}

// q6_K's sub-scales as int8 against the one of largest magnitude (-128 at it); the null block when all vanish.
Stored KQuantFormat::quantize_q6_scales(const float* scales) const {
  Stored st;
  const auto [max_scale, amax] = largest_magnitude({scales, 16});
  if (amax < kGroupMaxEps) return st;  // the null block
  const float inv = -128.0f / max_scale;
  st.d_bits = f16_sat(1 / inv);
  for (int j = 0; j < 16; ++j) st.sc[j] = static_cast<int8_t>(std::min(127, nearest_int(inv * scales[j])));
  return st;
}

// quantize_row_qX_K_ref: the sub-block searches, then the sub-scales (and sub-mins) quantized against the largest.
Stored KQuantFormat::fit_plain(const float* x) const {
  Stored st;
  const int ns = s_.nsub, n = s_.sub;
  float scales[16] = {}, mins[16] = {};
  for (int j = 0; j < ns; ++j) {
    uint8_t L[32];
    scales[j] = search_sub(x + n * j, L, mins[j]);
  }
  switch (s_.kind) {
    case Kind::Q2:
    case Kind::Q4:
    case Kind::Q5: {
      // The largest scale and min set the super-block steps.
      const int levels = s_.kind == Kind::Q2 ? 15 : 63;
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < ns; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
      }
      const float lv = static_cast<float>(levels);
      if (s_.kind == Kind::Q2) {
        // 4-bit scale and min share one byte; an out-of-range scale would spill into the min's nibble as in ggml.
        uint8_t byte[16] = {};
        if (max_scale > 0) {
          const float inv = lv / max_scale;
          for (int j = 0; j < ns; ++j) byte[j] = static_cast<uint8_t>(nearest_int(inv * scales[j]));
          st.d_bits = f16_sat(max_scale / lv);
        }
        if (max_min > 0) {
          const float inv = lv / max_min;
          for (int j = 0; j < ns; ++j) byte[j] = static_cast<uint8_t>(byte[j] | (nearest_int(inv * mins[j]) << 4));
          st.dmin_bits = f16_sat(max_min / lv);
        }
        for (int j = 0; j < ns; ++j) st.sc[j] = byte[j] & 0x0f, st.m[j] = byte[j] >> 4;
      } else {
        const float inv_s = max_scale > 0 ? lv / max_scale : 0.0f;
        const float inv_m = max_min > 0 ? lv / max_min : 0.0f;
        for (int j = 0; j < ns; ++j) {
          st.sc[j] = std::min<int>(63, static_cast<uint8_t>(nearest_int(inv_s * scales[j])));
          st.m[j] = std::min<int>(63, static_cast<uint8_t>(nearest_int(inv_m * mins[j])));
        }
        st.d_bits = f16_sat(max_scale / lv);
        st.dmin_bits = f16_sat(max_min / lv);
      }
      return st;
    }
    case Kind::Q3: {
      const float max_scale = largest_magnitude({scales, 16}).value;
      if (max_scale != 0) {
        const float inv = -32.0f / max_scale;
        for (int j = 0; j < 16; ++j) {
          const int8_t l = static_cast<int8_t>(nearest_int(inv * scales[j]));
          st.sc[j] = std::max<int>(-32, std::min<int>(31, l));
        }
        st.d_bits = f16_sat(1 / inv);
      } else {
        for (int j = 0; j < 16; ++j) st.sc[j] = -32;  // stored 0
      }
      return st;
    }
    case Kind::Q6:
      return quantize_q6_scales(scales);
  }
  return st;
}

// quantize_row_qX_K_impl, llama.cpp's importance-weighted K-quants. Error weights wt[i] = imp[i] * sqrt(sigma2 +
// x[i]^2) with sigma2 = 2 * mean(x^2) over the super-block (q2_K: mean(x^2), without the 2); q6_K instead weights its
// sub-block searches by the raw importance (llama.cpp's choice). The sub-block searches run on those weights
// (q2_K / q4_K / q5_K: the affine search with llama.cpp's imatrix grid; q3_K / q6_K: the signed one), then the
// sub-scales (and sub-mins) are quantized by a weighted search of their own, each weighted by its sub-block's total
// weight (q2_K / q4_K / q5_K: make_qp_quants; q3_K: the signed search; q6_K: as the reference, against the largest).
// codes: the searches' codes (kept by encode where a sub-block's step comes out 0).
Stored KQuantFormat::fit_weighted(const float* x, const float* imp, uint8_t* codes) const {
  float sum_x2 = 0;
  for (int i = 0; i < kQK; ++i) sum_x2 += x[i] * x[i];
  const float sigma2 = s_.kind == Kind::Q2 ? sum_x2 / kQK : 2 * sum_x2 / kQK;
  float wt[kQK];
  for (int i = 0; i < kQK; ++i) wt[i] = imp[i] * std::sqrt(sigma2 + x[i] * x[i]);

  Stored st;
  const int ns = s_.nsub, n = s_.sub;
  float scales[16] = {}, mins[16] = {}, sw[16] = {};
  for (int j = 0; j < ns; ++j)
    for (int l = 0; l < n; ++l) sw[j] += wt[n * j + l];

  if (s_.affine) {
    const int nmax = s_.maxcode, levels = s_.kind == Kind::Q2 ? 15 : 63;
    for (int j = 0; j < ns; ++j)
      scales[j] = search_affine(n, nmax, x + n * j, wt + n * j, codes + n * j, mins[j], -0.9f, 0.05f, 36, false);
    uint8_t Ls[16], Lm[16];
    const float d = search_unsigned_scales(ns, levels, scales, sw, Ls);
    const float dm = search_unsigned_scales(ns, levels, mins, sw, Lm);
    st.d_bits = f16_sat(d);
    st.dmin_bits = f16_sat(dm);
    for (int j = 0; j < ns; ++j) st.sc[j] = Ls[j], st.m[j] = Lm[j];
    return st;
  }
  const int nmax = s_.kind == Kind::Q3 ? 4 : 32;
  for (int j = 0; j < ns; ++j) {
    int8_t L[16];
    scales[j] = search_signed(n, nmax, x + n * j, s_.kind == Kind::Q3 ? wt + n * j : imp + n * j, L);
    for (int l = 0; l < n; ++l) codes[n * j + l] = static_cast<uint8_t>(L[l]);
  }
  if (s_.kind == Kind::Q3) {
    int8_t Ls[16];
    const float d = search_signed(16, 32, scales, sw, Ls);
    st.d_bits = f16_sat(d);
    for (int j = 0; j < 16; ++j) st.sc[j] = Ls[j] - 32;  // Ls holds l + 32
    return st;
  }
  return quantize_q6_scales(scales);
}

BlockParams KQuantFormat::fit(std::span<const float> w, std::span<const float> importance) const {
  check_size(w.size(), "fit");
  if (!importance.empty() && importance.size() != w.size())
    fail("", "format", name() + ": importance size " + std::to_string(importance.size()) + " != block size");
  for (float v : w)
    if (!std::isfinite(v)) fail("", "format", name() + ": fit got a non-finite weight");
  bool weighted = false;
  float imp[kQK];
  if (!importance.empty()) {
    for (int i = 0; i < kQK; ++i) {
      const float v = importance[i];
      imp[i] = v > 0.0f && std::isfinite(v) ? v : 0.0f;  // negative / NaN importance counts as none
      weighted = weighted || imp[i] > 0.0f;
    }
  }
  if (!weighted) return to_params(fit_plain(w.data()));
  uint8_t codes[kQK];
  const Stored st = fit_weighted(w.data(), imp, codes);
  BlockParams p = to_params(st);
  // A sub-block whose step comes out 0 keeps its weighted search's codes (the plain search encode would otherwise
  // repeat chooses others): only the bytes differ, not the decoded values.
  bool zero_step = false;
  for (int j = 0; j < s_.nsub; ++j) zero_step = zero_step || sub_step(st, j).step == 0.0f;
  if (zero_step && !is_null_block(st)) p.codes.assign(codes, codes + kQK);
  return p;
}

float KQuantFormat::round(float w, const BlockParams& p, int index_in_block) const {
  if (index_in_block < 0 || index_in_block >= kQK)
    fail("", "format", name() + ": weight index " + std::to_string(index_in_block) + " outside the block");
  const int j = index_in_block / s_.sub;
  const Stored st = from_params(p, j);
  const SubStep ss = sub_step(st, j);
  if (ss.step == 0.0f) {
    // The value does not depend on the code here except for the sign of a zero (q3_K / q6_K): encode keeps
    // the reference search's codes, which depend on the whole sub-block, so this takes the middle code and may
    // return the other signed zero than decode(encode()) (equal as floats). The null q6_K block's codes are 0.
    const bool null_block = s_.kind == Kind::Q6 && st.d() == 0.0f && is_null_block(from_params(p));
    return value(ss, null_block ? 0 : s_.bias);
  }
  return value(ss, code_of(w, ss));
}

void KQuantFormat::encode(std::span<const float> w, const BlockParams& p, std::byte* out) const {
  check_size(w.size(), "encode");
  const Stored st = from_params(p);
  uint8_t codes[kQK] = {};
  if (!is_null_block(st)) {
    for (int j = 0; j < s_.nsub; ++j) {
      const float* xs = w.data() + s_.sub * j;
      uint8_t* cs = codes + s_.sub * j;
      const SubStep ss = sub_step(st, j);
      if (ss.step == 0.0f) {
        if (p.codes.size() == static_cast<size_t>(kQK)) {  // the weighted fit's codes
          std::copy_n(p.codes.data() + s_.sub * j, s_.sub, cs);
          continue;
        }
        float the_min;
        search_sub(xs, cs, the_min);
        continue;
      }
      for (int l = 0; l < s_.sub; ++l) cs[l] = static_cast<uint8_t>(code_of(xs[l], ss));
    }
  }
  pack(st, codes, out);
}

void KQuantFormat::pack(const Stored& st, const uint8_t* q, std::byte* out) const {
  uint8_t* o = reinterpret_cast<uint8_t*>(out);
  std::memset(o, 0, s_.bytes);
  // 2 bits of four codes 32 apart per byte, over each 128-code half (mask picks the bits).
  auto pack2 = [&](uint8_t* dst, int shift) {
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* c = q + 128 * h + l;
        dst[32 * h + l] = static_cast<uint8_t>(((c[0] >> shift) & 3) | (((c[32] >> shift) & 3) << 2) |
                                               (((c[64] >> shift) & 3) << 4) | (((c[96] >> shift) & 3) << 6));
      }
  };
  auto pack_scales_k4 = [&](uint8_t* s) {  // q4_K / q5_K 12-byte scale/min block
    for (int j = 0; j < 8; ++j) {
      const int ls = st.sc[j], lm = st.m[j];
      if (j < 4) {
        s[j] = static_cast<uint8_t>(ls);
        s[j + 4] = static_cast<uint8_t>(lm);
      } else {
        s[j + 4] = static_cast<uint8_t>((ls & 0x0f) | ((lm & 0x0f) << 4));
        s[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
        s[j] |= static_cast<uint8_t>((lm >> 4) << 6);
      }
    }
  };
  auto pack_nibbles = [&](uint8_t* dst) {  // q4_K / q5_K: low 4 bits, codes l and l+32 of each 64-chunk
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        dst[32 * c + l] = static_cast<uint8_t>((q[64 * c + l] & 0x0f) | ((q[64 * c + l + 32] & 0x0f) << 4));
  };
  switch (s_.kind) {
    case Kind::Q2:
      for (int j = 0; j < 16; ++j) o[offsetof(B::Q2_K, scales) + j] = static_cast<uint8_t>(st.sc[j] | (st.m[j] << 4));
      pack2(o + offsetof(B::Q2_K, qs), 0);
      store_u16(out + offsetof(B::Q2_K, d), st.d_bits);
      store_u16(out + offsetof(B::Q2_K, dmin), st.dmin_bits);
      return;
    case Kind::Q3: {
      uint8_t* hmask = o + offsetof(B::Q3_K, hmask);
      for (int i = 0; i < kQK; ++i)
        if (q[i] > 3) hmask[i % 32] |= static_cast<uint8_t>(1u << (i / 32));
      pack2(o + offsetof(B::Q3_K, qs), 0);
      uint8_t* s = o + offsetof(B::Q3_K, scales);
      for (int j = 0; j < 16; ++j) {
        const int l = st.sc[j] + 32;
        if (j < 8)
          s[j] = static_cast<uint8_t>(l & 0x0f);
        else
          s[j - 8] |= static_cast<uint8_t>((l & 0x0f) << 4);
        s[8 + j % 4] |= static_cast<uint8_t>((l >> 4) << (2 * (j / 4)));
      }
      store_u16(out + offsetof(B::Q3_K, d), st.d_bits);
      return;
    }
    case Kind::Q4:
    case Kind::Q5: {
      store_u16(out + offsetof(B::Q4_K, d), st.d_bits);
      store_u16(out + offsetof(B::Q4_K, dmin), st.dmin_bits);
      pack_scales_k4(o + offsetof(B::Q4_K, scales));
      if (s_.kind == Kind::Q4) {
        pack_nibbles(o + offsetof(B::Q4_K, qs));
        return;
      }
      uint8_t* qh = o + offsetof(B::Q5_K, qh);
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
          if (q[64 * c + l] > 15) qh[l] |= static_cast<uint8_t>(1u << (2 * c));
          if (q[64 * c + l + 32] > 15) qh[l] |= static_cast<uint8_t>(2u << (2 * c));
        }
      pack_nibbles(o + offsetof(B::Q5_K, qs));
      return;
    }
    case Kind::Q6: {
      for (int h = 0; h < 2; ++h) {
        const uint8_t* c = q + 128 * h;
        uint8_t* ql = o + offsetof(B::Q6_K, ql) + 64 * h;
        for (int l = 0; l < 32; ++l) {
          ql[l] = static_cast<uint8_t>((c[l] & 0x0f) | ((c[l + 64] & 0x0f) << 4));
          ql[l + 32] = static_cast<uint8_t>((c[l + 32] & 0x0f) | ((c[l + 96] & 0x0f) << 4));
        }
      }
      pack2(o + offsetof(B::Q6_K, qh), 4);
      for (int j = 0; j < 16; ++j) o[offsetof(B::Q6_K, scales) + j] = static_cast<uint8_t>(static_cast<int8_t>(st.sc[j]));
      store_u16(out + offsetof(B::Q6_K, d), st.d_bits);
      return;
    }
  }
}

void KQuantFormat::unpack(const std::byte* in, Stored& st, uint8_t* q) const {
  const uint8_t* b = reinterpret_cast<const uint8_t*>(in);
  auto unpack2 = [&](const uint8_t* src, int shift) {  // ORs bits into q (q starts at 0)
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const uint8_t v = src[32 * h + l];
        uint8_t* c = q + 128 * h + l;
        for (int k = 0; k < 4; ++k) c[32 * k] = static_cast<uint8_t>(c[32 * k] | (((v >> (2 * k)) & 3) << shift));
      }
  };
  auto unpack_nibbles = [&](const uint8_t* src) {
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        q[64 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (src[32 * c + l] & 0x0f));
        q[64 * c + l + 32] = static_cast<uint8_t>(q[64 * c + l + 32] | (src[32 * c + l] >> 4));
      }
  };
  auto unpack_scales_k4 = [&](const uint8_t* s) {
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      q4k_scale_min(s, j, sc, m);
      st.sc[j] = sc;
      st.m[j] = m;
    }
  };
  std::memset(q, 0, kQK);
  switch (s_.kind) {
    case Kind::Q2:
      for (int j = 0; j < 16; ++j) {
        const uint8_t v = b[offsetof(B::Q2_K, scales) + j];
        st.sc[j] = v & 0x0f, st.m[j] = v >> 4;
      }
      unpack2(b + offsetof(B::Q2_K, qs), 0);
      st.d_bits = load_u16(in + offsetof(B::Q2_K, d));
      st.dmin_bits = load_u16(in + offsetof(B::Q2_K, dmin));
      return;
    case Kind::Q3: {
      unpack2(b + offsetof(B::Q3_K, qs), 0);
      for (int i = 0; i < kQK; ++i)
        if (b[offsetof(B::Q3_K, hmask) + i % 32] & (1u << (i / 32))) q[i] = static_cast<uint8_t>(q[i] | 4);
      int8_t sc[16];
      q3k_scales(b + offsetof(B::Q3_K, scales), sc);
      for (int j = 0; j < 16; ++j) st.sc[j] = sc[j];
      st.d_bits = load_u16(in + offsetof(B::Q3_K, d));
      return;
    }
    case Kind::Q4:
    case Kind::Q5:
      st.d_bits = load_u16(in + offsetof(B::Q4_K, d));
      st.dmin_bits = load_u16(in + offsetof(B::Q4_K, dmin));
      unpack_scales_k4(b + offsetof(B::Q4_K, scales));
      if (s_.kind == Kind::Q4) {
        unpack_nibbles(b + offsetof(B::Q4_K, qs));
        return;
      }
      unpack_nibbles(b + offsetof(B::Q5_K, qs));
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
          const uint8_t h = b[offsetof(B::Q5_K, qh) + l];
          if (h & (1u << (2 * c))) q[64 * c + l] = static_cast<uint8_t>(q[64 * c + l] | 16);
          if (h & (2u << (2 * c))) q[64 * c + l + 32] = static_cast<uint8_t>(q[64 * c + l + 32] | 16);
        }
      return;
    case Kind::Q6:
      for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = b + offsetof(B::Q6_K, ql) + 64 * h;
        uint8_t* c = q + 128 * h;
        for (int l = 0; l < 32; ++l) {
          c[l] = ql[l] & 0x0f;
          c[l + 64] = ql[l] >> 4;
          c[l + 32] = ql[l + 32] & 0x0f;
          c[l + 96] = ql[l + 32] >> 4;
        }
      }
      unpack2(b + offsetof(B::Q6_K, qh), 4);
      for (int j = 0; j < 16; ++j) st.sc[j] = static_cast<int8_t>(b[offsetof(B::Q6_K, scales) + j]);
      st.d_bits = load_u16(in + offsetof(B::Q6_K, d));
      return;
  }
}

void KQuantFormat::decode(const std::byte* in, std::span<float> out) const {
  check_size(out.size(), "decode");
  Stored st;
  uint8_t q[kQK];
  unpack(in, st, q);
  for (int j = 0; j < s_.nsub; ++j) {
    const SubStep ss = sub_step(st, j);
    for (int l = 0; l < s_.sub; ++l) out[s_.sub * j + l] = value(ss, q[s_.sub * j + l]);
  }
}

float KQuantFormat::dot(const std::byte* in, const float* x) const {
  float v[kQK];
  decode(in, std::span<float>(v, kQK));
  float acc = 0.0f;
  for (int i = 0; i < kQK; ++i) acc += v[i] * x[i];
  return acc;
}

}  // namespace

std::unique_ptr<GgmlFormat> make_ggml_kquant_format(DType t) {
  for (const Spec& s : kSpecs)
    if (s.dtype == t) return std::make_unique<KQuantFormat>(s);
  return nullptr;
}

}  // namespace lowbit::formats
