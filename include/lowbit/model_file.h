// lowbit: the model file as a tensor store. Every input format (GGUF, Hugging Face safetensors directory,
// llama2.c checkpoint) is turned into one ModelFile: the architecture config, the tokenizer description and
// named tensors as typed views into memory-mapped bytes (never copied when the bytes can be used as they are).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/dtype.h"

namespace lowbit {

// How RoPE pairs the dimensions of a head.
//  Interleaved: (x[2i], x[2i+1]) -- llama2.c, and GGUF "llama" (whose Q/K rows were permuted by the converter).
//  HalfSplit:   (x[i], x[i + d/2]) -- Hugging Face Llama/Qwen2 ("rotate_half"), GGUF qwen2 (NeoX style).
enum class RopeStyle { Interleaved, HalfSplit };

struct RopeScaling {
  // "none" | "linear" | "llama3" (HF config) | "freq_factors" (GGUF: divisors in tensor rope_freqs.weight) |
  // "longrope" (Phi-3: divisors in rope_factors_long.weight / rope_factors_short.weight, the long ones where the
  // context exceeds original_context -- llama.cpp's choice by context size, not HF's by current length)
  std::string type = "none";
  float factor = 1.0f;
  float low_freq_factor = 1.0f;    // llama3
  float high_freq_factor = 4.0f;   // llama3
  int original_context = 8192;     // llama3, longrope: original_max_position_embeddings
  float attn_factor = 1.0f;        // longrope: cos and sin (so q and k) multiplied by it
};

struct ModelConfig {
  std::string arch = "llama";  // an architecture descriptor's name (io/arch.h): llama, mistral, qwen2, qwen3, gemma2, gemma3
  std::string name;
  int n_vocab = 0;
  int dim = 0;          // hidden size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;   // GQA/MQA when < n_heads
  int head_dim = 0;     // usually dim / n_heads
  int ffn_dim = 0;
  int context_length = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  int rope_dim = 0;     // dimensions rotated per head (== head_dim for these models)
  RopeStyle rope_style = RopeStyle::Interleaved;
  RopeScaling rope_scaling;
  bool tied_embeddings = false;  // output head reuses token_embd
  bool qkv_bias = false;         // Qwen2
  bool qk_norm = false;          // Qwen3, Gemma 3: RMSNorm over each head of q and k (weights of head_dim) before RoPE
  bool fused_qkv = false;        // Phi-3: one attn_qkv matrix, rows q | k | v
  bool fused_gate_up = false;    // Phi-3: ffn_up holds gate | up (2 * ffn_dim rows)
  // Mixture of experts (Mixtral, Qwen2-MoE, Qwen3-MoE): a router (ffn_gate_inp) scores n_experts SwiGLU experts per
  // token, the n_experts_used best run and their outputs are summed with the softmax weights.
  int n_experts = 0, n_experts_used = 0;
  int expert_ffn_dim = 0;        // each expert's hidden size (Mixtral: ffn_dim)
  int shared_ffn_dim = 0;        // Qwen2-MoE's shared expert, gated by sigmoid(ffn_gate_inp_shexp . x); 0: none
  bool experts_renorm = true;    // the chosen weights renormalised to sum 1 (Mixtral, Qwen3-MoE; not Qwen2-MoE)
  // Gemma 2 / Gemma 3 (set by the loaders from the architecture descriptor and the file's keys):
  bool post_norms = false;       // RMSNorm of the attention and FFN outputs before each residual add
  bool embed_scale = false;      // token embeddings multiplied by sqrt(dim)
  bool gelu = false;             // FFN gate: tanh-approximated GELU (GeGLU) instead of SiLU (SwiGLU)
  float attn_softcap = 0.0f;     // attention scores become cap * tanh(score / cap); 0: none
  float final_softcap = 0.0f;    // output logits likewise
  float attn_scalar = 0.0f;      // scores scaled by 1 / sqrt(attn_scalar) (query_pre_attn_scalar); 0: head_dim
  int sliding_window = 0;        // local layers attend to keys at positions > pos - sliding_window; 0: none
  int swa_period = 0;            // with a window: layer l is local iff l % swa_period < swa_period - 1, every layer
                                 // when 0 (llama.cpp's pattern: Gemma 2 alternates, 2; Gemma 3 5 local : 1 global, 6)
  float rope_theta_local = 0.0f; // local layers' RoPE base, unscaled (Gemma 3); 0: the global base and scaling

  bool is_local(int layer) const {
    return sliding_window > 0 && (swa_period == 0 || layer % swa_period < swa_period - 1);
  }
};

// One tensor, annotated with its shape (outermost dimension first, like numpy / PyTorch):
// a linear layer's weight is {out_features, in_features}; rows are contiguous along in_features.
struct TensorInfo {
  std::string name;           // canonical (GGUF-style) name: "token_embd.weight", "blk.3.attn_q.weight", ...
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  uint64_t nbytes = 0;
  std::string file;           // where the bytes live (for messages)
  uint64_t file_offset = 0;
  // A tensor stored in one of lowbit's packed formats: `packed` names the format ("int4g64a"), shape is the logical
  // {rows, cols}, dtype is I8 and data / nbytes are the encoded rows as stored (rows * row_bytes of the format).
  std::string packed;
  uint64_t stored_bytes = 0;
  uint64_t file_bytes() const { return packed.empty() ? nbytes : stored_bytes; }

  int64_t numel() const;
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }
  std::string shape_str() const;  // "[2048, 128]"
};

// Everything a tokenizer needs, as read from the model files. The tokenizer module turns it into a Tokenizer.
struct TokenizerSpec {
  // "llama"  : SentencePiece-style BPE on scores with byte fallback (GGUF llama vocab, llama2.c tokenizer.bin)
  // "gpt2"   : byte-level BPE on merges with a pre-tokenizer regex (GGUF gpt2 vocab)
  // "hf-json": a Hugging Face tokenizer.json (parsed by the tokenizer module from json_path or json_text)
  // "none"   : the model has no tokenizer
  std::string model = "none";
  std::string pre;                 // GGUF tokenizer.ggml.pre ("default", "llama3", "qwen2", ...)
  std::vector<std::string> tokens;
  std::vector<float> scores;       // empty when the file has none
  std::vector<int32_t> types;      // GGUF token types (1 normal, 2 unknown, 3 control, 4 user, 5 unused, 6 byte)
  std::vector<std::string> merges; // "a b" pairs, rank = index
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = true;
  bool add_eos = false;
  bool add_space_prefix = true;    // SPM: prepend "▁" to the text
  std::string json_path;           // hf-json: the tokenizer.json file, or
  std::string json_text;           // hf-json: its text, when embedded in a GGUF (tokenizer.huggingface.json)
  std::string source;              // the file the tokenizer came from (for messages)
};

// One metadata entry, kept for `lowbit inspect`.
struct MetaEntry {
  std::string key;
  std::string type;   // "u32", "string", "array[string]", ...
  std::string value;  // printable, arrays abbreviated
};

class MappedFile;

struct ModelFile {
  std::string path;     // what the user gave
  std::string format;   // "gguf", "safetensors", "llama2c"
  ModelConfig config;
  TokenizerSpec tokenizer;
  std::vector<MetaEntry> metadata;
  std::vector<TensorInfo> tensors;  // in file order

  const TensorInfo* find(std::string_view name) const;
  // The tensor or a clear error naming the model file and the missing tensor.
  const TensorInfo& get(std::string_view name) const;
  uint64_t total_bytes() const;     // bytes of all tensors as stored in the file
  int64_t total_params() const;

  // Keeps the bytes the views point into alive.
  std::vector<std::shared_ptr<const MappedFile>> mappings;
  std::vector<std::shared_ptr<const std::vector<std::byte>>> owned;
};

struct LoadOptions {
  std::string tokenizer_path;  // llama2.c: tokenizer.bin to use (default: tokenizer.bin or the one tok*.bin beside the model)
};

// Opens a model: a .gguf file, a Hugging Face directory (config.json + safetensors) or a llama2.c checkpoint.
// Throws lowbit::Error with a one-line message naming the file, the field and what was expected.
std::shared_ptr<const ModelFile> load_model(const std::string& path, const LoadOptions& opts = {});

}  // namespace lowbit
