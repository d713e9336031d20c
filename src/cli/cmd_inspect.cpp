// lowbit inspect MODEL: architecture, hyper-parameters, tokenizer, every tensor (shape, dtype, bytes), bits/weight.
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "cli/common.h"

namespace lowbit::cli {

namespace {

struct InspectArgs {
  std::string model, tokenizer;
  bool json = false, metadata = false;
};

const char* rope_style_name(RopeStyle s) { return s == RopeStyle::Interleaved ? "interleaved" : "half-split"; }

void inspect(const InspectArgs& a) {
  Loaded m = load(a.model, a.tokenizer);
  const ModelFile& f = *m.file;
  const ModelConfig& c = f.config;
  const double bits = 8.0 * static_cast<double>(f.total_bytes());
  const double bpw = f.total_params() > 0 ? bits / static_cast<double>(f.total_params()) : 0;
  std::map<std::string, int> dtype_count;
  auto type_of = [](const TensorInfo& t) { return t.packed.empty() ? std::string(dtype_name(t.dtype)) : t.packed; };
  for (const auto& t : f.tensors) dtype_count[type_of(t)]++;
  const std::string tok_desc = m.tok ? m.tok->describe() : std::string("none");

  if (a.json) {
    nlohmann::json j;
    j["path"] = f.path;
    j["format"] = f.format;
    j["architecture"] = {{"arch", c.arch},
                         {"name", c.name},
                         {"n_vocab", c.n_vocab},
                         {"dim", c.dim},
                         {"n_layers", c.n_layers},
                         {"n_heads", c.n_heads},
                         {"n_kv_heads", c.n_kv_heads},
                         {"head_dim", c.head_dim},
                         {"ffn_dim", c.ffn_dim},
                         {"context_length", c.context_length},
                         {"norm_eps", c.norm_eps},
                         {"rope_theta", c.rope_theta},
                         {"rope_dim", c.rope_dim},
                         {"rope_style", rope_style_name(c.rope_style)},
                         {"rope_scaling", c.rope_scaling.type},
                         {"rope_scaling_factor", c.rope_scaling.factor},
                         {"tied_embeddings", c.tied_embeddings},
                         {"qkv_bias", c.qkv_bias},
                         {"qk_norm", c.qk_norm},
                         {"post_norms", c.post_norms},
                         {"embed_scale", c.embed_scale},
                         {"ffn_activation", c.gelu ? "gelu_tanh" : "silu"},
                         {"attn_softcap", c.attn_softcap},
                         {"final_softcap", c.final_softcap},
                         {"attn_scalar", c.attn_scalar > 0 ? c.attn_scalar : static_cast<float>(c.head_dim)},
                         {"sliding_window", c.sliding_window},
                         {"swa_period", c.swa_period},
                         {"rope_theta_local", c.rope_theta_local},
                         {"fused_qkv", c.fused_qkv},
                         {"fused_gate_up", c.fused_gate_up}};
    j["tokenizer"] = {{"model", f.tokenizer.model}, {"description", tok_desc}, {"n_tokens", f.tokenizer.tokens.size()},
                      {"bos", f.tokenizer.bos}, {"eos", f.tokenizer.eos}, {"add_bos", f.tokenizer.add_bos}};
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : f.tensors)
      ts.push_back({{"name", t.name}, {"shape", t.shape}, {"dtype", type_of(t)}, {"bytes", t.file_bytes()},
                    {"offset", t.file_offset}});
    j["tensors"] = ts;
    j["n_tensors"] = f.tensors.size();
    j["params"] = f.total_params();
    j["bytes"] = f.total_bytes();
    j["bits_per_weight"] = bpw;
    if (a.metadata) {
      nlohmann::json md = nlohmann::json::array();
      for (const auto& e : f.metadata) md.push_back({{"key", e.key}, {"type", e.type}, {"value", e.value}});
      j["metadata"] = md;
    }
    print_json(j);
    return;
  }
  std::printf("model:        %s (%s)\n", f.path.c_str(), f.format.c_str());
  std::printf("architecture: %s%s%s\n", c.arch.c_str(), c.name.empty() ? "" : "  name: ", c.name.c_str());
  std::printf("  vocab %d, dim %d, layers %d, heads %d, kv heads %d, head dim %d, ffn %d, context %d\n", c.n_vocab,
              c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.context_length);
  std::printf("  rms eps %g, rope theta %g, rope dims %d (%s), rope scaling %s", c.norm_eps, c.rope_theta, c.rope_dim,
              rope_style_name(c.rope_style), c.rope_scaling.type.c_str());
  if (c.rope_scaling.type == "linear" || c.rope_scaling.type == "llama3") std::printf(" x%g", c.rope_scaling.factor);
  std::printf("\n  output head %s, q/k/v bias %s, q/k norms %s, ffn %s\n",
              c.tied_embeddings ? "tied to token_embd" : "separate", c.qkv_bias ? "yes" : "no",
              c.qk_norm ? "yes" : "no", c.gelu ? "GeGLU (tanh)" : "SwiGLU");
  if (c.post_norms || c.embed_scale || c.attn_softcap > 0 || c.final_softcap > 0 || c.sliding_window > 0)
    std::printf("  post-norms %s, embeddings x sqrt(dim) %s, soft-caps %g / %g, sliding window %d (period %d, "
                "local rope theta %g)\n",
                c.post_norms ? "yes" : "no", c.embed_scale ? "yes" : "no", c.attn_softcap, c.final_softcap,
                c.sliding_window, c.swa_period, c.rope_theta_local);
  if (c.fused_qkv || c.fused_gate_up)
    std::printf("  fused: %s%s\n", c.fused_qkv ? "attn_qkv " : "", c.fused_gate_up ? "ffn_up (gate | up)" : "");
  std::printf("tokenizer:    %s\n", tok_desc.c_str());
  if (a.metadata) {
    std::printf("metadata (%zu):\n", f.metadata.size());
    for (const auto& e : f.metadata) std::printf("  %-45s %-14s %s\n", e.key.c_str(), e.type.c_str(), e.value.c_str());
  }
  std::printf("tensors (%zu):\n", f.tensors.size());
  std::printf("  %-32s %-22s %-8s %14s\n", "name", "shape", "dtype", "bytes");
  for (const auto& t : f.tensors)
    std::printf("  %-32s %-22s %-8s %14llu\n", t.name.c_str(), t.shape_str().c_str(),
                type_of(t).c_str(), static_cast<unsigned long long>(t.file_bytes()));
  std::printf("types:       ");
  for (const auto& [k, v] : dtype_count) std::printf(" %s x%d", k.c_str(), v);
  std::printf("\ntotal:        %lld parameters, %.2f MiB, %.4f bits per weight\n",
              static_cast<long long>(f.total_params()), static_cast<double>(f.total_bytes()) / (1 << 20), bpw);
}

}  // namespace

void add_inspect(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  auto* cmd = app.add_subcommand("inspect", "Show a model's architecture, tokenizer and tensors");
  cmd->add_option("model", a->model, "GGUF file, Hugging Face directory or llama2.c checkpoint")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "llama2.c tokenizer.bin (default: beside the checkpoint)");
  cmd->add_flag("--metadata", a->metadata, "also list every metadata key");
  cmd->add_flag("--json", a->json, "machine-readable output");
  cmd->callback([a] { inspect(*a); });
}

}  // namespace lowbit::cli
