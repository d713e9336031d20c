// Scalar reference for the ggml-type matrix products (ops/ggml_dot.h): activation quantization, the per-type
// block decomposition S_g * (u_i - c) - M_g, and the row dot product built on them.
#include <algorithm>
#include <cstddef>
#include <cmath>
#include <cstring>
#include <string>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_kquants.h"
#include "lowbit/error.h"
#include "ops/ggml_dot.h"

namespace lowbit::ops::detail {

namespace B = formats::blocks;

namespace {

float f16_at(const std::byte* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return lowbit::f16_to_f32(h);
}

const uint8_t* bytes(const std::byte* p) { return reinterpret_cast<const uint8_t*>(p); }

// Round half to even, as llama.cpp's x86 activation quantizer (_mm256_round_ps, nearest), into int8's range.
// A NaN (from NaN weights upstream) becomes 0 instead of an undefined float-to-int conversion.
int round_even(float v) {
  const float r = std::nearbyint(v);
  if (!(r == r)) return 0;
  return r > 127.0f ? 127 : r < -127.0f ? -127 : static_cast<int>(r);
}

// ggml's nearest_int: round half to even through the float mantissa (valid for |v| < 2^22).
int nearest_int(float v) {
  float val = v + 12582912.f;
  int32_t i;
  std::memcpy(&i, &val, 4);
  return (i & 0x007fffff) - 0x00400000;
}

}  // namespace

// The types with integer kernels: those of the one traits table.
bool ggml_dot_supported(DType t) { return B::traits(t).values != 0; }

bool ggml_acts_transposed(DType t) {
  switch (t) {
    case DType::Q4_0: case DType::Q4_1: case DType::IQ4_NL: case DType::Q2_K: case DType::Q3_K: case DType::Q4_K:
    case DType::Q5_K: case DType::Q6_K: case DType::IQ4_XS:
      return true;
    default:
      return false;
  }
}

int ggml_block_values(DType t) { return static_cast<int>(dtype_info(t).block); }

void quantize_acts_ggml(DType wtype, const float* x, int64_t n, GgmlActs& a, bool gemm) {
  const int B = ggml_block_values(wtype);
  if (!ggml_dot_supported(wtype) || n % B != 0)
    fail("", "quantize_acts_ggml",
         std::to_string(n) + " activations for weight type " + std::string(dtype_name(wtype)) +
             " (expected a multiple of " + std::to_string(B) + ")");
  a.wtype = wtype;
  a.n = n;
  a.q.resize(static_cast<size_t>(n));
  a.dg.resize(static_cast<size_t>(n / 16));
  a.ag.resize(static_cast<size_t>(n / 16));
  for (int64_t b = 0; b < n / B; ++b) {
    const float* xb = x + b * B;
    int8_t* qb = a.q.data() + b * B;
    float d = 0.0f;
    if (B == 32) {  // Q8_0
      float amax = 0.0f;
      for (int i = 0; i < B; ++i) amax = std::max(amax, std::fabs(xb[i]));
      const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
      d = lowbit::f16_to_f32(lowbit::f32_to_f16(amax / 127.0f));
      for (int i = 0; i < B; ++i) qb[i] = static_cast<int8_t>(round_even(xb[i] * id));
    } else {  // Q8_K
      float amax = 0.0f, vmax = 0.0f;
      for (int i = 0; i < B; ++i)
        if (std::fabs(xb[i]) > amax) amax = std::fabs(xb[i]), vmax = xb[i];
      if (amax == 0.0f) {
        std::fill_n(qb, B, int8_t{0});
      } else {
        const float iscale = -127.0f / vmax;
        for (int i = 0; i < B; ++i) qb[i] = static_cast<int8_t>(std::min(127, nearest_int(iscale * xb[i])));
        d = 1.0f / iscale;
      }
    }
    for (int g = 0; g < B / 16; ++g) {
      int32_t s = 0;
      for (int i = 0; i < 16; ++i) s += qb[16 * g + i];
      a.dg[static_cast<size_t>(b * B / 16 + g)] = d;
      a.ag[static_cast<size_t>(b * B / 16 + g)] = s;
    }
  }
  a.qt.clear();
  a.supers = 0;
  if (gemm) {
    const B::Traits tr = B::traits(wtype);
    const int unit = tr.scale_group, super = 16 * unit;
    a.unit = unit;
    a.supers = (n + super - 1) / super;
    const size_t units = static_cast<size_t>(a.supers) * 16;
    a.qg.assign(units * unit, int8_t{0});  // padding: code 0
    a.du.assign(units, 0.0f);
    a.da.assign(units, 0.0f);
    a.ci.assign(units, 0);
    a.as.assign(units, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = i / super, v = i % super, j = v / unit, w = v % unit;
      a.qg[static_cast<size_t>(super * s + 64 * (w / 4) + 4 * j + w % 4)] = a.q[static_cast<size_t>(i)];
    }
    for (int64_t u = 0; u < n / unit; ++u) {  // a unit is one or two 16-value groups of one activation block
      int32_t sum = 0;
      for (int g = 0; g < unit / 16; ++g) sum += a.ag[static_cast<size_t>(u * unit / 16 + g)];
      const float d = a.dg[static_cast<size_t>(u * unit / 16)];
      a.du[static_cast<size_t>(u)] = d;
      a.da[static_cast<size_t>(u)] = d * static_cast<float>(sum);
      a.ci[static_cast<size_t>(u)] = -tr.centre * sum;
      a.as[static_cast<size_t>(u)] = sum;
    }
  }
  if (ggml_acts_transposed(wtype)) {
    a.qt.resize(static_cast<size_t>(n / 256 * 256));
    for (int64_t c = 0; c < n / 256; ++c)
      for (int g = 0; g < 16; ++g)
        for (int k = 0; k < 4; ++k)
          for (int j = 0; j < 4; ++j)
            a.qt[static_cast<size_t>(256 * c + 64 * k + 4 * g + j)] = a.q[static_cast<size_t>(256 * c + 16 * g + 4 * k + j)];
  }
}

void ggml_block_terms(DType t, const std::byte* block, GgmlBlockTerms& o, bool codes) {
  const uint8_t* p = bytes(block);
  std::fill(std::begin(o.M), std::end(o.M), 0.0f);
  o.c = B::traits(t).centre;
  switch (t) {
    case DType::Q8_0: {
      o.S[0] = o.S[1] = f16_at(block + offsetof(B::Q8_0, d));
      if (codes)
        for (int i = 0; i < 32; ++i) o.u[i] = static_cast<uint8_t>(p[offsetof(B::Q8_0, qs) + i] ^ 0x80);
      return;
    }
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::IQ4_NL: {
      static_assert(offsetof(B::Q4_0, qs) == offsetof(B::IQ4_NL, qs) && offsetof(B::Q4_0, d) == offsetof(B::Q4_1, d));
      const size_t hdr = t == DType::Q4_1 ? offsetof(B::Q4_1, qs) : offsetof(B::Q4_0, qs);
      o.S[0] = o.S[1] = f16_at(block + offsetof(B::Q4_0, d));
      if (t == DType::Q4_1) o.M[0] = o.M[1] = -f16_at(block + offsetof(B::Q4_1, m));
      if (!codes) return;
      for (int j = 0; j < 16; ++j) {
        o.u[j] = p[hdr + j] & 0xF;
        o.u[j + 16] = p[hdr + j] >> 4;
      }
      if (t == DType::IQ4_NL)
        for (int i = 0; i < 32; ++i) o.u[i] = static_cast<uint8_t>(formats::kIq4nlValues[o.u[i]] + 128);
      return;
    }
    case DType::Q5_0:
    case DType::Q5_1: {
      const bool one = t == DType::Q5_1;
      const uint8_t* qhp = p + (one ? offsetof(B::Q5_1, qh) : offsetof(B::Q5_0, qh));
      const uint8_t* qs = p + (one ? offsetof(B::Q5_1, qs) : offsetof(B::Q5_0, qs));
      o.S[0] = o.S[1] = f16_at(block + offsetof(B::Q5_0, d));
      if (one) o.M[0] = o.M[1] = -f16_at(block + offsetof(B::Q5_1, m));
      if (!codes) return;
      uint32_t qh;
      std::memcpy(&qh, qhp, 4);
      for (int j = 0; j < 16; ++j) {
        o.u[j] = static_cast<uint8_t>((qs[j] & 0xF) | (((qh >> j) & 1) << 4));
        o.u[j + 16] = static_cast<uint8_t>((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
      }
      return;
    }
    case DType::IQ4_XS: {
      const float d = f16_at(block + offsetof(B::IQ4_XS, d));
      uint16_t sh;
      std::memcpy(&sh, p + offsetof(B::IQ4_XS, scales_h), 2);
      const uint8_t* sl = p + offsetof(B::IQ4_XS, scales_l);
      const uint8_t* qs = p + offsetof(B::IQ4_XS, qs);
      for (int ib = 0; ib < 8; ++ib) {
        const int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
        o.S[2 * ib] = o.S[2 * ib + 1] = d * static_cast<float>(ls - 32);
        if (!codes) continue;
        for (int j = 0; j < 16; ++j) {
          o.u[32 * ib + j] = static_cast<uint8_t>(formats::kIq4nlValues[qs[16 * ib + j] & 0xF] + 128);
          o.u[32 * ib + 16 + j] = static_cast<uint8_t>(formats::kIq4nlValues[qs[16 * ib + j] >> 4] + 128);
        }
      }
      return;
    }
    case DType::Q2_K: {
      const uint8_t* sc = p + offsetof(B::Q2_K, scales);
      const uint8_t* qs = p + offsetof(B::Q2_K, qs);
      const float d = f16_at(block + offsetof(B::Q2_K, d)), dmin = f16_at(block + offsetof(B::Q2_K, dmin));
      for (int g = 0; g < 16; ++g) {
        o.S[g] = d * static_cast<float>(sc[g] & 0xF);
        o.M[g] = dmin * static_cast<float>(sc[g] >> 4);
      }
      if (!codes) return;
      for (int n = 0; n < 2; ++n)
        for (int j = 0; j < 4; ++j)
          for (int l = 0; l < 32; ++l) o.u[128 * n + 32 * j + l] = (qs[32 * n + l] >> (2 * j)) & 3;
      return;
    }
    case DType::Q3_K: {
      const uint8_t* hm = p + offsetof(B::Q3_K, hmask);
      const uint8_t* qs = p + offsetof(B::Q3_K, qs);
      const float d = f16_at(block + offsetof(B::Q3_K, d));
      int8_t sc[16];
      formats::q3k_scales(p + offsetof(B::Q3_K, scales), sc);
      for (int g = 0; g < 16; ++g) o.S[g] = d * static_cast<float>(sc[g]);
      if (!codes) return;
      for (int n = 0; n < 2; ++n)
        for (int j = 0; j < 4; ++j)
          for (int l = 0; l < 32; ++l)
            o.u[128 * n + 32 * j + l] = static_cast<uint8_t>(((qs[32 * n + l] >> (2 * j)) & 3) |
                                                             (((hm[l] >> (4 * n + j)) & 1) << 2));
      return;
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      static_assert(offsetof(B::Q4_K, scales) == offsetof(B::Q5_K, scales) && offsetof(B::Q4_K, dmin) == offsetof(B::Q5_K, dmin));
      const float d = f16_at(block + offsetof(B::Q4_K, d)), dmin = f16_at(block + offsetof(B::Q4_K, dmin));
      const uint8_t* sc = p + offsetof(B::Q4_K, scales);
      const bool five = t == DType::Q5_K;
      const uint8_t* qh = p + offsetof(B::Q5_K, qh);
      const uint8_t* qs = p + (five ? offsetof(B::Q5_K, qs) : offsetof(B::Q4_K, qs));
      for (int j = 0; j < 8; ++j) {
        uint8_t s, m;
        formats::q4k_scale_min(sc, j, s, m);
        o.S[2 * j] = o.S[2 * j + 1] = d * static_cast<float>(s);
        o.M[2 * j] = o.M[2 * j + 1] = dmin * static_cast<float>(m);
      }
      if (!codes) return;
      for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) {
          uint8_t lo = qs[32 * c + l] & 0xF, hi = qs[32 * c + l] >> 4;
          if (five) {
            lo |= static_cast<uint8_t>(((qh[l] >> (2 * c)) & 1) << 4);
            hi |= static_cast<uint8_t>(((qh[l] >> (2 * c + 1)) & 1) << 4);
          }
          o.u[64 * c + l] = lo;
          o.u[64 * c + 32 + l] = hi;
        }
      return;
    }
    case DType::Q6_K: {
      const uint8_t* ql = p + offsetof(B::Q6_K, ql);
      const uint8_t* qh = p + offsetof(B::Q6_K, qh);
      const int8_t* sc = reinterpret_cast<const int8_t*>(p + offsetof(B::Q6_K, scales));
      const float d = f16_at(block + offsetof(B::Q6_K, d));
      for (int g = 0; g < 16; ++g) o.S[g] = d * static_cast<float>(sc[g]);
      if (!codes) return;
      for (int n = 0; n < 2; ++n)
        for (int l = 0; l < 32; ++l) {
          const uint8_t* L = ql + 64 * n;
          const uint8_t h = qh[32 * n + l];
          uint8_t* u = o.u + 128 * n;
          u[l] = static_cast<uint8_t>((L[l] & 0xF) | ((h & 3) << 4));
          u[l + 32] = static_cast<uint8_t>((L[l + 32] & 0xF) | (((h >> 2) & 3) << 4));
          u[l + 64] = static_cast<uint8_t>((L[l] >> 4) | (((h >> 4) & 3) << 4));
          u[l + 96] = static_cast<uint8_t>((L[l + 32] >> 4) | (((h >> 6) & 3) << 4));
        }
      return;
    }
    default: {
      formats::IqBlockLevels L;
      if (!formats::ggml_iq_block_levels(t, block, L))
        fail("", "ggml_block_terms", "no native dot product for type " + std::string(dtype_name(t)));
      for (int g = 0; g < 16; ++g) o.S[g] = L.step * static_cast<float>(L.scale[g]);
      if (codes)
        for (int i = 0; i < 256; ++i) o.u[i] = static_cast<uint8_t>(L.level[i] + 128);
      return;
    }
  }
}

float ggml_dot_blocks_ref(DType t, const std::byte* row, const GgmlActs& a, int64_t b0, int64_t b1) {
  const int B = ggml_block_values(t);
  const size_t bb = dtype_info(t).block_bytes;
  GgmlBlockTerms bt;
  float sum = 0.0f;
  for (int64_t b = b0; b < b1; ++b) {
    ggml_block_terms(t, row + b * bb, bt);
    const int8_t* q = a.q.data() + b * B;
    float block_sum = 0.0f;
    for (int g = 0; g < B / 16; ++g) {
      int32_t s = 0;
      for (int i = 0; i < 16; ++i) s += static_cast<int32_t>(bt.u[16 * g + i]) * q[16 * g + i];
      const int32_t A = a.ag[static_cast<size_t>(b * B / 16 + g)];
      block_sum += bt.S[g] * static_cast<float>(s - bt.c * A) - bt.M[g] * static_cast<float>(A);
    }
    sum += a.dg[static_cast<size_t>(b * B / 16)] * block_sum;
  }
  return sum;
}

float ggml_dot_row_ref(DType t, const std::byte* row, const GgmlActs& a) {
  return ggml_dot_blocks_ref(t, row, a, 0, a.n / ggml_block_values(t));
}

}  // namespace lowbit::ops::detail
