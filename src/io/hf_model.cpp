// Hugging Face directory -> ModelFile: config.json for the architecture, model.safetensors (or an index and its
// shards) for the tensors, renamed to the canonical GGUF names. No Q/K permutation: the graph rotates
// half-split pairs (RopeStyle::HalfSplit), as HF Llama does.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "core/half.h"
#include "io/arch.h"
#include "io/loaders.h"
#include "io/safetensors.h"
#include "core/json_file.h"
#include "lowbit/error.h"
#include "tokenizer/hf_tokenizer.h"

namespace lowbit::io {

namespace {

using nlohmann::json;


std::string describe(const json& v) {
  std::string d = v.dump();
  if (d.size() > 40) d = d.substr(0, 40) + "...";
  return std::string(v.type_name()) + " " + d;
}

// Typed, range-checked access to config.json; every error names the file and the key.
struct ConfigReader {
  std::string file;
  const json& j;

  const json* find(const std::string& key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  int64_t as_int(const json& v, const std::string& key, int64_t lo, int64_t hi) const {
    if (!v.is_number_integer()) fail(file, key, "expected an integer, found " + describe(v));
    const bool ok = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) && v.get<int64_t>() >= lo
                                           : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
    if (!ok)
      fail(file, key, "value " + v.dump() + " out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v.get<int64_t>();
  }
  int req_int(const std::string& key, int64_t lo, int64_t hi) const {
    const json* v = find(key);
    if (!v) fail(file, key, "missing required key (expected an integer)");
    return static_cast<int>(as_int(*v, key, lo, hi));
  }
  std::optional<int64_t> opt_int(const std::string& key, int64_t lo, int64_t hi) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return as_int(*v, key, lo, hi);
  }
  std::optional<double> opt_num(const json& obj, const std::string& key, const std::string& field) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) fail(file, field, "expected a number, found " + describe(*it));
    return it->get<double>();
  }
  std::optional<bool> opt_bool(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) fail(file, key, "expected true or false, found " + describe(*v));
    return v->get<bool>();
  }
  std::optional<std::string> opt_str(const json& obj, const std::string& key, const std::string& field) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) fail(file, field, "expected a string, found " + describe(*it));
    return it->get<std::string>();
  }
};

// The architecture of a config.json: model_type, or for older configs the class in "architectures".
const ArchDescriptor& hf_arch(const ConfigReader& r) {
  std::optional<std::string> model_type = r.opt_str(r.j, "model_type", "model_type");
  if (!model_type) {
    model_type = "llama";
    if (const json* a = r.find("architectures"); a && a->is_array() && !a->empty() && (*a)[0].is_string()) {
      const std::string cls = (*a)[0].get<std::string>();
      for (const ArchDescriptor& d : arch_descriptors())
        for (std::string_view prefix : d.hf_classes)
          if (cls.rfind(prefix, 0) == 0 && !d.hf_model_types.empty()) model_type = std::string(d.hf_model_types[0]);
    }
  }
  const ArchDescriptor* d = find_arch_hf(*model_type);
  if (!d) {
    std::string known;
    for (const ArchDescriptor& a : arch_descriptors())
      for (std::string_view t : a.hf_model_types) known += (known.empty() ? "" : ", ") + std::string(t);
    fail(r.file, "model_type", "unsupported model type \"" + *model_type + "\" (expected " + known + ")");
  }
  return *d;
}

// Gemma's keys on top of the descriptor's features. transformers' Gemma2Config / Gemma3TextConfig defaults are
// llama.cpp's (the descriptor's, which apply_arch_features already set) except the window: 4096 in both configs,
// where a Gemma 3 GGUF without the key has none.
void read_gemma_config(const ConfigReader& r, const ArchDescriptor& d, ModelConfig& c) {
  auto cap = [&](const char* key, float def) {  // null: no cap
    auto it = r.j.find(key);
    if (it == r.j.end()) return def;
    if (it->is_null()) return 0.0f;
    const double v = r.opt_num(r.j, key, key).value_or(0);
    if (!(v >= 0)) fail(r.file, key, "expected a cap >= 0 or null");
    return static_cast<float>(v);
  };
  const bool gemma2 = d.name == "gemma2";
  c.attn_softcap = cap("attn_logit_softcapping", d.attn_softcap);
  c.final_softcap = cap("final_logit_softcapping", d.final_softcap);
  if (!gemma2 && c.attn_softcap > 0)
    fail(r.file, "attn_logit_softcapping", "Gemma 3 has no attention soft-cap (llama.cpp's graph has none)");
  c.attn_scalar = static_cast<float>(r.opt_num(r.j, "query_pre_attn_scalar", "query_pre_attn_scalar").value_or(256));
  if (!(c.attn_scalar > 0)) fail(r.file, "query_pre_attn_scalar", "expected a positive number");
  c.sliding_window = static_cast<int>(r.opt_int("sliding_window", 1, 1 << 24).value_or(4096));
  c.swa_period = gemma2 ? d.swa_period
                        : static_cast<int>(r.opt_int("sliding_window_pattern", 1, 4096).value_or(d.swa_period));
  if (const json* lt = r.find("layer_types")) {
    // Newer configs list each layer; the period is where the first global layer ends it, and every layer must
    // follow it (llama.cpp has no other pattern).
    if (!lt->is_array() || static_cast<int>(lt->size()) != c.n_layers)
      fail(r.file, "layer_types", "expected a list of num_hidden_layers entries, found " + describe(*lt));
    int period = 0;
    for (int l = 0; l < c.n_layers && period == 0; ++l)
      if ((*lt)[l] == "full_attention") period = l + 1;
    c.swa_period = period == 0 ? 0 : period;
    for (int l = 0; l < c.n_layers; ++l) {
      const json& v = (*lt)[l];
      if (v != "sliding_attention" && v != "full_attention")
        fail(r.file, "layer_types[" + std::to_string(l) + "]", "expected sliding_attention or full_attention, found " + describe(v));
      if ((v == "sliding_attention") != c.is_local(l))
        fail(r.file, "layer_types[" + std::to_string(l) + "]",
             "breaks the every-" + std::to_string(period) + "th-layer-global pattern llama.cpp supports");
    }
  }
  if (!gemma2) {
    c.rope_theta_local = static_cast<float>(r.opt_num(r.j, "rope_local_base_freq", "rope_local_base_freq").value_or(d.rope_theta_local));
    if (!(c.rope_theta_local > 0)) fail(r.file, "rope_local_base_freq", "expected a positive number");
  }
}

// What a config says that becomes tensors rather than keys: LongRoPE's factor lists.
struct HfRopeFactors {
  std::vector<float> long_factors, short_factors;
};

std::vector<float> factor_list(const ConfigReader& r, const json& rs, const char* key, int n) {
  const std::string field = std::string("rope_scaling.") + key;
  auto it = rs.find(key);
  if (it == rs.end() || !it->is_array() || static_cast<int>(it->size()) != n)
    fail(r.file, field, "expected a list of " + std::to_string(n) + " numbers (rotary dimensions / 2)");
  std::vector<float> v;
  for (const json& x : *it) {
    if (!x.is_number() || !(x.get<double>() > 0)) fail(r.file, field, "expected positive numbers, found " + describe(x));
    v.push_back(x.get<float>());
  }
  return v;
}

void read_config(const ConfigReader& r, const ArchDescriptor& d, ModelConfig& c, HfRopeFactors& factors) {
  constexpr int64_t kBig = 1 << 20;
  apply_arch_features(d, c);
  c.dim = r.req_int("hidden_size", 1, kBig);
  c.n_layers = r.req_int("num_hidden_layers", 1, 4096);
  c.n_heads = r.req_int("num_attention_heads", 1, 4096);
  c.ffn_dim = r.req_int("intermediate_size", 1, 4 * kBig);
  c.n_vocab = r.req_int("vocab_size", 1, 16 * kBig);
  c.n_kv_heads = static_cast<int>(r.opt_int("num_key_value_heads", 1, 4096).value_or(c.n_heads));
  if (auto hd = r.opt_int("head_dim", 1, 4096)) {
    c.head_dim = static_cast<int>(*hd);
  } else {
    if (c.dim % c.n_heads != 0)
      fail(r.file, "num_attention_heads",
           std::to_string(c.n_heads) + " does not divide hidden_size " + std::to_string(c.dim) + " (and no head_dim)");
    c.head_dim = c.dim / c.n_heads;
  }
  c.rope_dim = c.head_dim;
  if (auto prf = r.opt_num(r.j, "partial_rotary_factor", "partial_rotary_factor")) {
    // llama.cpp's converter: int(factor * hidden_size) // heads
    if (!(*prf > 0 && *prf <= 1)) fail(r.file, "partial_rotary_factor", "expected 0 < factor <= 1");
    c.rope_dim = static_cast<int>(*prf * c.dim) / c.n_heads;
  }
  c.context_length = static_cast<int>(r.opt_int("max_position_embeddings", 1, 1 << 24).value_or(2048));
  c.norm_eps = static_cast<float>(r.opt_num(r.j, "rms_norm_eps", "rms_norm_eps").value_or(1e-6));
  if (!(c.norm_eps > 0 && c.norm_eps < 1)) fail(r.file, "rms_norm_eps", "expected 0 < eps < 1");
  c.rope_theta = static_cast<float>(r.opt_num(r.j, "rope_theta", "rope_theta").value_or(d.name == "gemma3" ? 1e6 : 1e4));
  if (!(c.rope_theta > 0)) fail(r.file, "rope_theta", "expected a positive number");
  c.rope_style = RopeStyle::HalfSplit;
  // transformers' LlamaConfig, MistralConfig and Qwen2Config default to untied embeddings, Gemma's to tied ones.
  c.tied_embeddings = r.opt_bool("tie_word_embeddings").value_or(d.hf_norm_offset != 0);
  c.qkv_bias = c.arch == "qwen2" || r.opt_bool("attention_bias").value_or(false);
  if (d.post_norms) read_gemma_config(r, d, c);

  if (const json* rs = r.find("rope_scaling")) {
    if (!rs->is_object()) fail(r.file, "rope_scaling", "expected an object or null, found " + describe(*rs));
    auto type = r.opt_str(*rs, "rope_type", "rope_scaling.rope_type");
    if (!type) type = r.opt_str(*rs, "type", "rope_scaling.type");
    if (!type) fail(r.file, "rope_scaling.type", "missing (expected linear or llama3)");
    auto num = [&](const char* key, bool required, double def) {
      auto v = r.opt_num(*rs, key, std::string("rope_scaling.") + key);
      if (!v && required) fail(r.file, std::string("rope_scaling.") + key, "missing required key (expected a number)");
      const double x = v.value_or(def);
      if (!(x > 0)) fail(r.file, std::string("rope_scaling.") + key, "expected a positive number");
      return x;
    };
    if (*type == "default") {
      // no scaling
    } else if (*type == "linear") {
      c.rope_scaling.type = "linear";
      c.rope_scaling.factor = static_cast<float>(num("factor", true, 1));
    } else if (*type == "longrope" || *type == "su") {
      // Phi-3: per-dimension divisors for short and long contexts and an attention factor of
      // sqrt(1 + ln(scale) / ln(original)) for scale = max_position_embeddings / original (llama.cpp's converter).
      c.rope_scaling.type = "longrope";
      c.rope_scaling.original_context = static_cast<int>(
          r.opt_int("original_max_position_embeddings", 1, 1 << 24).value_or(c.context_length));
      factors.long_factors = factor_list(r, *rs, "long_factor", c.rope_dim / 2);
      factors.short_factors = factor_list(r, *rs, "short_factor", c.rope_dim / 2);
      const double scale = static_cast<double>(c.context_length) / c.rope_scaling.original_context;
      c.rope_scaling.attn_factor = static_cast<float>(
          scale > 1 ? std::sqrt(1 + std::log(scale) / std::log(static_cast<double>(c.rope_scaling.original_context))) : 1.0);
      if (auto af = r.opt_num(*rs, "attention_factor", "rope_scaling.attention_factor")) c.rope_scaling.attn_factor = static_cast<float>(*af);
    } else if (*type == "llama3") {
      c.rope_scaling.type = "llama3";
      c.rope_scaling.factor = static_cast<float>(num("factor", true, 1));
      c.rope_scaling.low_freq_factor = static_cast<float>(num("low_freq_factor", false, 1));
      c.rope_scaling.high_freq_factor = static_cast<float>(num("high_freq_factor", false, 4));
      c.rope_scaling.original_context = static_cast<int>(num("original_max_position_embeddings", false, 8192));
    } else {
      fail(r.file, "rope_scaling.type", "unsupported rope scaling \"" + *type + "\" (expected linear, llama3 or longrope)");
    }
  }
}

// HF parameter name -> canonical GGUF name. "" = ignore (buffers, other modalities); nullopt = unknown.
std::optional<std::string> canonical_name(const ArchDescriptor& d, const std::string& hf, int n_layers,
                                          const std::string& file) {
  for (std::string_view ignored : d.hf_ignored)
    if (hf.rfind(ignored, 0) == 0) return "";
  if (hf == "lm_head.weight" || hf == "language_model.lm_head.weight") return "output.weight";
  for (std::string_view model_prefix : d.hf_prefixes) {
    const std::string mp(model_prefix);
    if (hf.rfind(mp, 0) != 0) continue;
    const std::string in_model = hf.substr(mp.size());
    if (in_model == "embed_tokens.weight") return "token_embd.weight";
    if (in_model == "norm.weight") return "output_norm.weight";
    const std::string prefix = "layers.";
    if (in_model.rfind(prefix, 0) != 0) continue;
    size_t p = prefix.size(), q = p;
    while (q < in_model.size() && q - p < 6 && in_model[q] >= '0' && in_model[q] <= '9') ++q;
    if (q == p || q >= in_model.size() || in_model[q] != '.') continue;
    const int layer = std::stoi(in_model.substr(p, q - p));
    const std::string rest = in_model.substr(q + 1);
    if (rest == "self_attn.rotary_emb.inv_freq") return "";
    for (const auto& [from, to] : d.hf_block_names) {
      for (const char* suffix : {".weight", ".bias"}) {
        if (rest == std::string(from) + suffix) {
          if (layer >= n_layers)
            fail(file, hf, "layer " + std::to_string(layer) + " is beyond num_hidden_layers " + std::to_string(n_layers));
          return "blk." + std::to_string(layer) + "." + std::string(to) + suffix;
        }
      }
    }
  }
  return std::nullopt;
}

// An f32 / f16 / bf16 vector widened to f32.
void widen_vector_f32(const TensorInfo& t, float* out) {
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (t.dtype == DType::F32) {
      std::memcpy(out + i, t.data + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      out[i] = t.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
}

std::string dir_name(const std::string& dir) {
  std::filesystem::path p(dir);
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

std::shared_ptr<const ModelFile> load_hf_model(const std::string& dir) {
  namespace fs = std::filesystem;
  auto m = std::make_shared<ModelFile>();
  m->path = dir;
  m->format = "safetensors";

  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) fail(config_path, "", "missing: a Hugging Face model directory needs config.json");
  const json cj = read_json_file(config_path);
  if (!cj.is_object()) fail(config_path, "", std::string("expected a JSON object, found ") + cj.type_name());
  const ArchDescriptor& desc = hf_arch(ConfigReader{config_path, cj});
  // Multimodal checkpoints (Gemma3ForConditionalGeneration) keep the language model's settings in text_config.
  const bool nested = cj.contains("text_config") && cj["text_config"].is_object();
  const ConfigReader cfg{nested ? config_path + ": text_config" : config_path, nested ? cj["text_config"] : cj};
  ModelConfig& c = m->config;
  HfRopeFactors rope_factors;
  read_config(cfg, desc, c, rope_factors);
  c.name = dir_name(dir);
  for (auto it = cj.begin(); it != cj.end(); ++it) {
    const json& v = it.value();
    std::string type = v.is_number_integer() ? "int" : v.is_number_float() ? "float" : v.is_boolean() ? "bool" : v.type_name();
    std::string value = v.dump();
    if (value.size() > 200) value = value.substr(0, 200) + "...";
    m->metadata.push_back({it.key(), type, value});
  }

  // The safetensors files: one file, or an index naming the shard of every tensor.
  std::vector<std::string> files;
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  const std::string index_path = (fs::path(dir) / "model.safetensors.index.json").string();
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  if (fs::exists(index_path)) {
    const json ij = read_json_file(index_path);
    auto wm = ij.is_object() ? ij.find("weight_map") : ij.end();
    if (!ij.is_object() || wm == ij.end() || !wm->is_object())
      fail(index_path, "weight_map", "missing or not an object");
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it->is_string()) fail(index_path, "weight_map." + it.key(), "expected a file name, found " + describe(*it));
      const std::string shard = it->get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        fail(index_path, "weight_map." + it.key(), "\"" + shard + "\" is not a file name in the model directory");
      weight_map[it.key()] = shard;
      if (std::find(files.begin(), files.end(), shard) == files.end()) files.push_back(shard);
    }
    if (files.empty()) fail(index_path, "weight_map", "names no tensors");
  } else if (fs::exists(single)) {
    files.push_back("model.safetensors");
  } else {
    fail(dir, "model.safetensors", "missing: expected model.safetensors or model.safetensors.index.json");
  }

  for (const std::string& name : files) {
    const std::string path = (fs::path(dir) / name).string();
    auto sf = SafetensorsFile::open(path);
    m->mappings.push_back(sf->mapping());
    for (const auto& st : sf->tensors()) {
      if (!weight_map.empty()) {
        auto w = weight_map.find(st.name);
        if (w == weight_map.end() || w->second != name) continue;  // the index assigns it elsewhere (or nowhere)
      }
      auto canon = canonical_name(desc, st.name, c.n_layers, path);
      if (!canon) fail(path, "tensor '" + st.name + "'", "unexpected tensor (not part of a " + c.arch + " model)");
      if (canon->empty()) continue;
      if (m->find(*canon)) fail(path, "tensor '" + st.name + "'", "appears twice (as " + *canon + ")");
      TensorInfo t;
      t.name = *canon;
      t.dtype = st.dtype;
      t.shape = st.shape;
      t.nbytes = st.nbytes();
      t.file = path;
      t.file_offset = sf->data_offset() + st.begin;
      t.data = sf->tensor_data(st);
      // Views must be aligned to their element size; copy the rare tensor that is not.
      const size_t esize = st.dtype == DType::F32 ? 4 : 2;
      if (reinterpret_cast<uintptr_t>(t.data) % esize != 0) {
        auto copy = std::make_shared<std::vector<std::byte>>(t.data, t.data + t.nbytes);
        t.data = copy->data();
        m->owned.push_back(std::move(copy));
      }
      m->tensors.push_back(std::move(t));
    }
  }
  if (!weight_map.empty()) {
    // Every tensor the index names must be in its shard.
    for (const auto& [tensor, shard] : weight_map) {
      auto canon = canonical_name(desc, tensor, c.n_layers, index_path);
      if (!canon) fail(index_path, "weight_map." + tensor, "unexpected tensor (not part of a " + c.arch + " model)");
      if (!canon->empty() && !m->find(*canon))
        fail((fs::path(dir) / shard).string(), "tensor '" + tensor + "'", "named by the index but not in the shard");
    }
  }

  // Tied embeddings: one matrix serves both ends. safetensors often keeps only one copy (e.g. lm_head.weight,
  // with "model.embed_tokens.weight" recorded as an alias in __metadata__).
  auto idx = [&](const char* name) {
    for (size_t i = 0; i < m->tensors.size(); ++i)
      if (m->tensors[i].name == name) return static_cast<ptrdiff_t>(i);
    return ptrdiff_t{-1};
  };
  if (c.tied_embeddings) {
    const ptrdiff_t emb = idx("token_embd.weight"), out = idx("output.weight");
    if (emb < 0 && out >= 0) m->tensors[out].name = "token_embd.weight";
    else if (emb >= 0 && out >= 0) m->tensors.erase(m->tensors.begin() + out);
  }

  // LongRoPE's factors as the tensors llama.cpp's converter writes (rope_factors_long / _short.weight).
  for (const auto& [name, v] : {std::pair{"rope_factors_long.weight", &rope_factors.long_factors},
                                std::pair{"rope_factors_short.weight", &rope_factors.short_factors}}) {
    if (v->empty()) continue;
    auto buf = std::make_shared<std::vector<std::byte>>(v->size() * sizeof(float));
    std::memcpy(buf->data(), v->data(), buf->size());
    TensorInfo t;
    t.name = name;
    t.dtype = DType::F32;
    t.shape = {static_cast<int64_t>(v->size())};
    t.data = buf->data();
    t.nbytes = buf->size();
    t.file = config_path;
    m->tensors.push_back(std::move(t));
    m->owned.push_back(std::move(buf));
  }

  // Gemma's RMSNorm multiplies by (1 + w) and its checkpoints store w: the model file holds the whole factor, as
  // llama.cpp's converter writes it (Gemma2Model.modify_tensors adds 1 to every "norm.weight").
  if (desc.hf_norm_offset != 0) {
    const ArchRoles& roles = desc.roles;
    for (TensorInfo& t : m->tensors) {
      const auto ref = parse_block_tensor(roles, t.name);
      if (t.name != roles.output_norm && !(ref && ref->role->kind == TensorKind::Norm)) continue;
      if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
        fail(t.file, t.name, "expected an f32, f16 or bf16 norm weight");
      auto buf = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(t.numel()) * sizeof(float));
      float* v = reinterpret_cast<float*>(buf->data());
      widen_vector_f32(t, v);
      for (int64_t i = 0; i < t.numel(); ++i) v[i] += desc.hf_norm_offset;
      t.dtype = DType::F32;
      t.data = buf->data();
      t.nbytes = buf->size();
      m->owned.push_back(std::move(buf));
    }
  }

  // Tokenizer: tokenizer.json when the directory has one (else the model has none, and the verbs that need
  // one say so).
  if (fs::exists(fs::path(dir) / "tokenizer.json")) m->tokenizer = tokenizer_spec_from_hf_dir(dir);

  validate_model(*m);
  return m;
}

}  // namespace lowbit::io
