// lowbit io (floor 2): the architecture descriptors -- the one place that knows a graph. Each descriptor names the
// architecture as llama.cpp's GGUF does and as Hugging Face configs do, says which features its graph has (q/k
// norms, post-norms, soft-caps, sliding windows, GeGLU, scaled embeddings), how its files store norms and RoPE
// pairs, which tokenizer its checkpoints ship and which equivalence transforms are legal; its role table says
// which tensors a block has, their shapes, which linear layers share one input, which RMSNorm precedes that input
// and which linear produces it. The loaders (GGUF, HF), validation, the GGUF writer, the graph (model/llama.cpp),
// the quantize pipeline, the equivalence transforms (AWQ folds, rotations) and synth all read it; nothing else
// spells out a block's tensor list or an architecture list. Adding an architecture is one descriptor here plus the
// graph ops it truly needs.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/model_file.h"

namespace lowbit::io {

enum class TensorKind { Linear, Norm, Bias };

// Dimensions a shape is written in (resolved against a ModelConfig by shape_of).
enum class Dim {
  Model, QHeads, KvHeads, Ffn, Vocab, HeadDim,
  Qkv,    // q, k and v rows of a fused attn_qkv
  FfnUp,  // ffn_up's rows: ffn_dim, or 2 * ffn_dim when it holds gate | up (Phi-3)
  Experts, ExpertFfn, SharedFfn,  // MoE: router rows, each expert's and the shared expert's hidden size
};

// Which configs have a tensor.
enum class Presence {
  Always,
  QkvBias,  // ModelConfig::qkv_bias (Qwen2's q/k/v biases)
  QkNorm,   // ModelConfig::qk_norm (Qwen3's and Gemma 3's per-head q/k norms)
  PostNorm, // ModelConfig::post_norms (Gemma's norms of the attention and FFN outputs)
  FusedQkv, // ModelConfig::fused_qkv (Phi-3's attn_qkv)
  SplitQkv, // !fused_qkv: attn_q, attn_k, attn_v
  SplitGateUp, // dense and !fused_gate_up: ffn_gate apart from ffn_up
  Dense,    // n_experts == 0: the dense FFN
  Moe,      // n_experts > 0: router and experts
  Shared,   // shared_ffn_dim > 0: Qwen2-MoE's shared expert
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
  bool per_expert = false;               // 3-D {n_experts, rows, cols}: llama.cpp's merged *_exps tensors
  bool quantized = true;                 // false: kept in float as llama-quantize keeps it (the router)
};

struct SiteRole {
  Site site;
  std::string_view name;                 // for messages and reports
  std::vector<std::string_view> linears; // linears that read this input, in the order the graph runs them
  Producer producer;
  std::string_view producer_role;        // the norm or linear the scales fold into ("attn_norm", "attn_v", "ffn_up")
  Dim width;                             // channels of the input
  bool scalable = true;                  // AWQ may fold scales here (false: the producer is a slice of a fused
                                         // matrix, Phi-3's v rows in attn_qkv or up rows in ffn_up)
};

// Equivalence transforms the graph allows (a graph whose norms are not plain RMSNorm, or whose residual stream
// is read by something other than these linears, says no: Gemma's post-norms re-normalise what a block adds to the
// stream, so a rotation of the stream cannot be folded through them).
struct ArchTransforms {
  bool rotate_residual = true;  // QuaRot R1: RMSNorm weights foldable, the stream rotates through every block
  bool rotate_heads = true;     // R2: per-head rotation of value rows / attention-output columns
};

struct ArchRoles {
  std::string_view family;                 // the descriptor's name ("gemma2")
  std::vector<BlockTensorRole> block;      // every tensor of a block, in graph order
  std::vector<SiteRole> sites;             // indexed by Site
  std::string_view token_embd = "token_embd.weight", output_norm = "output_norm.weight", output = "output.weight";
  bool moe = false;                        // the sparse-FFN form (router, merged experts)
  ArchTransforms transforms;
};

struct ArchDescriptor {
  std::string_view name;                        // llama.cpp's general.architecture ("gemma2"); synth --arch
  std::string_view gguf_name;                   // what a GGUF export says (mistral is written as llama)
  std::vector<std::string_view> hf_model_types; // config.json "model_type" values
  std::vector<std::string_view> hf_classes;     // architectures[0] prefixes, for configs without model_type
  std::vector<std::string_view> hf_prefixes;    // where the text model's tensors live ("model.", and
                                                // "language_model.model." in Gemma 3's multimodal checkpoints)
  std::vector<std::string_view> hf_ignored;     // tensor prefixes of other modalities (vision tower, projector)
  // HF module under "<prefix>layers.<l>." -> block role (weight and bias suffixes follow).
  std::vector<std::pair<std::string_view, std::string_view>> hf_block_names;
  RopeStyle gguf_rope = RopeStyle::HalfSplit;   // pairing of the Q/K rows in GGUF (llama's converter permutes them)
  float hf_norm_offset = 0.0f;                  // HF's RMSNorm multiplies by (offset + w): Gemma's 1. GGUF, and the
                                                // graph, hold the whole factor (llama.cpp's converter adds the 1)
  // Graph features every model of the architecture has (the loaders copy them into ModelConfig):
  bool qk_norm = false, post_norms = false, embed_scale = false, gelu = false, fused_qkv = false, fused_gate_up = false;
  // llama.cpp's defaults where a GGUF lacks the key (0: the feature is off unless the file sets it):
  float attn_softcap = 0.0f, final_softcap = 0.0f;
  int sliding_window = 0, swa_period = 0;
  float rope_theta_local = 0.0f;                // local layers' base when the file has no rope.freq_base_swa
  std::string_view tokenizer;                   // what its checkpoints ship: "spm" or "bpe"
  ArchRoles roles;
  ArchRoles moe_roles;                          // the same graph with a sparse FFN (configs with n_experts > 0)
  bool moe_renorm = true;                       // MoE: top-k weights renormalised (Qwen2-MoE: false)
  bool moe_required = false;                    // every model of it has experts (qwen2moe, qwen3moe)
  bool moe_shared = false;                      // and a shared expert (qwen2moe)
};

// Every architecture lowbit runs, in a fixed order (llama first).
const std::vector<ArchDescriptor>& arch_descriptors();
// By GGUF name, HF model_type, or nullptr.
const ArchDescriptor* find_arch(std::string_view name);
const ArchDescriptor* find_arch_hf(std::string_view model_type);
// "llama, mistral, qwen2, ..." for messages.
std::string known_archs();
// The descriptor of a config's arch; a lowbit::Error naming it and the known ones if there is none.
const ArchDescriptor& arch_of(const ModelConfig& c);
// By name, or a lowbit::Error naming it and the known ones.
const ArchDescriptor& arch_named(std::string_view name);
// Copies the descriptor's always-on features and its llama.cpp defaults into c (loaders then apply the file's keys).
void apply_arch_features(const ArchDescriptor& d, ModelConfig& c);

// The role table of a config's architecture (its MoE form when the config has experts).
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
