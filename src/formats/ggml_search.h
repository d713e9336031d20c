// lowbit formats: the scale searches llama.cpp's quantizers share, written to follow llama.cpp's helpers operation
// for operation (same float operations in the same order: what byte-exactness with llama-quantize needs). Used by
// the K-quants (ggml_kquants.cpp) and by the importance-weighted legacy types (ggml_legacy.cpp). Internal.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "formats/ggml_common.h"

namespace lowbit::formats::ggml_detail {

constexpr float kGroupMaxEps = 1e-15f;  // ggml's threshold for an all-zero group

// Round half to even through the float adder (ggml's nearest_int): exact for |v| <= 2^22 - 1; outside that
// range it returns what ggml's returns (no undefined behaviour), which only the searches can reach.
inline int nearest_int(float v) {
  const float t = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &t, 4);
  return (bits & 0x007fffff) - 0x00400000;
}

// nearest_int clamped to [lo, hi]; NaN and out-of-range arguments go to the nearest end.
inline int nearest_in(float v, int lo, int hi) {
  if (!(v >= -4194303.0f)) return lo;
  if (v > 4194303.0f) return hi;
  return std::clamp(nearest_int(v), lo, hi);
}

// How the winning codes of a search were picked, so a weight can be coded again the same way (GPTQ's round, and
// encoders whose stored step is not the one the codes came from): signed searches code nearest(inv * x),
// affine ones nearest(inv * (x - lo)).
struct CodeRule {
  float inv = 0.0f;
  float lo = 0.0f;
};

// A sub-block's range and weighted sums for the affine searches: lo = min(min x, 0), hi = max x, sum_w = sum w,
// sum_x = sum w * x (accumulated in index order, as ggml).
struct AffineRange {
  float lo, hi, sum_w, sum_x;
};
inline AffineRange affine_range(int n, const float* x, const float* w) {
  AffineRange r{x[0], x[0], w[0], w[0] * x[0]};
  for (int i = 1; i < n; ++i) {
    if (x[i] < r.lo) r.lo = x[i];
    if (x[i] > r.hi) r.hi = x[i];
    r.sum_w += w[i];
    r.sum_x += w[i] * x[i];
  }
  if (r.lo > 0) r.lo = 0;
  return r;
}

// One candidate of the affine searches: the weighted least-squares (s, m) for x ~ s * trial + m (a positive m
// dropped: m = 0, s = sum w*l*x / sum w*l^2, as in ggml; no candidate when the system is singular), kept in
// L / scale / lo when its error sum_i term(w[i], s * trial[i] + m - x[i]) is below best. Returns whether it was.
template <class Term>
bool try_affine_codes(int n, const float* x, const float* w, const uint8_t* trial, const AffineRange& r, Term term,
                      uint8_t* L, float& best, float& scale, float& lo) {
  float sl = 0, sl2 = 0, sxl = 0;
  for (int i = 0; i < n; ++i) {
    const int l = trial[i];
    sl += w[i] * l;
    sl2 += w[i] * l * l;
    sxl += w[i] * l * x[i];
  }
  const float det = r.sum_w * sl2 - sl * sl;
  if (!(det > 0)) return false;
  float s = (r.sum_w * sxl - r.sum_x * sl) / det;
  float m = (sl2 * r.sum_x - sl * sxl) / det;
  if (m > 0) {
    m = 0;
    s = sxl / sl2;
  }
  float err = 0;
  for (int i = 0; i < n; ++i) err += term(w[i], s * trial[i] + m - x[i]);
  if (!(err < best)) return false;
  std::copy(trial, trial + n, L);
  best = err;
  scale = s;
  lo = m;
  return true;
}

// Affine search (llama.cpp's make_qkx2_quants; with rmin -0.9, rdelta 0.05, nstep 36 and squared error it is
// make_qkx3_quants, the importance-weighted one): codes L in 0..nmax (n <= 32) for x ~ scale*L - the_min, with
// error weights w; tries nstep+1 step sizes around (max-min)/nmax, each against the min of the best candidate so
// far, and keeps the best weighted least-squares (scale, min) pair. rule (optional): how L was coded.
inline float search_affine(int n, int nmax, const float* x, const float* w, uint8_t* L, float& the_min, float rmin,
                           float rdelta, int nstep, bool use_mad, CodeRule* rule = nullptr) {
  const AffineRange r = affine_range(n, x, w);
  float lo = r.lo;
  const float hi = r.hi;
  if (hi == lo) {  // lo <= every x <= hi: all equal (and <= 0), or all zero
    for (int i = 0; i < n; ++i) L[i] = 0;
    the_min = -lo;
    if (rule) *rule = {0.0f, lo};
    return 0.0f;
  }
  auto term = [use_mad](float wi, float diff) { return wi * (use_mad ? std::fabs(diff) : diff * diff); };
  float inv = nmax / (hi - lo);
  float scale = 1 / inv;
  float best = 0;
  if (rule) *rule = {inv, lo};
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(inv * (x[i] - lo));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    best += term(w[i], scale * L[i] + lo - x[i]);
  }
  if (nstep < 1) {
    the_min = -lo;
    return scale;
  }
  uint8_t trial[32];
  for (int is = 0; is <= nstep; ++is) {
    inv = (rmin + rdelta * is + nmax) / (hi - lo);
    const float code_lo = lo;  // the trial's codes are taken against the min before it may replace it
    for (int i = 0; i < n; ++i)
      trial[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, nearest_int(inv * (x[i] - lo)))));
    if (try_affine_codes(n, x, w, trial, r, term, L, best, scale, lo) && rule) *rule = {inv, code_lo};
  }
  the_min = -lo;
  return scale;
}

// Signed search (llama.cpp's make_qx_quants with rmse_type 1): codes L in 0..2*nmax-1 (value L - nmax) for
// x ~ scale*(L-nmax), error weights qw (x^2 when qw is null); tries 19 step sizes around max/nmax with
// least-squares scales. rule (optional): the codes are nearest(inv * x) clamped to [-nmax, nmax-1], + nmax
// (inv = 0: an all-zero group, every code 0).
inline float search_signed(int n, int nmax, const float* x, const float* qw, int8_t* L, CodeRule* rule = nullptr) {
  const auto [max, amax] = largest_magnitude({x, static_cast<size_t>(n)});
  if (rule) *rule = {};
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.0f;
  }
  auto weight = [&](int i) { return qw ? qw[i] : x[i] * x[i]; };
  auto level = [&](float inv, int i) { return std::max(-nmax, std::min(nmax - 1, nearest_int(inv * x[i]))); };
  float inv = -nmax / max;
  if (rule) rule->inv = inv;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(inv, i);
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    inv = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = level(inv, i);
      const float w = weight(i);
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(nmax + level(inv, i));
      scale = sumlx / suml2;
      best = scale * sumlx;
      if (rule) rule->inv = inv;
    }
  }
  return scale;
}

}  // namespace lowbit::formats::ggml_detail
