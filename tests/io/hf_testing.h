// A crafted Hugging Face model directory for tests: safetensors writing and a small llama-shaped model
// (dim 16, 2 layers, 4 heads, 2 kv heads, ffn 24, vocab 40) with patterned weights. Used by the io and quant tests.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/io_testing.h"

namespace lowbit::testing {

using json = nlohmann::json;

struct StTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// A safetensors file (header padded to 8 bytes like the reference writer); `mutate` may edit the header JSON.
inline std::vector<uint8_t> make_safetensors(const std::vector<StTensor>& ts, const std::function<void(json&)>& mutate = {},
                                      bool pad = true) {
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  std::vector<uint8_t> data;
  for (const auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
    off += t.bytes.size();
  }
  if (mutate) mutate(h);
  std::string hs = h.dump();
  while (pad && (8 + hs.size()) % 8) hs += ' ';
  if (!pad && hs.size() % 2 == 0) hs += ' ';  // odd: every tensor lands misaligned
  Bytes b;
  b.u64(hs.size()).raw(hs);
  b.b.insert(b.b.end(), data.begin(), data.end());
  return b.b;
}

inline std::vector<uint8_t> pattern_bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : v) {
    x = x * 1103515245u + 12345u;
    c = static_cast<uint8_t>(x >> 16);
  }
  return v;
}

// A small llama-shaped HF model: dim 16, 2 layers, 4 heads, 2 kv heads, ffn 24, vocab 40.
struct SmallHf {
  json config = {{"architectures", {"LlamaForCausalLM"}},
                 {"model_type", "llama"},
                 {"hidden_size", 16},
                 {"num_hidden_layers", 2},
                 {"num_attention_heads", 4},
                 {"num_key_value_heads", 2},
                 {"intermediate_size", 24},
                 {"vocab_size", 40},
                 {"rms_norm_eps", 1e-5},
                 {"rope_theta", 500000.0},
                 {"max_position_embeddings", 128},
                 {"tie_word_embeddings", false},
                 {"bos_token_id", 1},
                 {"eos_token_id", 2}};
  std::string dtype = "F32";
  bool biases = false;
  int head_dim = 4;       // config["head_dim"] must say so when it is not 16 / 4
  bool qk_norm = false;   // Qwen3's self_attn.q_norm / k_norm (head_dim each)

  // The embedding and head have config["vocab_size"] rows (40 unless a test changes it).
  std::vector<StTensor> tensors() const {
    const size_t es = dtype == "F32" ? 4 : 2;
    const int64_t nv = config.value("vocab_size", 40);
    std::vector<StTensor> ts;
    uint32_t seed = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> shape) {
      size_t n = 1;
      for (auto d : shape) n *= static_cast<size_t>(d);
      ts.push_back({name, dtype, shape, pattern_bytes(n * es, ++seed)});
    };
    add("model.embed_tokens.weight", {nv, 16});
    for (int l = 0; l < 2; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {16});
      const int64_t qd = 4 * head_dim, kvd = 2 * head_dim;
      add(p + "self_attn.q_proj.weight", {qd, 16});
      add(p + "self_attn.k_proj.weight", {kvd, 16});
      add(p + "self_attn.v_proj.weight", {kvd, 16});
      if (biases) {
        add(p + "self_attn.q_proj.bias", {qd});
        add(p + "self_attn.k_proj.bias", {kvd});
        add(p + "self_attn.v_proj.bias", {kvd});
      }
      if (qk_norm) {
        add(p + "self_attn.q_norm.weight", {head_dim});
        add(p + "self_attn.k_norm.weight", {head_dim});
      }
      add(p + "self_attn.o_proj.weight", {16, qd});
      add(p + "post_attention_layernorm.weight", {16});
      add(p + "mlp.gate_proj.weight", {24, 16});
      add(p + "mlp.up_proj.weight", {24, 16});
      add(p + "mlp.down_proj.weight", {16, 24});
    }
    add("model.norm.weight", {16});
    add("lm_head.weight", {nv, 16});
    return ts;
  }
  void write(const std::string& dir) const {
    write_file(dir + "/config.json", config.dump(2));
    write_file(dir + "/model.safetensors", make_safetensors(tensors()));
  }
};

}  // namespace lowbit::testing
