// The architecture descriptors and their role tables (see arch.h).
#include "io/arch.h"

#include <charconv>

#include "lowbit/error.h"

namespace lowbit::io {

namespace {

// The block of the one transformer graph (model/llama.cpp): every architecture's tensors are this table's rows,
// each present or not by its Presence.
std::vector<BlockTensorRole> block_roles() {
  using K = TensorKind;
  using P = Presence;
  return {
      {"attn_norm", "weight", K::Norm, Dim::Model, Dim::Model},
      {"attn_q", "weight", K::Linear, Dim::QHeads, Dim::Model, P::SplitQkv, Site::AttnIn, true},
      {"attn_k", "weight", K::Linear, Dim::KvHeads, Dim::Model, P::SplitQkv, Site::AttnIn, true},
      {"attn_v", "weight", K::Linear, Dim::KvHeads, Dim::Model, P::SplitQkv, Site::AttnIn},
      {"attn_qkv", "weight", K::Linear, Dim::Qkv, Dim::Model, P::FusedQkv, Site::AttnIn},
      {"attn_q", "bias", K::Bias, Dim::QHeads, Dim::QHeads, P::QkvBias},
      {"attn_k", "bias", K::Bias, Dim::KvHeads, Dim::KvHeads, P::QkvBias},
      {"attn_v", "bias", K::Bias, Dim::KvHeads, Dim::KvHeads, P::QkvBias},
      // Per-head norms of q and k, after the projections (and biases), before RoPE: they act on outputs of
      // attn_q / attn_k, so the input-side transforms (AWQ scales, the residual rotation) stay legal.
      {"attn_q_norm", "weight", K::Norm, Dim::HeadDim, Dim::HeadDim, P::QkNorm},
      {"attn_k_norm", "weight", K::Norm, Dim::HeadDim, Dim::HeadDim, P::QkNorm},
      {"attn_output", "weight", K::Linear, Dim::Model, Dim::QHeads, P::Always, Site::AttnOut},
      // Gemma: the attention output is normed before the residual add (acts on attn_output's output).
      {"post_attention_norm", "weight", K::Norm, Dim::Model, Dim::Model, P::PostNorm},
      {"ffn_norm", "weight", K::Norm, Dim::Model, Dim::Model},
      {"ffn_gate", "weight", K::Linear, Dim::Ffn, Dim::Model, P::SplitGateUp, Site::FfnIn},
      {"ffn_up", "weight", K::Linear, Dim::FfnUp, Dim::Model, P::Dense, Site::FfnIn},
      {"ffn_down", "weight", K::Linear, Dim::Model, Dim::Ffn, P::Dense, Site::FfnDownIn},
      // MoE: the router (kept in float, as llama-quantize keeps it), the experts merged into 3-D tensors as
      // llama.cpp stores them, Qwen2-MoE's shared expert and its sigmoid gate (a vector over the FFN input).
      {"ffn_gate_inp", "weight", K::Linear, Dim::Experts, Dim::Model, P::Moe, Site::FfnIn, false, false, false},
      {"ffn_gate_exps", "weight", K::Linear, Dim::ExpertFfn, Dim::Model, P::Moe, Site::FfnIn, false, true},
      {"ffn_up_exps", "weight", K::Linear, Dim::ExpertFfn, Dim::Model, P::Moe, Site::FfnIn, false, true},
      {"ffn_down_exps", "weight", K::Linear, Dim::Model, Dim::ExpertFfn, P::Moe, Site::FfnDownIn, false, true},
      {"ffn_gate_inp_shexp", "weight", K::Bias, Dim::Model, Dim::Model, P::Shared},
      {"ffn_gate_shexp", "weight", K::Linear, Dim::SharedFfn, Dim::Model, P::Shared, Site::FfnIn},
      {"ffn_up_shexp", "weight", K::Linear, Dim::SharedFfn, Dim::Model, P::Shared, Site::FfnIn},
      {"ffn_down_shexp", "weight", K::Linear, Dim::Model, Dim::SharedFfn, P::Shared, Site::FfnDownIn},
      {"post_ffw_norm", "weight", K::Norm, Dim::Model, Dim::Model, P::PostNorm},
  };
}

std::vector<SiteRole> site_roles() {
  return {
      {Site::AttnIn, "attn_in", {"attn_q", "attn_k", "attn_v"}, Producer::Norm, "attn_norm", Dim::Model},
      {Site::AttnOut, "attn_out", {"attn_output"}, Producer::HeadsOfValue, "attn_v", Dim::QHeads},
      {Site::FfnIn, "ffn_in", {"ffn_gate", "ffn_up"}, Producer::Norm, "ffn_norm", Dim::Model},
      {Site::FfnDownIn, "ffn_down_in", {"ffn_down"}, Producer::Elementwise, "ffn_up", Dim::Ffn},
  };
}

// Hugging Face's module names inside a decoder layer (LlamaDecoderLayer and its copies).
const std::vector<std::pair<std::string_view, std::string_view>> kHfLlamaBlock = {
    {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"},   {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"},    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},       {"input_layernorm", "attn_norm"}, {"post_attention_layernorm", "ffn_norm"},
    {"self_attn.q_norm", "attn_q_norm"}, {"self_attn.k_norm", "attn_k_norm"},
};
// Gemma2DecoderLayer / Gemma3DecoderLayer: four norms; "post_attention_layernorm" is the attention output's
// post-norm there, not the FFN's pre-norm (llama.cpp's tensor_mapping.py maps it the same way).
const std::vector<std::pair<std::string_view, std::string_view>> kHfGemmaBlock = {
    {"self_attn.q_proj", "attn_q"},          {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},          {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_proj", "ffn_gate"},           {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},           {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "post_attention_norm"}, {"pre_feedforward_layernorm", "ffn_norm"},
    {"post_feedforward_layernorm", "post_ffw_norm"},     {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},
};
// Phi3DecoderLayer: fused qkv_proj and gate_up_proj.
const std::vector<std::pair<std::string_view, std::string_view>> kHfPhi3Block = {
    {"self_attn.qkv_proj", "attn_qkv"}, {"self_attn.o_proj", "attn_output"},  {"mlp.gate_up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},      {"input_layernorm", "attn_norm"},      {"post_attention_layernorm", "ffn_norm"},
};

std::vector<ArchDescriptor> make_descriptors() {
  std::vector<ArchDescriptor> out;
  auto add = [&](ArchDescriptor d) {
    d.roles.family = d.name;
    d.roles.block = block_roles();
    if (d.roles.sites.empty()) d.roles.sites = site_roles();
    // The MoE form: the same attention sites; the FFN's are per expert, so no transform folds through them yet.
    d.moe_roles = d.roles;
    d.moe_roles.sites = {d.roles.sites[0], d.roles.sites[1],
                         {Site::FfnIn, "ffn_in", {"ffn_gate_inp", "ffn_gate_exps", "ffn_up_exps"}, Producer::Norm,
                          "ffn_norm", Dim::Model, false},
                         {Site::FfnDownIn, "ffn_down_in", {"ffn_down_exps"}, Producer::Elementwise, "ffn_up_exps",
                          Dim::ExpertFfn, false}};
    d.moe_roles.moe = true;
    d.moe_roles.transforms = {false, false};
    if (d.gguf_name.empty()) d.gguf_name = d.name;
    if (d.hf_prefixes.empty()) d.hf_prefixes = {"model."};
    if (d.hf_block_names.empty()) d.hf_block_names = kHfLlamaBlock;
    out.push_back(std::move(d));
  };
  {
    ArchDescriptor d;
    d.name = "llama";  // Llama 1/2/3, SmolLM, TinyLlama
    d.hf_model_types = {"llama"};
    d.hf_classes = {"Llama"};
    d.gguf_rope = RopeStyle::Interleaved;
    d.tokenizer = "spm";
    add(d);
    d.name = "mistral";
    d.gguf_name = "llama";
    d.hf_model_types = {"mistral"};
    d.hf_classes = {"Mistral"};
    add(d);
  }
  {
    ArchDescriptor d;
    d.name = "qwen2";  // q/k/v biases
    d.hf_model_types = {"qwen2"};
    d.hf_classes = {"Qwen2"};
    d.tokenizer = "bpe";
    add(d);
    d.name = "qwen3";  // per-head q/k norms, no biases
    d.hf_model_types = {"qwen3"};
    d.hf_classes = {"Qwen3"};
    d.qk_norm = true;
    add(d);
    d.name = "qwen3moe";  // Qwen3's attention, a sparse FFN with renormalised top-k
    d.hf_model_types = {"qwen3_moe"};
    d.hf_classes = {"Qwen3Moe"};
    d.moe_required = true;
    add(d);
  }
  {
    ArchDescriptor d;
    d.name = "qwen2moe";  // Qwen2's attention (q/k/v biases), top-k without renormalisation, a shared expert
    d.hf_model_types = {"qwen2_moe"};
    d.hf_classes = {"Qwen2Moe"};
    d.tokenizer = "bpe";
    d.moe_required = d.moe_shared = true;
    d.moe_renorm = false;
    add(d);
  }
  {
    ArchDescriptor d;
    d.name = "gemma2";
    d.hf_model_types = {"gemma2"};
    d.hf_classes = {"Gemma2"};
    d.hf_norm_offset = 1.0f;
    d.hf_block_names = kHfGemmaBlock;
    d.post_norms = d.embed_scale = d.gelu = true;
    d.attn_softcap = 50.0f, d.final_softcap = 30.0f;  // llama.cpp's llama_hparams defaults
    d.sliding_window = 4096, d.swa_period = 2;        // llama_model_gemma2::load_arch_hparams
    d.tokenizer = "spm";
    d.roles.transforms.rotate_residual = false;       // post-norms
    add(d);
    d.name = "gemma3";  // q/k norms instead of soft-capping; 5 local : 1 global layers with their own RoPE base
    d.hf_model_types = {"gemma3_text", "gemma3"};
    d.hf_classes = {"Gemma3"};
    d.hf_prefixes = {"model.", "language_model.model.", "model.language_model."};
    d.hf_ignored = {"vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."};
    d.qk_norm = true;
    d.attn_softcap = 0.0f, d.final_softcap = 0.0f;
    d.sliding_window = 0, d.swa_period = 6;           // llama_model_gemma3: a window only when the file has one
    d.rope_theta_local = 10000.0f;                    // llama_hparams::rope_freq_base_train_swa's default
    add(d);
  }
  {
    ArchDescriptor d;
    d.name = "phi3";  // fused qkv and gate_up; LongRoPE (llama.cpp disables its sliding window, and so do we)
    d.hf_model_types = {"phi3"};
    d.hf_classes = {"Phi3"};
    d.hf_block_names = kHfPhi3Block;
    d.fused_qkv = d.fused_gate_up = true;
    d.tokenizer = "spm";
    d.roles.sites = {
        {Site::AttnIn, "attn_in", {"attn_qkv"}, Producer::Norm, "attn_norm", Dim::Model},
        {Site::AttnOut, "attn_out", {"attn_output"}, Producer::HeadsOfValue, "attn_qkv", Dim::QHeads, false},
        {Site::FfnIn, "ffn_in", {"ffn_up"}, Producer::Norm, "ffn_norm", Dim::Model},
        {Site::FfnDownIn, "ffn_down_in", {"ffn_down"}, Producer::Elementwise, "ffn_up", Dim::Ffn, false},
    };
    d.roles.transforms.rotate_heads = false;  // the value rows are a slice of attn_qkv
    add(d);
  }
  return out;
}

}  // namespace

const std::vector<ArchDescriptor>& arch_descriptors() {
  static const std::vector<ArchDescriptor> kArchs = make_descriptors();
  return kArchs;
}

const ArchDescriptor* find_arch(std::string_view name) {
  for (const auto& d : arch_descriptors())
    if (d.name == name) return &d;
  return nullptr;
}

const ArchDescriptor* find_arch_hf(std::string_view model_type) {
  for (const auto& d : arch_descriptors())
    for (std::string_view t : d.hf_model_types)
      if (t == model_type) return &d;
  return nullptr;
}

std::string known_archs() {
  std::string s;
  for (const auto& d : arch_descriptors()) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

const ArchDescriptor& arch_of(const ModelConfig& c) {
  if (const ArchDescriptor* d = find_arch(c.arch)) return *d;
  fail(c.name, "architecture", "unknown architecture \"" + c.arch + "\" (known: " + known_archs() + ")");
}

const ArchDescriptor& arch_named(std::string_view name) {
  if (const ArchDescriptor* d = find_arch(name)) return *d;
  fail("", "architecture", "unknown architecture \"" + std::string(name) + "\" (known: " + known_archs() + ")");
}

void apply_arch_features(const ArchDescriptor& d, ModelConfig& c) {
  c.arch = std::string(d.name);
  c.qk_norm = d.qk_norm;
  c.fused_qkv = d.fused_qkv;
  c.fused_gate_up = d.fused_gate_up;
  c.experts_renorm = d.moe_renorm;
  c.post_norms = d.post_norms;
  c.embed_scale = d.embed_scale;
  c.gelu = d.gelu;
  c.attn_softcap = d.attn_softcap;
  c.final_softcap = d.final_softcap;
  c.sliding_window = d.sliding_window;
  c.swa_period = d.swa_period;
  c.rope_theta_local = d.rope_theta_local;
}

const ArchRoles& arch_roles(const ModelConfig& c) {
  const ArchDescriptor& d = arch_of(c);
  return c.n_experts > 0 ? d.moe_roles : d.roles;
}

int layer_of_name(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  const std::string_view rest = name.substr(4);
  int l = -1;
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), l);
  if (ec != std::errc() || p == rest.data() || p == rest.data() + rest.size() || *p != '.' || l < 0) return -1;
  return l;
}

std::optional<BlockTensorRef> parse_block_tensor(const ArchRoles& a, std::string_view name) {
  const int l = layer_of_name(name);
  if (l < 0) return std::nullopt;
  std::string_view rest = name.substr(name.find('.', 4) + 1);  // "<role>.<suffix>"
  const size_t dot = rest.rfind('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const BlockTensorRole* r = find_role(a, rest.substr(0, dot), rest.substr(dot + 1));
  if (!r) return std::nullopt;
  return BlockTensorRef{l, r};
}

std::string block_tensor_name(int layer, std::string_view role, std::string_view suffix) {
  return "blk." + std::to_string(layer) + "." + std::string(role) + "." + std::string(suffix);
}

const BlockTensorRole* find_role(const ArchRoles& a, std::string_view role, std::string_view suffix) {
  for (const auto& r : a.block)
    if (r.role == role && r.suffix == suffix) return &r;
  return nullptr;
}

int64_t dim_size(const ModelConfig& c, Dim d) {
  switch (d) {
    case Dim::Model: return c.dim;
    case Dim::QHeads: return static_cast<int64_t>(c.n_heads) * c.head_dim;
    case Dim::KvHeads: return static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    case Dim::Ffn: return c.ffn_dim;
    case Dim::Vocab: return c.n_vocab;
    case Dim::HeadDim: return c.head_dim;
    case Dim::Qkv: return static_cast<int64_t>(c.n_heads + 2 * c.n_kv_heads) * c.head_dim;
    case Dim::FfnUp: return static_cast<int64_t>(c.ffn_dim) * (c.fused_gate_up ? 2 : 1);
    case Dim::Experts: return c.n_experts;
    case Dim::ExpertFfn: return c.expert_ffn_dim;
    case Dim::SharedFfn: return c.shared_ffn_dim;
  }
  return 0;
}

std::vector<int64_t> shape_of(const ModelConfig& c, const BlockTensorRole& r) {
  if (r.kind == TensorKind::Linear && r.per_expert) return {c.n_experts, dim_size(c, r.rows), dim_size(c, r.cols)};
  if (r.kind == TensorKind::Linear) return {dim_size(c, r.rows), dim_size(c, r.cols)};
  return {dim_size(c, r.rows)};
}

bool present(const ModelConfig& c, const BlockTensorRole& r) {
  switch (r.presence) {
    case Presence::QkvBias: return c.qkv_bias;
    case Presence::QkNorm: return c.qk_norm;
    case Presence::PostNorm: return c.post_norms;
    case Presence::FusedQkv: return c.fused_qkv;
    case Presence::SplitQkv: return !c.fused_qkv;
    case Presence::SplitGateUp: return !c.fused_gate_up && c.n_experts == 0;
    case Presence::Dense: return c.n_experts == 0;
    case Presence::Moe: return c.n_experts > 0;
    case Presence::Shared: return c.n_experts > 0 && c.shared_ffn_dim > 0;
    case Presence::Always: return true;
  }
  return true;
}

}  // namespace lowbit::io
