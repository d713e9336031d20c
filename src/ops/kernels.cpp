// SIMD kernels. This file is compiled once per Highway target (foreach_target.h re-includes it) and the
// public entry points at the bottom dispatch to the best target the CPU supports, so no -march is needed.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/half.h"
#include "lowbit/error.h"
#include "ops/kernels.h"
#include "ops/ops.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/kernels.cpp"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "hwy/contrib/math/math-inl.h"

HWY_BEFORE_NAMESPACE();
namespace lowbit::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// ---- weight element access -------------------------------------------------------------------------------
// One vector of weights widened to f32. F16 uses the hardware conversion where the target has it (F16C);
// BF16 is a 16-bit shift.
HWY_INLINE VF LoadWeights(DF df, const float* HWY_RESTRICT p) { return hn::LoadU(df, p); }
HWY_INLINE VF LoadWeights(DF df, const hwy::float16_t* HWY_RESTRICT p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  const hn::Rebind<hwy::float16_t, DF> dh;
  return hn::PromoteTo(df, hn::LoadU(dh, p));  // vcvtph2ps: exact for every input
#else
  // Highway 1.0.3's software PromoteTo (targets without F16C) turns f16 Inf/NaN into finite values, so
  // widen with integer ops: move exponent and mantissa into place and rebias, then fix up Inf/NaN
  // (exponent 31) and subnormals (exponent 0: renormalised by one float subtraction).
  const hn::RebindToUnsigned<DF> du;
  const hn::Rebind<uint16_t, DF> du16;
  const auto h = hn::PromoteTo(du, hn::LoadU(du16, reinterpret_cast<const uint16_t*>(p)));
  const auto exp_mask = hn::Set(du, 0x7c00u << 13);
  auto o = hn::ShiftLeft<13>(hn::And(h, hn::Set(du, 0x7fffu)));
  const auto exp = hn::And(o, exp_mask);
  o = hn::Add(o, hn::Set(du, (127u - 15u) << 23));
  o = hn::IfThenElse(hn::Eq(exp, exp_mask), hn::Add(o, hn::Set(du, (128u - 16u) << 23)), o);
  const auto renorm = hn::BitCast(du, hn::Sub(hn::BitCast(df, hn::Add(o, hn::Set(du, 1u << 23))),
                                              hn::BitCast(df, hn::Set(du, 113u << 23))));
  o = hn::IfThenElse(hn::Eq(exp, hn::Zero(du)), renorm, o);
  return hn::BitCast(df, hn::Or(o, hn::ShiftLeft<16>(hn::And(h, hn::Set(du, 0x8000u)))));
#endif
}
HWY_INLINE VF LoadWeights(DF df, const hwy::bfloat16_t* HWY_RESTRICT p) {
  const hn::Rebind<hwy::bfloat16_t, DF> db;
  return hn::PromoteTo(df, hn::LoadU(db, p));
}

// One weight widened to f32 (tails). memcpy because rows need not be aligned to the element size.
HWY_INLINE float LoadWeight(const float* p) {
  float f;
  std::memcpy(&f, p, sizeof f);
  return f;
}
HWY_INLINE float LoadWeight(const hwy::float16_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return lowbit::f16_to_f32(h);
}
HWY_INLINE float LoadWeight(const hwy::bfloat16_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return lowbit::bf16_to_f32(h);
}

HWY_INLINE float ReduceSum(DF df, VF v) { return hn::GetLane(hn::SumOfLanes(df, v)); }

// ---- GEMV ------------------------------------------------------------------------------------------------
// y[r - r0] = dot(W[r, :], x). Four rows are in flight at once (four independent weight streams for the
// prefetchers, x loaded once per four rows) with two accumulators each (eight FMA chains hide FMA latency).
constexpr int64_t kPrefetchElems16 = 512;  // 1 KiB ahead in a row of f16/bf16

template <typename TW>
HWY_INLINE void GemvRowsT(const std::byte* data, size_t row_bytes, int64_t cols, const float* HWY_RESTRICT x,
                          int64_t r0, int64_t r1, float* HWY_RESTRICT y) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  auto row = [&](int64_t r) { return reinterpret_cast<const TW*>(data + static_cast<size_t>(r) * row_bytes); };

  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const TW* HWY_RESTRICT w0 = row(r);
    const TW* HWY_RESTRICT w1 = row(r + 1);
    const TW* HWY_RESTRICT w2 = row(r + 2);
    const TW* HWY_RESTRICT w3 = row(r + 3);
    VF a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    VF b0 = hn::Zero(df), b1 = hn::Zero(df), b2 = hn::Zero(df), b3 = hn::Zero(df);
    int64_t c = 0;
    for (; c + 2 * N <= cols; c += 2 * N) {
      if constexpr (sizeof(TW) == 2) {
        // 16-bit rows are consumed at half the byte rate per instruction; an explicit prefetch ~1 KiB ahead
        // keeps enough misses in flight (measured +10% GB/s; no gain for f32, so not done there).
        hwy::Prefetch(w0 + c + kPrefetchElems16);
        hwy::Prefetch(w1 + c + kPrefetchElems16);
        hwy::Prefetch(w2 + c + kPrefetchElems16);
        hwy::Prefetch(w3 + c + kPrefetchElems16);
      }
      const VF x0 = hn::LoadU(df, x + c);
      const VF x1 = hn::LoadU(df, x + c + N);
      a0 = hn::MulAdd(LoadWeights(df, w0 + c), x0, a0);
      a1 = hn::MulAdd(LoadWeights(df, w1 + c), x0, a1);
      a2 = hn::MulAdd(LoadWeights(df, w2 + c), x0, a2);
      a3 = hn::MulAdd(LoadWeights(df, w3 + c), x0, a3);
      b0 = hn::MulAdd(LoadWeights(df, w0 + c + N), x1, b0);
      b1 = hn::MulAdd(LoadWeights(df, w1 + c + N), x1, b1);
      b2 = hn::MulAdd(LoadWeights(df, w2 + c + N), x1, b2);
      b3 = hn::MulAdd(LoadWeights(df, w3 + c + N), x1, b3);
    }
    if (c + N <= cols) {
      const VF x0 = hn::LoadU(df, x + c);
      a0 = hn::MulAdd(LoadWeights(df, w0 + c), x0, a0);
      a1 = hn::MulAdd(LoadWeights(df, w1 + c), x0, a1);
      a2 = hn::MulAdd(LoadWeights(df, w2 + c), x0, a2);
      a3 = hn::MulAdd(LoadWeights(df, w3 + c), x0, a3);
      c += N;
    }
    float s0 = ReduceSum(df, hn::Add(a0, b0));
    float s1 = ReduceSum(df, hn::Add(a1, b1));
    float s2 = ReduceSum(df, hn::Add(a2, b2));
    float s3 = ReduceSum(df, hn::Add(a3, b3));
    for (; c < cols; ++c) {
      const float xc = x[c];
      s0 += LoadWeight(w0 + c) * xc;
      s1 += LoadWeight(w1 + c) * xc;
      s2 += LoadWeight(w2 + c) * xc;
      s3 += LoadWeight(w3 + c) * xc;
    }
    y[r - r0] = s0;
    y[r - r0 + 1] = s1;
    y[r - r0 + 2] = s2;
    y[r - r0 + 3] = s3;
  }
  // Leftover rows (fewer than four): one row at a time, four accumulators.
  for (; r < r1; ++r) {
    const TW* HWY_RESTRICT w0 = row(r);
    VF a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    int64_t c = 0;
    for (; c + 4 * N <= cols; c += 4 * N) {
      a0 = hn::MulAdd(LoadWeights(df, w0 + c), hn::LoadU(df, x + c), a0);
      a1 = hn::MulAdd(LoadWeights(df, w0 + c + N), hn::LoadU(df, x + c + N), a1);
      a2 = hn::MulAdd(LoadWeights(df, w0 + c + 2 * N), hn::LoadU(df, x + c + 2 * N), a2);
      a3 = hn::MulAdd(LoadWeights(df, w0 + c + 3 * N), hn::LoadU(df, x + c + 3 * N), a3);
    }
    for (; c + N <= cols; c += N) a0 = hn::MulAdd(LoadWeights(df, w0 + c), hn::LoadU(df, x + c), a0);
    float s = ReduceSum(df, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)));
    for (; c < cols; ++c) s += LoadWeight(w0 + c) * x[c];
    y[r - r0] = s;
  }
}

void GemvRowsF32(const std::byte* data, size_t row_bytes, int64_t cols, const float* x, int64_t r0, int64_t r1,
                 float* y) {
  GemvRowsT<float>(data, row_bytes, cols, x, r0, r1, y);
}
void GemvRowsF16(const std::byte* data, size_t row_bytes, int64_t cols, const float* x, int64_t r0, int64_t r1,
                 float* y) {
  GemvRowsT<hwy::float16_t>(data, row_bytes, cols, x, r0, r1, y);
}
void GemvRowsBF16(const std::byte* data, size_t row_bytes, int64_t cols, const float* x, int64_t r0, int64_t r1,
                  float* y) {
  GemvRowsT<hwy::bfloat16_t>(data, row_bytes, cols, x, r0, r1, y);
}

// ---- widening --------------------------------------------------------------------------------------------
template <typename T>
HWY_INLINE void WidenT(const T* HWY_RESTRICT in, float* HWY_RESTRICT out, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    hn::StoreU(LoadWeights(df, in + i), df, out + i);
    hn::StoreU(LoadWeights(df, in + i + N), df, out + i + N);
  }
  for (; i + N <= n; i += N) hn::StoreU(LoadWeights(df, in + i), df, out + i);
  for (; i < n; ++i) out[i] = LoadWeight(in + i);
}
void WidenF16(const uint16_t* in, float* out, int64_t n) {
  WidenT(reinterpret_cast<const hwy::float16_t*>(in), out, n);
}
void WidenBF16(const uint16_t* in, float* out, int64_t n) {
  WidenT(reinterpret_cast<const hwy::bfloat16_t*>(in), out, n);
}

// ---- vector ops ------------------------------------------------------------------------------------------
float Dot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 4 * N <= n; i += 4 * N) {
    s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + i + N), hn::LoadU(df, b + i + N), s1);
    s2 = hn::MulAdd(hn::LoadU(df, a + i + 2 * N), hn::LoadU(df, b + i + 2 * N), s2);
    s3 = hn::MulAdd(hn::LoadU(df, a + i + 3 * N), hn::LoadU(df, b + i + 3 * N), s3);
  }
  for (; i + N <= n; i += N) s0 = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), s0);
  float s = ReduceSum(df, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void Axpy(float a, const float* HWY_RESTRICT x, float* HWY_RESTRICT y, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF va = hn::Set(df, a);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

// y[i] -= a * x[i]: one NegMulAdd per vector (fused on targets with FMA, as the compiler would contract a separate
// Mul and Sub there anyway under GCC's default -ffp-contract=fast).
void SubScaledF64(double a, const double* HWY_RESTRICT x, double* HWY_RESTRICT y, int64_t n) {
  int64_t i = 0;
#if HWY_HAVE_FLOAT64
  const hn::ScalableTag<double> dd;
  const int64_t N = static_cast<int64_t>(hn::Lanes(dd));
  const auto va = hn::Set(dd, a);
  for (; i + N <= n; i += N) hn::StoreU(hn::NegMulAdd(va, hn::LoadU(dd, x + i), hn::LoadU(dd, y + i)), dd, y + i);
#endif
  for (; i < n; ++i) y[i] -= a * x[i];
}

void RmsNorm(float* HWY_RESTRICT out, const float* HWY_RESTRICT x, const float* HWY_RESTRICT weight, int64_t n,
             float eps) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  VF s0 = hn::Zero(df), s1 = hn::Zero(df);
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    const VF v0 = hn::LoadU(df, x + i), v1 = hn::LoadU(df, x + i + N);
    s0 = hn::MulAdd(v0, v0, s0);
    s1 = hn::MulAdd(v1, v1, s1);
  }
  for (; i + N <= n; i += N) {
    const VF v = hn::LoadU(df, x + i);
    s0 = hn::MulAdd(v, v, s0);
  }
  float ss = ReduceSum(df, hn::Add(s0, s1));
  for (; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
  const VF vs = hn::Set(df, scale);
  i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + i), vs), hn::LoadU(df, weight + i)), df, out + i);
  for (; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

// exp() only exists as a vector op here; tails go through a padded one-vector buffer so every element sees
// the same approximation.
template <class Fn>
HWY_INLINE void MapTail(DF df, float* p, const float* q, int64_t count, Fn fn) {
  HWY_ALIGN float bp[HWY_MAX_BYTES / sizeof(float)] = {};
  HWY_ALIGN float bq[HWY_MAX_BYTES / sizeof(float)] = {};
  std::memcpy(bp, p, static_cast<size_t>(count) * sizeof(float));
  if (q) std::memcpy(bq, q, static_cast<size_t>(count) * sizeof(float));
  hn::Store(fn(hn::Load(df, bp), hn::Load(df, bq)), df, bp);
  std::memcpy(p, bp, static_cast<size_t>(count) * sizeof(float));
}

void Softmax(float* HWY_RESTRICT x, int64_t n) {
  if (n <= 0) return;
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  float mx = x[0];
  int64_t i = 0;
  if (n >= N) {
    VF vm = hn::LoadU(df, x);
    for (i = N; i + N <= n; i += N) vm = hn::Max(vm, hn::LoadU(df, x + i));
    mx = hn::GetLane(hn::MaxOfLanes(df, vm));
  }
  for (; i < n; ++i) mx = x[i] > mx ? x[i] : mx;

  const VF vmax = hn::Set(df, mx);
  const VF lo = hn::Set(df, -104.0f);  // exp underflows to 0 below this; keeps -inf inputs in Exp's range
  auto exp_shifted = [&](VF v, VF) { return hn::Exp(df, hn::Max(hn::Sub(v, vmax), lo)); };
  // Two partial sums keep the f32 rounding error of long rows (vocabulary-sized) small.
  VF vsum0 = hn::Zero(df), vsum1 = hn::Zero(df);
  for (i = 0; i + 2 * N <= n; i += 2 * N) {
    const VF e0 = exp_shifted(hn::LoadU(df, x + i), vmax);
    const VF e1 = exp_shifted(hn::LoadU(df, x + i + N), vmax);
    hn::StoreU(e0, df, x + i);
    hn::StoreU(e1, df, x + i + N);
    vsum0 = hn::Add(vsum0, e0);
    vsum1 = hn::Add(vsum1, e1);
  }
  for (; i + N <= n; i += N) {
    const VF e = exp_shifted(hn::LoadU(df, x + i), vmax);
    hn::StoreU(e, df, x + i);
    vsum0 = hn::Add(vsum0, e);
  }
  float sum = ReduceSum(df, hn::Add(vsum0, vsum1));
  if (i < n) {
    MapTail(df, x + i, nullptr, n - i, exp_shifted);
    for (int64_t j = i; j < n; ++j) sum += x[j];
  }
  const VF vinv = hn::Set(df, 1.0f / sum);
  for (i = 0; i + N <= n; i += N) hn::StoreU(hn::Mul(hn::LoadU(df, x + i), vinv), df, x + i);
  for (; i < n; ++i) x[i] *= 1.0f / sum;
}

void SiluMul(float* HWY_RESTRICT gate, const float* HWY_RESTRICT up, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF one = hn::Set(df, 1.0f);
  const VF hi = hn::Set(df, 100.0f);  // exp(100) is already inf in f32; stay inside Exp's valid range
  auto silu_mul = [&](VF g, VF u) {
    const VF e = hn::Exp(df, hn::Min(hn::Neg(g), hi));
    return hn::Mul(hn::Div(g, hn::Add(one, e)), u);
  };
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(silu_mul(hn::LoadU(df, gate + i), hn::LoadU(df, up + i)), df, gate + i);
  if (i < n) MapTail(df, gate + i, up + i, n - i, silu_mul);
}

// gate = gelu_tanh(gate) * up, with 0.5 x (1 + tanh(u)) written as x / (1 + exp(-2u)), u = sqrt(2/pi)(x + 0.044715 x^3).
void GeluMul(float* HWY_RESTRICT gate, const float* HWY_RESTRICT up, int64_t n) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF one = hn::Set(df, 1.0f);
  const VF hi = hn::Set(df, 100.0f);
  const VF k1 = hn::Set(df, -2.0f * 0.7978845608028654f), k3 = hn::Set(df, -2.0f * 0.7978845608028654f * 0.044715f);
  auto gelu_mul = [&](VF g, VF u) {
    const VF g2 = hn::Mul(g, g);
    const VF e = hn::Exp(df, hn::Min(hn::Mul(g, hn::MulAdd(k3, g2, k1)), hi));
    return hn::Mul(hn::Div(g, hn::Add(one, e)), u);
  };
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(gelu_mul(hn::LoadU(df, gate + i), hn::LoadU(df, up + i)), df, gate + i);
  if (i < n) MapTail(df, gate + i, up + i, n - i, gelu_mul);
}

// ---- rope ------------------------------------------------------------------------------------------------
void RopeTables(float* HWY_RESTRICT x, int n_heads, int head_dim, int rope_dim, const float* HWY_RESTRICT cos_t,
                const float* HWY_RESTRICT sin_t, RopeStyle style) {
  const DF df;
  const int N = static_cast<int>(hn::Lanes(df));
  const int half = rope_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* HWY_RESTRICT v = x + static_cast<size_t>(h) * head_dim;
    if (style == RopeStyle::HalfSplit) {
      int i = 0;
      for (; i + N <= half; i += N) {
        const VF a = hn::LoadU(df, v + i), b = hn::LoadU(df, v + i + half);
        const VF c = hn::LoadU(df, cos_t + i), s = hn::LoadU(df, sin_t + i);
        hn::StoreU(hn::NegMulAdd(b, s, hn::Mul(a, c)), df, v + i);
        hn::StoreU(hn::MulAdd(a, s, hn::Mul(b, c)), df, v + i + half);
      }
      for (; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cos_t[i] - b * sin_t[i];
        v[i + half] = a * sin_t[i] + b * cos_t[i];
      }
    } else {
      // Pairs are adjacent: out = v * cos + swap_pairs(v) * (-sin, +sin). Needs whole pairs per vector.
      int j = 0;
      if (N >= 2) {
        for (; j + N <= 2 * half; j += N) {
          const VF a = hn::LoadU(df, v + j);
          const VF out = hn::MulAdd(hn::Reverse2(df, a), hn::LoadU(df, sin_t + j), hn::Mul(a, hn::LoadU(df, cos_t + j)));
          hn::StoreU(out, df, v + j);
        }
      }
      for (; j < 2 * half; j += 2) {
        const float a = v[j], b = v[j + 1];
        v[j] = a * cos_t[j] + b * sin_t[j];
        v[j + 1] = b * cos_t[j + 1] + a * sin_t[j + 1];
      }
    }
  }
}

// ---- bandwidth -------------------------------------------------------------------------------------------
// Reads four equal parts of the buffer side by side: several sequential streams per core engage more
// hardware prefetch streams than one (measured ~+10% over a single stream), so this is the machine's real
// read ceiling, not an underestimate.
float StreamSum(const float* HWY_RESTRICT p, size_t n) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const size_t part = n / 4 / (2 * N) * (2 * N);
  const float* HWY_RESTRICT q0 = p;
  const float* HWY_RESTRICT q1 = p + part;
  const float* HWY_RESTRICT q2 = p + 2 * part;
  const float* HWY_RESTRICT q3 = p + 3 * part;
  VF s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  VF s4 = hn::Zero(df), s5 = hn::Zero(df), s6 = hn::Zero(df), s7 = hn::Zero(df);
  for (size_t i = 0; i < part; i += 2 * N) {
    s0 = hn::Add(s0, hn::LoadU(df, q0 + i));
    s1 = hn::Add(s1, hn::LoadU(df, q1 + i));
    s2 = hn::Add(s2, hn::LoadU(df, q2 + i));
    s3 = hn::Add(s3, hn::LoadU(df, q3 + i));
    s4 = hn::Add(s4, hn::LoadU(df, q0 + i + N));
    s5 = hn::Add(s5, hn::LoadU(df, q1 + i + N));
    s6 = hn::Add(s6, hn::LoadU(df, q2 + i + N));
    s7 = hn::Add(s7, hn::LoadU(df, q3 + i + N));
  }
  const VF sum = hn::Add(hn::Add(hn::Add(s0, s1), hn::Add(s2, s3)), hn::Add(hn::Add(s4, s5), hn::Add(s6, s7)));
  float s = ReduceSum(df, sum);
  for (size_t i = 4 * part; i < n; ++i) s += p[i];
  return s;
}

int64_t TargetId() { return HWY_TARGET; }

}  // namespace lowbit::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lowbit::ops {

HWY_EXPORT(GemvRowsF32);
HWY_EXPORT(GemvRowsF16);
HWY_EXPORT(GemvRowsBF16);
HWY_EXPORT(WidenF16);
HWY_EXPORT(WidenBF16);
HWY_EXPORT(Dot);
HWY_EXPORT(Axpy);
HWY_EXPORT(SubScaledF64);
HWY_EXPORT(RmsNorm);
HWY_EXPORT(Softmax);
HWY_EXPORT(SiluMul);
HWY_EXPORT(GeluMul);
HWY_EXPORT(RopeTables);
HWY_EXPORT(StreamSum);
HWY_EXPORT(TargetId);

void gemv_rows(const WeightView& w, const float* x, int64_t r0, int64_t r1, float* y) {
  if (w.intn) {
    detail::IntNActs acts;
    detail::quantize_acts_intn(*w.intn, x, w.cols, acts);
    return detail::gemv_intn_rows(w, acts, r0, r1, y);
  }
  switch (w.dtype) {
    case DType::F32: return HWY_DYNAMIC_DISPATCH(GemvRowsF32)(w.data, w.row_bytes, w.cols, x, r0, r1, y);
    case DType::F16: return HWY_DYNAMIC_DISPATCH(GemvRowsF16)(w.data, w.row_bytes, w.cols, x, r0, r1, y);
    case DType::BF16: return HWY_DYNAMIC_DISPATCH(GemvRowsBF16)(w.data, w.row_bytes, w.cols, x, r0, r1, y);
    default:
      fail("", "gemv", "weight dtype " + std::string(dtype_name(w.dtype)) + " is not supported (f32, f16, bf16)");
  }
}

void f16_to_f32(const uint16_t* in, float* out, int64_t n) { HWY_DYNAMIC_DISPATCH(WidenF16)(in, out, n); }
void bf16_to_f32(const uint16_t* in, float* out, int64_t n) { HWY_DYNAMIC_DISPATCH(WidenBF16)(in, out, n); }
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }
void axpy(float a, const float* x, float* y, int64_t n) { HWY_DYNAMIC_DISPATCH(Axpy)(a, x, y, n); }
void sub_scaled(double a, const double* x, double* y, int64_t n) { HWY_DYNAMIC_DISPATCH(SubScaledF64)(a, x, y, n); }
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps) {
  HWY_DYNAMIC_DISPATCH(RmsNorm)(out, x, weight, n, eps);
}
void softmax(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(Softmax)(x, n); }
void silu_mul(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluMul)(gate, up, n); }
void gelu_mul(float* gate, const float* up, int64_t n) { HWY_DYNAMIC_DISPATCH(GeluMul)(gate, up, n); }
const char* simd_target() { return hwy::TargetName(HWY_DYNAMIC_DISPATCH(TargetId)()); }

namespace detail {

void rope_tables(float* x, int n_heads, int head_dim, int rope_dim, const float* cos_t, const float* sin_t,
                 RopeStyle style) {
  HWY_DYNAMIC_DISPATCH(RopeTables)(x, n_heads, head_dim, rope_dim, cos_t, sin_t, style);
}

float stream_sum(const float* p, size_t n) { return HWY_DYNAMIC_DISPATCH(StreamSum)(p, n); }

float parallel_stream_sum(const float* p, size_t n, int threads) {
  float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    const size_t nt = static_cast<size_t>(omp_get_num_threads());
    // 64-byte aligned chunk boundaries so no cache line is read by two threads.
    const size_t lines = (n + 15) / 16;
    const size_t i0 = std::min(n, lines * t / nt * 16);
    const size_t i1 = std::min(n, lines * (t + 1) / nt * 16);
    total += HWY_DYNAMIC_DISPATCH(StreamSum)(p + i0, i1 - i0);
  }
  return total;
}

}  // namespace detail
}  // namespace lowbit::ops
#endif  // HWY_ONCE
