// An independent, deliberately naive double-precision forward pass of the Llama-family graph, written from the
// architecture's definition (not from src/model): every position recomputed token by token, no batching,
// no SIMD, no KV cache tricks. Tests compare lowbit::Model against it on synthetic configurations.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "core/half.h"
#include "lowbit/model_file.h"

namespace lowbit::test {

inline double weight_at(const TensorInfo& t, int64_t idx) {
  switch (t.dtype) {
    case DType::F32: return reinterpret_cast<const float*>(t.data)[idx];
    case DType::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(t.data)[idx]);
    case DType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(t.data)[idx]);
    default: throw std::runtime_error("reference_forward: unsupported dtype");
  }
}

// y = W x for W {rows, cols}
inline std::vector<double> ref_linear(const TensorInfo& w, const std::vector<double>& x) {
  const int64_t rows = w.shape[0], cols = w.shape[1];
  std::vector<double> y(rows, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += weight_at(w, r * cols + c) * x[c];
    y[r] = s;
  }
  return y;
}

inline std::vector<double> ref_rmsnorm(const std::vector<double>& x, const TensorInfo& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * weight_at(w, i);
  return y;
}

inline std::vector<double> ref_frequencies(const ModelConfig& c, const ModelFile& m) {
  std::vector<double> f(c.rope_dim / 2);
  for (int i = 0; i < c.rope_dim / 2; ++i) {
    double freq = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / c.rope_dim);
    const auto& s = c.rope_scaling;
    if (s.type == "linear") freq /= s.factor;
    if (s.type == "freq_factors") freq /= weight_at(m.get("rope_freqs.weight"), i);
    if (s.type == "llama3") {
      const double wavelen = 2 * M_PI / freq;
      const double lo = s.original_context / s.low_freq_factor, hi = s.original_context / s.high_freq_factor;
      if (wavelen > lo) {
        freq /= s.factor;
      } else if (wavelen >= hi) {
        const double t = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        freq = (1 - t) * freq / s.factor + t * freq;
      }
    }
    f[i] = freq;
  }
  return f;
}

inline void ref_rope(std::vector<double>& v, int n_heads, const ModelConfig& c, const std::vector<double>& freq,
                     int pos) {
  for (int h = 0; h < n_heads; ++h) {
    double* x = v.data() + static_cast<size_t>(h) * c.head_dim;
    for (int i = 0; i < c.rope_dim / 2; ++i) {
      const int a = c.rope_style == RopeStyle::Interleaved ? 2 * i : i;
      const int b = c.rope_style == RopeStyle::Interleaved ? 2 * i + 1 : i + c.rope_dim / 2;
      const double ang = pos * freq[i];
      const double xa = x[a], xb = x[b];
      x[a] = xa * std::cos(ang) - xb * std::sin(ang);
      x[b] = xa * std::sin(ang) + xb * std::cos(ang);
    }
  }
}

// Logits for every position of `tokens` (positions x vocab).
inline std::vector<std::vector<double>> reference_forward(const ModelFile& m, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = m.config;
  const auto freq = ref_frequencies(c, m);
  const int hd = c.head_dim;
  std::vector<std::vector<std::vector<double>>> K(c.n_layers), V(c.n_layers);
  std::vector<std::vector<double>> out;
  const TensorInfo& emb = m.get("token_embd.weight");
  for (size_t p = 0; p < tokens.size(); ++p) {
    std::vector<double> x(c.dim);
    for (int i = 0; i < c.dim; ++i) x[i] = weight_at(emb, static_cast<int64_t>(tokens[p]) * c.dim + i);
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      auto xn = ref_rmsnorm(x, m.get(b + "attn_norm.weight"), c.norm_eps);
      auto q = ref_linear(m.get(b + "attn_q.weight"), xn);
      auto k = ref_linear(m.get(b + "attn_k.weight"), xn);
      auto v = ref_linear(m.get(b + "attn_v.weight"), xn);
      if (c.qkv_bias) {
        for (size_t i = 0; i < q.size(); ++i) q[i] += weight_at(m.get(b + "attn_q.bias"), i);
        for (size_t i = 0; i < k.size(); ++i) k[i] += weight_at(m.get(b + "attn_k.bias"), i);
        for (size_t i = 0; i < v.size(); ++i) v[i] += weight_at(m.get(b + "attn_v.bias"), i);
      }
      ref_rope(q, c.n_heads, c, freq, static_cast<int>(p));
      ref_rope(k, c.n_kv_heads, c, freq, static_cast<int>(p));
      K[l].push_back(k);
      V[l].push_back(v);
      std::vector<double> att(static_cast<size_t>(c.n_heads) * hd, 0.0);
      for (int h = 0; h < c.n_heads; ++h) {
        const int kvh = h * c.n_kv_heads / c.n_heads;
        std::vector<double> s(p + 1);
        double mx = -1e300;
        for (size_t t = 0; t <= p; ++t) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[h * hd + i] * K[l][t][kvh * hd + i];
          s[t] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[t]);
        }
        double z = 0;
        for (double& e : s) z += (e = std::exp(e - mx));
        for (size_t t = 0; t <= p; ++t)
          for (int i = 0; i < hd; ++i) att[h * hd + i] += s[t] / z * V[l][t][kvh * hd + i];
      }
      auto o = ref_linear(m.get(b + "attn_output.weight"), att);
      for (int i = 0; i < c.dim; ++i) x[i] += o[i];
      xn = ref_rmsnorm(x, m.get(b + "ffn_norm.weight"), c.norm_eps);
      auto g = ref_linear(m.get(b + "ffn_gate.weight"), xn);
      auto u = ref_linear(m.get(b + "ffn_up.weight"), xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      auto d = ref_linear(m.get(b + "ffn_down.weight"), g);
      for (int i = 0; i < c.dim; ++i) x[i] += d[i];
    }
    auto xn = ref_rmsnorm(x, m.get("output_norm.weight"), c.norm_eps);
    out.push_back(ref_linear(c.tied_embeddings ? emb : m.get("output.weight"), xn));
  }
  return out;
}

}  // namespace lowbit::test
