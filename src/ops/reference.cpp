#include "ops/reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/half.h"
#include "formats/intn.h"
#include "ops/kernels.h"

namespace lowbit::ops {

float weight_at_ref(const WeightView& w, int64_t r, int64_t c) {
  const std::byte* row = w.data + static_cast<size_t>(r) * w.row_bytes;
  if (w.intn) {  // through the format's own scalar block decoder
    const int g = w.intn->block();
    std::vector<float> blk(static_cast<size_t>(g));
    w.intn->decode(row + static_cast<size_t>(c / g) * w.intn->block_bytes(), blk);
    return blk[static_cast<size_t>(c % g)];
  }
  switch (w.dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, row + c * 4, 4);
      return f;
    }
    case DType::F16:
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, row + c * 2, 2);
      return w.dtype == DType::F16 ? lowbit::f16_to_f32(h) : lowbit::bf16_to_f32(h);
    }
    default:
      return NAN;
  }
}

void gemv_rows_ref(const WeightView& w, const float* x, int64_t r0, int64_t r1, float* y) {
  for (int64_t r = r0; r < r1; ++r) {
    double s = 0;
    for (int64_t c = 0; c < w.cols; ++c) s += static_cast<double>(weight_at_ref(w, r, c)) * x[c];
    y[r - r0] = static_cast<float>(s);
  }
}

void gemv_intn_rows_ref(const WeightView& w, const float* x, int64_t r0, int64_t r1, float* y, int act_max) {
  const formats::IntNFormat& f = *w.intn;
  const int64_t g = f.block();
  const int64_t blocks = (w.cols + g - 1) / g;
  std::vector<uint8_t> codes(static_cast<size_t>(g));
  for (int64_t r = r0; r < r1; ++r) {
    double s = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t len = std::min(g, w.cols - b * g);
      float amax = 0;
      for (int64_t i = 0; i < len; ++i) amax = std::fmax(amax, std::fabs(x[b * g + i]));
      const float d = amax / static_cast<float>(act_max);
      const formats::IntNBlock blk =
          formats::intn_unpack_block(f, w.data + static_cast<size_t>(r) * w.row_bytes + b * f.block_bytes(), codes.data());
      double cq = 0, qs = 0;
      for (int64_t i = 0; i < len; ++i) {
        const double q = d > 0 ? std::clamp(std::nearbyint(static_cast<double>(x[b * g + i] * (1.0f / d))), -static_cast<double>(act_max), static_cast<double>(act_max)) : 0.0;
        cq += codes[static_cast<size_t>(i)] * q;
        qs += q;
      }
      s += static_cast<double>(blk.scale) * d * (cq - static_cast<double>(blk.offset) * qs);
    }
    y[r - r0] = static_cast<float>(s);
  }
}

void matmul_ref(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  for (int64_t t = 0; t < n_tokens; ++t) gemv_rows_ref(w, x + t * w.cols, 0, w.rows, y + t * w.rows);
}

void get_row_ref(const WeightView& w, int64_t r, float* out) {
  for (int64_t c = 0; c < w.cols; ++c) out[c] = weight_at_ref(w, r, c);
}

void rmsnorm_ref(float* out, const float* x, const float* weight, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * scale * weight[i];
}

void softmax_ref(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::fmax(mx, x[i]);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul_ref(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    gate[i] = static_cast<float>(g / (1.0 + std::exp(-g)) * up[i]);
  }
}

// PyTorch's gelu(approximate="tanh"), 0.5 g (1 + tanh(u)), in double; as g / (1 + exp(-2u)) (the same function)
// where 1 + tanh(u) would cancel to nothing (u < -1).
void gelu_mul_ref(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double u = 0.7978845608028654 * (g + 0.044715 * g * g * g);
    const double gelu = u > -1 ? 0.5 * g * (1.0 + std::tanh(u)) : g / (1.0 + std::exp(-2.0 * u));
    gate[i] = static_cast<float>(gelu * up[i]);
  }
}

float dot_ref(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return static_cast<float>(s);
}

void axpy_ref(float a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void sub_scaled_ref(double a, const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] -= a * x[i];
}

void f16_to_f32_ref(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = lowbit::f16_to_f32(in[i]);
}

void bf16_to_f32_ref(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = lowbit::bf16_to_f32(in[i]);
}

void rope_ref(float* x, int n_heads, int head_dim, int rope_dim, int pos, const float* inv_freq, RopeStyle style) {
  const int half = rope_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + static_cast<size_t>(h) * head_dim;
    for (int i = 0; i < half; ++i) {
      // The angle is formed in f32 like llama.cpp and HF do; only cos/sin are taken in double.
      const float angle = static_cast<float>(pos) * inv_freq[i];
      const float c = static_cast<float>(std::cos(static_cast<double>(angle)));
      const float s = static_cast<float>(std::sin(static_cast<double>(angle)));
      const int i0 = style == RopeStyle::Interleaved ? 2 * i : i;
      const int i1 = style == RopeStyle::Interleaved ? 2 * i + 1 : i + half;
      const float a = v[i0], b = v[i1];
      v[i0] = a * c - b * s;
      v[i1] = a * s + b * c;
    }
  }
}

}  // namespace lowbit::ops
