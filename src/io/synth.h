// Synthetic models: real Llama-family shapes with seeded random weights, written as GGUF that llama.cpp and lowbit
// both load. Honest for speed and memory measurements, never for quality. Tensors are generated and written one
// chunk at a time, so even a 70B file is produced in bounded memory.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lowbit/dtype.h"

namespace lowbit::io {

struct SynthArch {
  std::string name;        // "llama-7b", ...
  std::string gguf_arch;   // "llama" | "qwen2"
  int dim, n_layers, n_heads, n_kv_heads, ffn_dim, n_vocab, context;
  float norm_eps, rope_theta;
  bool tied, qkv_bias;
  int head_dim = 0;      // 0: dim / heads
  // Settings of the architecture's features (io/arch.h says which it has; 0 keeps the descriptor's default):
  int sliding_window = 0, swa_period = 0;
  float attn_softcap = 0, final_softcap = 0;
  float rope_linear = 0;  // the global layers' linear RoPE scaling factor (Gemma 3 4B+: 8)
  float weight_std = 0.02f;
  float qk_std = 0;       // attn_q / attn_k weights' std where it differs: larger attention scores (soft-caps bind)
  int longrope_original = 0;  // > 0: Phi-3's LongRoPE from this original context (factor tensors written)
  // MoE: experts, used per token, each expert's and the shared expert's hidden size (Mixtral: ffn_dim)
  int n_experts = 0, n_experts_used = 0, expert_ffn = 0, shared_ffn = 0;
  std::string family;     // the --arch name when it is not gguf_arch (mixtral: written as llama)
  float router_std = 0;   // the router's weights' std where it differs (sharper routing: the choice matters)
};

// tiny, llama-1b, tinyllama-1.1b, llama-7b, llama-13b, llama-70b, qwen2-0.5b, qwen3-tiny, qwen3-0.6b, gemma2-tiny,
// gemma2-2b, gemma3-tiny, gemma3-1b, gemma3-4b, phi3-tiny, phi3-mini, mixtral-tiny, mixtral-8x7b, qwen2moe-tiny,
// qwen2moe-a2.7b, qwen3moe-tiny, qwen3moe-30b-a3b.
const std::vector<SynthArch>& synth_archs();
// The named architecture, or a lowbit::Error listing the known names.
const SynthArch& synth_arch(const std::string& name);
// By llama.cpp's architecture string and a size: the entry "<arch>-<size>" (or named <size> itself: llama's
// "tiny", "tinyllama-1.1b"), or a lowbit::Error listing that architecture's sizes.
const SynthArch& synth_arch(const std::string& gguf_arch, const std::string& size);

struct SynthOptions {
  std::string arch = "tiny";
  DType dtype = DType::F32;   // F32, F16 or BF16
  uint64_t seed = 0;
  int layers = 0;             // > 0: override the architecture's layer count (small-but-wide test models)
  std::string out;            // the .gguf to write (atomically)
  std::function<void(size_t done, size_t total)> progress;  // per tensor written
};

struct SynthResult {
  int64_t params = 0;
  uint64_t file_bytes = 0;
  size_t tensors = 0;
};

// Weights: normal(0, weight_std) (Irwin-Hall approximation from a counter-based PRNG, so every element depends only on
// seed, tensor and position: the same options give the same bytes); norm weights 1, except the per-head q/k norms:
// 1 + normal(0, 0.25), so a graph that skipped their weights would show. The tensors are the role table's
// (io/arch.h), in its order. Vocabulary: a synthetic SPM
// "llama" vocab: <unk> <s> </s>, the 256 <0xXX> byte tokens, then filler pieces.
SynthResult write_synth_model(const SynthOptions& opts);

}  // namespace lowbit::io
