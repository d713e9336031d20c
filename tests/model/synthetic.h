// Builds small in-memory Llama-family models with random weights for graph tests.
#pragma once
#include <memory>
#include <random>
#include <string>

#include "core/half.h"
#include "lowbit/model_file.h"

namespace lowbit::test {

inline void add_tensor(ModelFile& m, const std::string& name, std::vector<int64_t> shape, DType dt, std::mt19937& rng,
                       float scale, float offset = 0.0f) {
  TensorInfo t;
  t.name = name;
  t.dtype = dt;
  t.shape = std::move(shape);
  const int64_t n = t.numel();
  const size_t esz = dt == DType::F32 ? 4 : 2;
  auto buf = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(n) * esz);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) {
    float v = offset + scale * nd(rng);
    if (dt == DType::F32) {
      std::memcpy(buf->data() + i * 4, &v, 4);
    } else {
      uint16_t h = dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
      std::memcpy(buf->data() + i * 2, &h, 2);
    }
  }
  t.data = buf->data();
  t.nbytes = buf->size();
  t.file = "<synthetic>";
  m.owned.push_back(buf);
  m.tensors.push_back(std::move(t));
}

inline std::shared_ptr<ModelFile> synthetic_model(ModelConfig c, DType dt = DType::F32, uint32_t seed = 1) {
  auto m = std::make_shared<ModelFile>();
  m->path = "<synthetic " + c.arch + ">";
  m->format = "memory";
  if (c.head_dim == 0) c.head_dim = c.dim / c.n_heads;
  if (c.rope_dim == 0) c.rope_dim = c.head_dim;
  m->config = c;
  std::mt19937 rng(seed);
  const int64_t q = static_cast<int64_t>(c.n_heads) * c.head_dim, kv = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
  const float ws = 0.5f / std::sqrt(static_cast<float>(c.dim));
  add_tensor(*m, "token_embd.weight", {c.n_vocab, c.dim}, dt, rng, 1.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add_tensor(*m, b + "attn_norm.weight", {c.dim}, DType::F32, rng, 0.1f, 1.0f);
    add_tensor(*m, b + "attn_q.weight", {q, c.dim}, dt, rng, 2 * ws);
    add_tensor(*m, b + "attn_k.weight", {kv, c.dim}, dt, rng, 2 * ws);
    add_tensor(*m, b + "attn_v.weight", {kv, c.dim}, dt, rng, ws);
    if (c.qkv_bias) {
      add_tensor(*m, b + "attn_q.bias", {q}, DType::F32, rng, 0.2f);
      add_tensor(*m, b + "attn_k.bias", {kv}, DType::F32, rng, 0.2f);
      add_tensor(*m, b + "attn_v.bias", {kv}, DType::F32, rng, 0.2f);
    }
    add_tensor(*m, b + "attn_output.weight", {c.dim, q}, dt, rng, ws);
    add_tensor(*m, b + "ffn_norm.weight", {c.dim}, DType::F32, rng, 0.1f, 1.0f);
    add_tensor(*m, b + "ffn_gate.weight", {c.ffn_dim, c.dim}, dt, rng, ws);
    add_tensor(*m, b + "ffn_up.weight", {c.ffn_dim, c.dim}, dt, rng, ws);
    add_tensor(*m, b + "ffn_down.weight", {c.dim, c.ffn_dim}, dt, rng, ws);
  }
  add_tensor(*m, "output_norm.weight", {c.dim}, DType::F32, rng, 0.1f, 1.0f);
  if (!c.tied_embeddings) add_tensor(*m, "output.weight", {c.n_vocab, c.dim}, dt, rng, ws);
  if (c.rope_scaling.type == "freq_factors") add_tensor(*m, "rope_freqs.weight", {c.rope_dim / 2}, DType::F32, rng, 0.5f, 2.0f);
  return m;
}

inline ModelConfig small_config() {
  ModelConfig c;
  c.n_vocab = 97;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_dim = 96;
  c.context_length = 64;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  return c;
}

}  // namespace lowbit::test
