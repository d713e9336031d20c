#include "io/gguf_metadata.h"

#include <fstream>
#include <sstream>

#include "lowbit/error.h"
#include "tokenizer/hf_tokenizer.h"

namespace lowbit::io {

std::string gguf_arch_of(const ModelConfig& c) {
  if (c.arch == "qwen2" || c.arch == "qwen3") return c.arch;
  if (c.arch == "llama" || c.arch == "mistral") return "llama";
  fail(c.name, "architecture", "cannot write \"" + c.arch + "\" as GGUF (expected llama, mistral, qwen2 or qwen3)");
}

RopeStyle gguf_rope_style(const std::string& gguf_arch) {
  return gguf_arch == "qwen2" || gguf_arch == "qwen3" ? RopeStyle::HalfSplit : RopeStyle::Interleaved;
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
