// lowbit io (floor 2): the role table of an architecture -- the one place that knows which tensors a block has,
// their shapes, which linear layers share one input, which RMSNorm precedes that input and which linear produces
// it. io validation, the graph (model/llama.cpp: loading, replace_weight), the quantize pipeline and the
// equivalence transforms (AWQ folds, rotations) all read it; nothing else spells out a block's tensor list.
//
// Room for the architectures to come is in the fields, not in new tables: fused weights (qkv, gate_up) are a
// linear with `fused_parts`, post-norms a norm role with `after` set, Gemma's (1 + w) norms `norm_offset`, experts
// a role with `experts` > 0; `transforms` says which equivalence transforms the graph allows.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {
struct ModelConfig;
}

namespace lowbit::io {

enum class TensorKind { Linear, Norm, Bias };

// Dimensions a shape is written in (resolved against a ModelConfig by shape_of).
enum class Dim { Model, QHeads, KvHeads, Ffn, Vocab, HeadDim };

// Which configs have a tensor.
enum class Presence {
  Always,
  QkvBias,  // ModelConfig::qkv_bias (Qwen2's q/k/v biases)
  QkNorm,   // ModelConfig::qk_norm (Qwen3's per-head q/k norms)
};

// Which captured input of a block a linear reads (the order the graph produces them in).
enum class Site : int { AttnIn = 0, AttnOut = 1, FfnIn = 2, FfnDownIn = 3 };
inline constexpr int kSites = 4;

// How the channels of a site's input can be rescaled without changing the block's function: the scale s_j of
// input channel j is multiplied into column j of every linear reading the site and divided out of its producer.
enum class Producer {
  Norm,          // the site is RMSNorm(x) * g: divide g (the norm weight)
  HeadsOfValue,  // attention output: channel (head h, d) is a convex sum of value row (kv head h / group, d);
                 // divide those value rows (and the v bias), so the scales must agree within each KV group
  Elementwise,   // silu(gate) * up: divide up's row j
};

struct BlockTensorRole {
  std::string_view role;   // "attn_q" in "blk.<l>.attn_q.weight"
  std::string_view suffix; // "weight" or "bias"
  TensorKind kind;
  Dim rows, cols;          // shape {rows, cols}; 1-D tensors use rows only (cols ignored)
  Presence presence = Presence::Always;
  Site site = Site::AttnIn;              // Linear: the input it reads
  bool feeds_scores = false;             // q / k: its output only meets the others' through q.k scores, so its
                                         // error is not judged by its own output alone (AWQ's clip skips it)
};

struct SiteRole {
  Site site;
  std::string_view name;                 // for messages and reports
  std::vector<std::string_view> linears; // linears that read this input, in the order the graph runs them
  Producer producer;
  std::string_view producer_role;        // the norm or linear the scales fold into ("attn_norm", "attn_v", "ffn_up")
  Dim width;                             // channels of the input
};

// Equivalence transforms the graph allows (a graph whose norms are not plain RMSNorm, or whose residual stream
// is read by something other than these linears, would say no).
struct ArchTransforms {
  bool rotate_residual = true;  // QuaRot R1: RMSNorm weights foldable, the stream rotates through every block
  bool rotate_heads = true;     // R2: per-head rotation of value rows / attention-output columns
  bool scale_sites = true;      // AWQ: per-channel scales folded into norms and producers
};

struct ArchRoles {
  std::string_view family;                 // "llama"
  std::vector<BlockTensorRole> block;      // every tensor of a block, in graph order
  std::vector<SiteRole> sites;             // indexed by Site
  std::string_view token_embd = "token_embd.weight", output_norm = "output_norm.weight", output = "output.weight";
  float norm_offset = 0.0f;                // a norm multiplies by (norm_offset + w); Gemma would say 1
  int experts = 0;                         // MoE: expert tensors per block (0: dense)
  ArchTransforms transforms;
};

// The role table of the Llama-family graph (Llama 1/2/3, Mistral, Qwen2, Qwen3, SmolLM, TinyLlama).
const ArchRoles& arch_roles(const ModelConfig& c);

// A parsed block tensor name.
struct BlockTensorRef {
  int layer = -1;
  const BlockTensorRole* role = nullptr;
};
// "blk.<l>.<role>.<suffix>" -> the layer and its row in the table; nullopt for tensors outside the blocks or roles
// the table does not know.
std::optional<BlockTensorRef> parse_block_tensor(const ArchRoles& a, std::string_view name);
// The layer of "blk.<l>....", or -1.
int layer_of_name(std::string_view name);
// "blk.<l>.<role>.<suffix>"
std::string block_tensor_name(int layer, std::string_view role, std::string_view suffix = "weight");
// The table row of a block role (e.g. "attn_v", "weight"), or nullptr.
const BlockTensorRole* find_role(const ArchRoles& a, std::string_view role, std::string_view suffix = "weight");
int64_t dim_size(const ModelConfig& c, Dim d);
// Expected shape of a block tensor under a config (outermost first).
std::vector<int64_t> shape_of(const ModelConfig& c, const BlockTensorRole& r);
// Whether the config has this tensor (Presence).
bool present(const ModelConfig& c, const BlockTensorRole& r);

}  // namespace lowbit::io
