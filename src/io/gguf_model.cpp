// GGUF -> ModelFile: the Llama-family config from "<arch>.*" keys, tokenizer from "tokenizer.ggml.*",
// tensors as zero-copy views into the mapping.
#include <algorithm>

#include "io/arch.h"
#include "io/gguf.h"
#include "io/gguf_metadata.h"
#include "io/loaders.h"
#include "io/packed.h"
#include "lowbit/error.h"

namespace lowbit::io {

TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& f) {
  TokenizerSpec t;
  t.source = f.path();
  auto model = f.get_string("tokenizer.ggml.model");
  // A Hugging Face tokenizer.json embedded whole (lowbit writes it, next to llama.cpp's keys, for models quantized
  // from a HF directory): the exact HF tokenizer, so it wins over the tokenizer.ggml.* approximation of it.
  if (auto hf = f.get_string("tokenizer.huggingface.json")) {
    t.model = "hf-json";
    t.json_text = *hf;
    t.add_space_prefix = false;
    if (const auto* tokens = f.get_strings("tokenizer.ggml.tokens")) t.tokens = *tokens;
    if (auto types = f.get_numbers("tokenizer.ggml.token_type"))
      for (double v : *types) t.types.push_back(static_cast<int32_t>(v));
    if (!t.types.empty() && t.types.size() != t.tokens.size())
      fail(f.path(), "tokenizer.ggml.token_type",
           std::to_string(t.types.size()) + " types for " + std::to_string(t.tokens.size()) + " tokens");
  } else if (!model) {
    return t;  // model "none"
  } else {
    t.model = *model;
  }
  if (t.model == "no_vocab" || t.model == "none") {
    t.model = "none";
    return t;
  }
  if (t.model != "llama" && t.model != "gpt2" && t.model != "hf-json")
    fail(f.path(), "tokenizer.ggml.model", "unsupported tokenizer model \"" + t.model + "\" (expected llama or gpt2)");
  if (t.model == "hf-json") {
    const size_t n = t.tokens.size();
    auto id = [&](const char* key) -> int32_t {
      auto x = f.get_int(key);
      return x && *x >= 0 && static_cast<uint64_t>(*x) < n ? static_cast<int32_t>(*x) : -1;
    };
    t.bos = id("tokenizer.ggml.bos_token_id");
    t.eos = id("tokenizer.ggml.eos_token_id");
    t.unk = id("tokenizer.ggml.unknown_token_id");
    t.pad = id("tokenizer.ggml.padding_token_id");
    t.add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(false);
    t.add_eos = f.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
    return t;
  }
  t.pre = f.get_string("tokenizer.ggml.pre").value_or("default");
  const auto* tokens = f.get_strings("tokenizer.ggml.tokens");
  if (!tokens || tokens->empty()) fail(f.path(), "tokenizer.ggml.tokens", "missing or empty token list");
  t.tokens = *tokens;
  const size_t n = t.tokens.size();
  if (auto scores = f.get_numbers("tokenizer.ggml.scores")) {
    if (scores->size() != n)
      fail(f.path(), "tokenizer.ggml.scores",
           std::to_string(scores->size()) + " scores for " + std::to_string(n) + " tokens");
    t.scores.assign(scores->begin(), scores->end());
  }
  if (auto types = f.get_numbers("tokenizer.ggml.token_type")) {
    if (types->size() != n)
      fail(f.path(), "tokenizer.ggml.token_type",
           std::to_string(types->size()) + " types for " + std::to_string(n) + " tokens");
    t.types.reserve(n);
    for (double v : *types) t.types.push_back(static_cast<int32_t>(v));
  }
  if (const auto* merges = f.get_strings("tokenizer.ggml.merges")) t.merges = *merges;
  if (t.model == "gpt2" && t.merges.empty()) fail(f.path(), "tokenizer.ggml.merges", "a gpt2 tokenizer needs merges");

  // Defaults as llama.cpp applies them per tokenizer model.
  if (t.model == "llama") {
    t.bos = 1, t.eos = 2, t.unk = 0, t.add_bos = true, t.add_space_prefix = true;
  } else {
    t.bos = 11, t.eos = 11, t.unk = -1, t.add_bos = false, t.add_space_prefix = false;
  }
  auto id = [&](const char* key, int32_t& dst) {
    const GgufValue* v = f.find(key);
    if (!v) return;
    auto x = f.get_int(key);
    // llama.cpp treats out-of-range ids as "none" (e.g. 4294967295 for an absent separator).
    if (*x < 0 || static_cast<uint64_t>(*x) >= n) {
      dst = -1;
      return;
    }
    dst = static_cast<int32_t>(*x);
  };
  id("tokenizer.ggml.bos_token_id", t.bos);
  id("tokenizer.ggml.eos_token_id", t.eos);
  id("tokenizer.ggml.unknown_token_id", t.unk);
  id("tokenizer.ggml.padding_token_id", t.pad);
  if (t.bos >= static_cast<int32_t>(n)) t.bos = -1;
  if (t.eos >= static_cast<int32_t>(n)) t.eos = -1;
  if (t.unk >= static_cast<int32_t>(n)) t.unk = -1;
  if (auto b = f.get_bool("tokenizer.ggml.add_bos_token")) t.add_bos = *b;
  if (auto b = f.get_bool("tokenizer.ggml.add_eos_token")) t.add_eos = *b;
  if (auto b = f.get_bool("tokenizer.ggml.add_space_prefix")) t.add_space_prefix = *b;
  return t;
}

namespace {

int required_int(const GgufFile& f, const std::string& key, int64_t lo, int64_t hi) {
  auto v = f.get_int(key);
  if (!v) fail(f.path(), key, "missing required metadata key");
  if (*v < lo || *v > hi)
    fail_at(f.path(), key, static_cast<int64_t>(f.find(key)->offset),
            "value " + std::to_string(*v) + " out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int>(*v);
}

}  // namespace

std::shared_ptr<const ModelFile> load_gguf_model(const std::string& path) {
  auto gf = GgufFile::open(path);
  const GgufFile& f = *gf;
  auto m = std::make_shared<ModelFile>();
  m->path = path;
  m->format = "gguf";
  m->mappings.push_back(f.mapping());

  for (const auto& [k, v] : f.kv()) m->metadata.push_back({k, v.type_str(), v.to_string()});

  auto arch = f.get_string("general.architecture");
  if (!arch) fail(path, "general.architecture", "missing required metadata key");
  ModelConfig& c = m->config;
  const ArchDescriptor* desc = find_arch(*arch);
  if (!desc)
    fail(path, "general.architecture", "unsupported architecture \"" + *arch + "\" (known: " + known_archs() + ")");
  apply_arch_features(*desc, c);
  c.rope_style = desc->gguf_rope;  // llama's converter permuted Q/K rows for interleaved pairs
  c.name = f.get_string("general.name").value_or("");
  const std::string a = c.arch + ".";
  constexpr int64_t kBig = 1 << 20;
  c.dim = required_int(f, a + "embedding_length", 1, kBig);
  c.n_layers = required_int(f, a + "block_count", 1, 4096);
  c.n_heads = required_int(f, a + "attention.head_count", 1, 4096);
  c.n_kv_heads = f.find(a + "attention.head_count_kv") ? required_int(f, a + "attention.head_count_kv", 1, 4096)
                                                       : c.n_heads;
  c.ffn_dim = required_int(f, a + "feed_forward_length", 1, 4 * kBig);
  c.context_length = f.find(a + "context_length") ? required_int(f, a + "context_length", 1, 1 << 24) : 2048;
  c.head_dim = f.find(a + "attention.key_length") ? required_int(f, a + "attention.key_length", 1, 4096)
                                                 : (c.dim % c.n_heads == 0 ? c.dim / c.n_heads : 0);
  if (c.head_dim == 0)
    fail(path, a + "attention.head_count", "head count " + std::to_string(c.n_heads) +
                                               " does not divide the embedding length " + std::to_string(c.dim));
  c.rope_dim = f.find(a + "rope.dimension_count") ? required_int(f, a + "rope.dimension_count", 2, c.head_dim)
                                                  : c.head_dim;
  c.norm_eps = static_cast<float>(f.get_float(a + "attention.layer_norm_rms_epsilon").value_or(1e-5));
  c.rope_theta = static_cast<float>(f.get_float(a + "rope.freq_base").value_or(10000.0));
  if (!(c.norm_eps > 0 && c.norm_eps < 1)) fail(path, a + "attention.layer_norm_rms_epsilon", "expected 0 < eps < 1");
  if (!(c.rope_theta > 0)) fail(path, a + "rope.freq_base", "expected a positive rope base");
  if (auto st = f.get_string(a + "rope.scaling.type")) {
    if (*st == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = static_cast<float>(f.get_float(a + "rope.scaling.factor").value_or(1.0));
      if (!(c.rope_scaling.factor > 0)) fail(path, a + "rope.scaling.factor", "expected a positive factor");
    } else if (*st != "none") {
      fail(path, a + "rope.scaling.type", "unsupported rope scaling \"" + *st + "\" (expected none or linear)");
    }
  } else if (auto fs = f.get_float(a + "rope.scale_linear")) {
    c.rope_scaling.type = "linear";
    c.rope_scaling.factor = static_cast<float>(*fs);
  }
  // Mixture of experts: Mixtral is llama with expert counts; qwen2moe / qwen3moe always have experts.
  if (f.find(a + "expert_count") || desc->moe_required) {
    c.n_experts = required_int(f, a + "expert_count", desc->moe_required ? 1 : 0, 4096);
  }
  if (c.n_experts > 0) {
    c.n_experts_used = required_int(f, a + "expert_used_count", 1, c.n_experts);
    c.expert_ffn_dim = f.find(a + "expert_feed_forward_length")
                           ? required_int(f, a + "expert_feed_forward_length", 1, 4 * kBig)
                           : c.ffn_dim;
    if (desc->moe_shared)
      c.shared_ffn_dim = f.find(a + "expert_shared_feed_forward_length")
                             ? required_int(f, a + "expert_shared_feed_forward_length", 1, 4 * kBig)
                             : c.ffn_dim;
  }
  // Gemma: soft-caps, sliding window and its layer pattern, the local layers' RoPE base -- each key optional, with
  // llama.cpp's defaults from the descriptor (Gemma 3 has a window only when the file names one).
  if (desc->attn_softcap > 0)
    c.attn_softcap = static_cast<float>(f.get_float(a + "attn_logit_softcapping").value_or(c.attn_softcap));
  if (desc->post_norms)
    c.final_softcap = static_cast<float>(f.get_float(a + "final_logit_softcapping").value_or(c.final_softcap));
  if (!(c.attn_softcap >= 0)) fail(path, a + "attn_logit_softcapping", "expected a cap >= 0");
  if (!(c.final_softcap >= 0)) fail(path, a + "final_logit_softcapping", "expected a cap >= 0");
  if (desc->swa_period > 0) {
    if (f.find(a + "attention.sliding_window"))
      c.sliding_window = required_int(f, a + "attention.sliding_window", 0, 1 << 24);
    if (f.find(a + "attention.sliding_window_pattern"))
      c.swa_period = required_int(f, a + "attention.sliding_window_pattern", 0, 4096);
    if (desc->rope_theta_local > 0) {
      c.rope_theta_local = static_cast<float>(f.get_float(a + "rope.freq_base_swa").value_or(c.rope_theta_local));
      if (!(c.rope_theta_local > 0)) fail(path, a + "rope.freq_base_swa", "expected a positive rope base");
    }
  }
  // query_pre_attn_scalar has no GGUF key: llama.cpp takes dim / heads for the 27B models (by their layer count)
  // and head_dim for the others (llama_model_gemma2/3::load_arch_hparams).
  if (desc->post_norms) c.attn_scalar = static_cast<float>(gguf_attn_scalar(c));

  for (const auto& t : f.tensors()) {
    TensorInfo ti;
    ti.name = t.name;
    ti.dtype = t.dtype;
    for (auto it = t.ne.rbegin(); it != t.ne.rend(); ++it) ti.shape.push_back(static_cast<int64_t>(*it));
    ti.data = f.tensor_data(t);
    ti.nbytes = t.nbytes;
    ti.file = path;
    ti.file_offset = f.data_offset() + t.offset;
    m->tensors.push_back(std::move(ti));
  }
  // llama3-style scaling is stored by the converter as per-frequency divisors in rope_freqs.weight; Phi-3's
  // LongRoPE as two sets of them, with the original context and an attention factor as keys.
  if (m->find("rope_freqs.weight")) c.rope_scaling.type = "freq_factors";
  if (m->find("rope_factors_long.weight") || m->find("rope_factors_short.weight")) {
    c.rope_scaling.type = "longrope";
    c.rope_scaling.original_context = f.find(a + "rope.scaling.original_context_length")
                                          ? required_int(f, a + "rope.scaling.original_context_length", 1, 1 << 24)
                                          : c.context_length;
    c.rope_scaling.attn_factor = static_cast<float>(f.get_float(a + "rope.scaling.attn_factor").value_or(1.0));
    if (!(c.rope_scaling.attn_factor > 0)) fail(path, a + "rope.scaling.attn_factor", "expected a positive factor");
  }
  c.tied_embeddings = m->find("output.weight") == nullptr;
  c.qkv_bias = m->find("blk.0.attn_q.bias") != nullptr;
  if (const TensorInfo* emb = m->find("token_embd.weight"); emb && emb->shape.size() == 2)
    c.n_vocab = static_cast<int>(emb->shape[0]);

  m->tokenizer = tokenizer_spec_from_gguf(f);
  annotate_packed_tensors(*m, f);
  validate_model(*m);
  return m;
}

}  // namespace lowbit::io
