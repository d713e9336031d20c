#include "io/gguf_metadata.h"

#include <fstream>
#include <sstream>

#include "io/arch.h"
#include "lowbit/error.h"
#include "tokenizer/hf_tokenizer.h"

namespace lowbit::io {

std::string gguf_arch_of(const ModelConfig& c) {
  const ArchDescriptor* d = find_arch(c.arch);
  if (!d) fail(c.name, "architecture", "cannot write \"" + c.arch + "\" as GGUF (known: " + known_archs() + ")");
  return std::string(d->gguf_name);
}

RopeStyle gguf_rope_style(const std::string& gguf_arch) {
  const ArchDescriptor* d = find_arch(gguf_arch);
  return d ? d->gguf_rope : RopeStyle::HalfSplit;
}

int gguf_attn_scalar(const ModelConfig& c) {
  const bool is_27b = (c.arch == "gemma2" && c.n_layers == 46) || (c.arch == "gemma3" && c.n_layers == 62);
  return is_27b ? c.dim / c.n_heads : c.head_dim;
}

void set_config_metadata(GgufWriter& w, const ModelConfig& c) {
  const std::string arch = gguf_arch_of(c);
  const std::string p = arch + ".";
  auto u32 = [&](const std::string& key, int v) { w.set_u32(p + key, static_cast<uint32_t>(v)); };
  w.set_string("general.architecture", arch);
  if (!c.name.empty()) w.set_string("general.name", c.name);
  u32("context_length", c.context_length > 0 ? c.context_length : 2048);
  u32("embedding_length", c.dim);
  u32("block_count", c.n_layers);
  u32("feed_forward_length", c.ffn_dim);
  u32("attention.head_count", c.n_heads);
  u32("attention.head_count_kv", c.n_kv_heads);
  if (c.head_dim * c.n_heads != c.dim) {
    u32("attention.key_length", c.head_dim);
    u32("attention.value_length", c.head_dim);
  }
  u32("rope.dimension_count", c.rope_dim > 0 ? c.rope_dim : c.head_dim);
  w.set_f32(p + "attention.layer_norm_rms_epsilon", c.norm_eps);
  w.set_f32(p + "rope.freq_base", c.rope_theta);
  if (c.n_vocab > 0) u32("vocab_size", c.n_vocab);
  if (c.rope_scaling.type == "linear") {
    w.set_string(p + "rope.scaling.type", "linear");
    w.set_f32(p + "rope.scaling.factor", c.rope_scaling.factor);
  }
  if (c.rope_scaling.type == "longrope") {  // the factor tensors travel with the model's tensors
    u32("rope.scaling.original_context_length", c.rope_scaling.original_context);
    w.set_f32(p + "rope.scaling.attn_factor", c.rope_scaling.attn_factor);
  }
  const ArchDescriptor& d = arch_of(c);
  if (c.n_experts > 0) {
    u32("expert_count", c.n_experts);
    u32("expert_used_count", c.n_experts_used);
    if (d.moe_required) u32("expert_feed_forward_length", c.expert_ffn_dim);
    if (c.shared_ffn_dim > 0) u32("expert_shared_feed_forward_length", c.shared_ffn_dim);
  }
  // Gemma's keys (llama.cpp reads each; its defaults differ from what a file may need, so all are written).
  if (d.attn_softcap > 0) w.set_f32(p + "attn_logit_softcapping", c.attn_softcap);
  if (d.post_norms) w.set_f32(p + "final_logit_softcapping", c.final_softcap);
  if (d.swa_period > 0 && c.sliding_window > 0) {
    u32("attention.sliding_window", c.sliding_window);
    u32("attention.sliding_window_pattern", c.swa_period);
    if (d.rope_theta_local > 0) w.set_f32(p + "rope.freq_base_swa", c.rope_theta_local);
  }
  if (d.attn_softcap == 0 && c.attn_softcap > 0)
    fail(c.name, "attn_logit_softcapping", "llama.cpp's " + arch + " graph has no attention soft-cap");
  if (c.attn_scalar > 0 && static_cast<int>(c.attn_scalar) != gguf_attn_scalar(c))
    fail(c.name, "query_pre_attn_scalar",
         std::to_string(c.attn_scalar) + " differs from the " + std::to_string(gguf_attn_scalar(c)) +
             " llama.cpp derives for this shape (GGUF has no key for it)");
}

namespace {

// The tokenizer.ggml.* keys of a "llama" or "gpt2" spec (and the special ids every model has).
void set_ggml_vocab(GgufWriter& w, const TokenizerSpec& t) {
  w.set_string("tokenizer.ggml.model", t.model);
  if (!t.pre.empty()) w.set_string("tokenizer.ggml.pre", t.pre);
  w.set_strings("tokenizer.ggml.tokens", t.tokens);
  if (!t.scores.empty()) w.set_f32s("tokenizer.ggml.scores", t.scores);
  if (!t.types.empty()) w.set_i32s("tokenizer.ggml.token_type", t.types);
  if (!t.merges.empty()) w.set_strings("tokenizer.ggml.merges", t.merges);
  if (t.model == "llama") w.set_bool("tokenizer.ggml.add_space_prefix", t.add_space_prefix);
}

}  // namespace

void set_tokenizer_metadata(GgufWriter& w, const TokenizerSpec& t, int n_vocab) {
  if (t.model == "none") return;
  auto set_id = [&](const char* key, int32_t id) {
    if (id >= 0) w.set_u32(key, static_cast<uint32_t>(id));
  };
  if (t.model == "hf-json") {
    // llama.cpp's keys first: a tokenizer llama.cpp cannot reproduce fails here, before anything is written.
    const TokenizerSpec g = ggml_vocab_from_hf(t, n_vocab);
    std::string text = t.json_text;
    if (text.empty()) {
      std::ifstream in(t.json_path, std::ios::binary);
      if (!in) fail(t.json_path, "tokenizer.json", "cannot read it to embed in the output");
      std::ostringstream ss;
      ss << in.rdbuf();
      text = ss.str();
    }
    w.set_string("tokenizer.huggingface.json", text);
    set_ggml_vocab(w, g);
  } else {
    set_ggml_vocab(w, t);
  }
  set_id("tokenizer.ggml.bos_token_id", t.bos);
  set_id("tokenizer.ggml.eos_token_id", t.eos);
  set_id("tokenizer.ggml.unknown_token_id", t.unk);
  set_id("tokenizer.ggml.padding_token_id", t.pad);
  w.set_bool("tokenizer.ggml.add_bos_token", t.add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", t.add_eos);
}

}  // namespace lowbit::io
