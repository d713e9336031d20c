// The role tables (see arch.h).
#include "io/arch.h"

#include <charconv>

#include "lowbit/model_file.h"

namespace lowbit::io {

const ArchRoles& arch_roles(const ModelConfig&) {
  // One family today; the config will pick among tables once other graphs exist.
  static const ArchRoles kLlama = [] {
    ArchRoles a;
    a.family = "llama";
    using K = TensorKind;
    using P = Presence;
    a.block = {
        {"attn_norm", "weight", K::Norm, Dim::Model, Dim::Model},
        {"attn_q", "weight", K::Linear, Dim::QHeads, Dim::Model, P::Always, Site::AttnIn, true},
        {"attn_k", "weight", K::Linear, Dim::KvHeads, Dim::Model, P::Always, Site::AttnIn, true},
        {"attn_v", "weight", K::Linear, Dim::KvHeads, Dim::Model, P::Always, Site::AttnIn},
        {"attn_q", "bias", K::Bias, Dim::QHeads, Dim::QHeads, P::QkvBias},
        {"attn_k", "bias", K::Bias, Dim::KvHeads, Dim::KvHeads, P::QkvBias},
        {"attn_v", "bias", K::Bias, Dim::KvHeads, Dim::KvHeads, P::QkvBias},
        // Per-head norms of q and k, after the projections (and biases), before RoPE: they act on outputs of
        // attn_q / attn_k, so the input-side transforms (AWQ scales, the residual rotation) stay legal.
        {"attn_q_norm", "weight", K::Norm, Dim::HeadDim, Dim::HeadDim, P::QkNorm},
        {"attn_k_norm", "weight", K::Norm, Dim::HeadDim, Dim::HeadDim, P::QkNorm},
        {"attn_output", "weight", K::Linear, Dim::Model, Dim::QHeads, P::Always, Site::AttnOut},
        {"ffn_norm", "weight", K::Norm, Dim::Model, Dim::Model},
        {"ffn_gate", "weight", K::Linear, Dim::Ffn, Dim::Model, P::Always, Site::FfnIn},
        {"ffn_up", "weight", K::Linear, Dim::Ffn, Dim::Model, P::Always, Site::FfnIn},
        {"ffn_down", "weight", K::Linear, Dim::Model, Dim::Ffn, P::Always, Site::FfnDownIn},
    };
    a.sites = {
        {Site::AttnIn, "attn_in", {"attn_q", "attn_k", "attn_v"}, Producer::Norm, "attn_norm", Dim::Model},
        {Site::AttnOut, "attn_out", {"attn_output"}, Producer::HeadsOfValue, "attn_v", Dim::QHeads},
        {Site::FfnIn, "ffn_in", {"ffn_gate", "ffn_up"}, Producer::Norm, "ffn_norm", Dim::Model},
        {Site::FfnDownIn, "ffn_down_in", {"ffn_down"}, Producer::Elementwise, "ffn_up", Dim::Ffn},
    };
    return a;
  }();
  return kLlama;
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
  }
  return 0;
}

std::vector<int64_t> shape_of(const ModelConfig& c, const BlockTensorRole& r) {
  if (r.kind == TensorKind::Linear) return {dim_size(c, r.rows), dim_size(c, r.cols)};
  return {dim_size(c, r.rows)};
}

bool present(const ModelConfig& c, const BlockTensorRole& r) {
  switch (r.presence) {
    case Presence::QkvBias: return c.qkv_bias;
    case Presence::QkNorm: return c.qk_norm;
    case Presence::Always: return true;
  }
  return true;
}

}  // namespace lowbit::io
