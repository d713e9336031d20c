// llama.cpp's quantization mixtures ("ftypes": Q4_K_M, Q3_K_M, Q2_K, IQ4_XS, ...) as lowbit presets, so
// `lowbit quantize --format gguf:Q4_K_M` chooses each tensor's ggml type the way llama-quantize does (its
// per-tensor rules for the output head, attn_v, ffn_down and attn_output, and its fallbacks for rows that are not a
// whole number of 256-value super-blocks), whatever algorithm then fills the blocks (plain, importance-weighted,
// GPTQ).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/dtype.h"

namespace lowbit::quant {

struct GgufPreset {
  std::string name;       // "Q4_K_M"
  DType base;             // the type of every tensor no rule changes
  uint32_t file_type;     // general.file_type (llama_ftype) llama-quantize writes for it
  bool very_low_bit = false;  // IQ1_S/M, IQ2_XXS/XS/S/M: own per-tensor rules, and importance data required
};

// The preset for a name (case-insensitive, e.g. "q4_k_m"), or nullopt.
std::optional<GgufPreset> gguf_preset(std::string_view name);
std::vector<std::string> gguf_preset_names();

// What the model looks like to the rules.
struct PresetModelInfo {
  int n_layers = 0;
  int n_gqa = 1;               // n_heads / n_kv_heads
  bool tied_embeddings = false;
  bool is_70b = false;         // llama.cpp's LLM_TYPE_70B: 80 layers with grouped-query attention
  bool has_imatrix = false;    // the linears get importance data (llama-quantize --imatrix): some rules differ
  int n_experts = 0;           // MoE: 8 experts (Mixtral-8x) move attn_v / attn_k to Q8_0, attn_output to Q5_K
};

// The type llama-quantize gives tensor `name` (a 2-D weight with `cols` values per row) under preset p; with
// fallback = false, before fallback_type() (the caller applies and reports it).
DType preset_tensor_type(const GgufPreset& p, const std::string& name, int64_t cols, const PresetModelInfo& m,
                         bool fallback = true);

// llama.cpp's fallback for a row length t cannot hold (cols not a multiple of its block): K/IQ4_XS/IQ2 types become
// IQ4_NL / Q5_0 / Q5_1 / Q8_0, and F16 when even 32 does not divide cols. Returns t itself when it fits.
DType fallback_type(DType t, int64_t cols);

// general.file_type for a file whose weights are mostly of type t (a plain --format q4_K run).
uint32_t file_type_of(DType t);

}  // namespace lowbit::quant
