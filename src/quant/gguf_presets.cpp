// llama.cpp's quantization mixtures: the per-tensor type rules of llama-quantize for the presets lowbit offers.
#include "quant/gguf_presets.h"

#include "io/arch.h"

#include <array>
#include <cctype>
#include <cstdio>

namespace lowbit::quant {

namespace {

constexpr std::array<std::pair<const char*, std::pair<DType, uint32_t>>, 27> kPresets = {{
    {"Q4_0", {DType::Q4_0, 2}},     {"Q4_1", {DType::Q4_1, 3}},     {"Q8_0", {DType::Q8_0, 7}},
    {"Q5_0", {DType::Q5_0, 8}},     {"Q5_1", {DType::Q5_1, 9}},     {"Q2_K", {DType::Q2_K, 10}},
    {"Q3_K_S", {DType::Q3_K, 11}},  {"Q3_K_M", {DType::Q3_K, 12}},  {"Q3_K_L", {DType::Q3_K, 13}},
    {"Q4_K_S", {DType::Q4_K, 14}},  {"Q4_K_M", {DType::Q4_K, 15}},  {"Q5_K_S", {DType::Q5_K, 16}},
    {"Q5_K_M", {DType::Q5_K, 17}},  {"Q6_K", {DType::Q6_K, 18}},    {"Q2_K_S", {DType::Q2_K, 21}},
    {"IQ4_NL", {DType::IQ4_NL, 25}}, {"IQ4_XS", {DType::IQ4_XS, 30}}, {"IQ2_XXS", {DType::IQ2_XXS, 19}},
    {"IQ2_XS", {DType::IQ2_XS, 20}}, {"IQ3_XS", {DType::IQ3_S, 22}},    {"IQ3_XXS", {DType::IQ3_XXS, 23}},
    {"IQ1_S", {DType::IQ1_S, 24}},   {"IQ3_S", {DType::IQ3_S, 26}},     {"IQ3_M", {DType::IQ3_S, 27}},
    {"IQ2_S", {DType::IQ2_XS, 28}},  {"IQ2_M", {DType::IQ2_S, 29}},     {"IQ1_M", {DType::IQ1_M, 31}},
}};

// llama.cpp's very-low-bit presets: rules of their own for every role, and llama-quantize refuses them without
// an imatrix.
bool very_low_bit(std::string_view ft) {
  return ft == "IQ2_XXS" || ft == "IQ2_XS" || ft == "IQ1_S" || ft == "IQ2_S" || ft == "IQ2_M" || ft == "IQ1_M";
}

std::string upper(std::string_view s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return r;
}

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between get more bits.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

}  // namespace

std::optional<GgufPreset> gguf_preset(std::string_view name) {
  const std::string want = upper(name);
  for (const auto& [n, v] : kPresets)
    if (want == n) return GgufPreset{n, v.first, v.second, very_low_bit(n)};
  return std::nullopt;
}

std::vector<std::string> gguf_preset_names() {
  std::vector<std::string> r;
  for (const auto& p : kPresets) r.emplace_back(p.first);
  return r;
}

DType fallback_type(DType t, int64_t cols) {
  const DTypeInfo info = dtype_info(t);
  if (cols % info.block == 0) return t;
  DType f = t;
  switch (t) {
    case DType::Q2_K: case DType::Q3_K: case DType::IQ4_XS: case DType::IQ2_XXS: case DType::IQ2_XS:
    case DType::IQ2_S: case DType::IQ3_XXS: case DType::IQ3_S: case DType::IQ1_S: case DType::IQ1_M:
      f = DType::IQ4_NL;
      break;
    case DType::Q4_K: f = DType::Q5_0; break;
    case DType::Q5_K: f = DType::Q5_1; break;
    case DType::Q6_K: f = DType::Q8_0; break;
    default: break;
  }
  if (cols % dtype_info(f).block != 0) f = DType::F16;
  return f;
}

DType preset_tensor_type(const GgufPreset& p, const std::string& name, int64_t cols, const PresetModelInfo& m,
                         bool fallback) {
  const std::string ft = p.name;
  DType t = p.base;
  // "blk.<l>.<role>.weight" -> (l, role), parsed where every block name is (io/arch.h)
  int layer = io::layer_of_name(name);
  std::string r;
  if (layer >= 0) {
    const std::string_view rest = std::string_view(name).substr(name.find('.', 4) + 1);
    if (rest.size() > 7 && rest.substr(rest.size() - 7) == ".weight" && rest.find('.') == rest.size() - 7)
      r = std::string(rest.substr(0, rest.size() - 7));
    else
      layer = -1;
  }
  // llama.cpp (81ff7abe5) sorts tensors into categories by substring: a fused attn_qkv falls under attn_v's rules
  // (category_is_attn_v), the experts' and shared expert's ffn_down_exps / ffn_down_shexp under ffn_down's (the
  // layer parsed from the name, as its layer_info does for MoE).
  if (r == "attn_qkv") r = "attn_v";
  if (r.rfind("ffn_down", 0) == 0) r = "ffn_down";
  const int n = m.n_layers;
  const bool is_output = name == "output.weight" || (m.tied_embeddings && name == "token_embd.weight");
  // The very-low-bit presets' rules: IQ2_S / IQ2_M move up to IQ3_S where the others take Q2_K.
  const bool low = p.very_low_bit;
  const bool s_or_m = ft == "IQ2_S" || ft == "IQ2_M";
  if (is_output) {
    // Q8_0 when the row does not fill the base type's blocks (then Q6_K's, below, may still fall back to Q8_0).
    if (cols % dtype_info(t).block != 0) t = DType::Q8_0;
    else if (low || ft == "IQ3_XXS") t = DType::Q5_K;
    else if (t != DType::Q8_0) t = DType::Q6_K;
  } else if (name == "token_embd.weight") {
    if (ft == "IQ2_XXS" || ft == "IQ2_XS" || ft == "IQ1_S" || ft == "IQ1_M") t = DType::Q2_K;
    else if (s_or_m || ft == "IQ3_XXS") t = DType::IQ3_S;
  } else if (low) {
    if (r == "attn_v") t = m.n_gqa >= 4 || m.n_experts >= 4 ? DType::Q4_K : s_or_m ? DType::IQ3_S : DType::Q2_K;
    else if (r == "attn_k" && m.n_experts == 8) t = DType::Q4_K;
    else if (r == "ffn_down" && layer < n / 8) t = s_or_m ? DType::IQ3_S : DType::Q2_K;
    else if (r == "attn_output" && m.n_experts == 8) t = DType::Q5_K;
    else if (r == "attn_output" && (ft == "IQ1_S" || ft == "IQ1_M")) t = DType::IQ2_XXS;
    else if (r == "attn_output" && s_or_m) t = DType::IQ3_S;
  } else if (r == "attn_v" && m.n_experts == 8) {
    t = DType::Q8_0;  // "for the 8-expert model, bumping this to Q8_0 trades just ~128MB"
  } else if (r == "attn_k" && m.n_experts == 8) {
    t = DType::Q8_0;
  } else if (r == "attn_output" && m.n_experts == 8) {
    static const char* kQ5K[] = {"Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S", "Q4_K_M",
                                 "IQ3_S", "IQ3_M", "IQ4_XS"};
    for (const char* f : kQ5K)
      if (ft == f) t = DType::Q5_K;
  } else if (r == "attn_v") {
    if (ft == "Q2_K") t = m.n_gqa >= 4 ? DType::Q4_K : DType::Q3_K;
    else if (ft == "Q2_K_S" && m.n_gqa >= 4) t = DType::Q4_K;
    else if (ft == "IQ3_XXS") t = m.n_gqa >= 4 ? DType::Q4_K : !m.has_imatrix ? DType::IQ3_S : DType::IQ3_XXS;
    else if ((ft == "IQ3_XS" || ft == "IQ3_S") && m.n_gqa >= 4) t = DType::Q4_K;
    else if (ft == "IQ3_M") t = DType::Q4_K;
    else if (ft == "Q3_K_M") t = layer < 2 ? DType::Q5_K : DType::Q4_K;
    else if (ft == "Q3_K_L") t = DType::Q5_K;
    else if ((ft == "IQ4_NL" || ft == "IQ4_XS") && m.n_gqa >= 4) t = DType::Q5_K;
    else if ((ft == "Q4_K_M" || ft == "Q5_K_M") && use_more_bits(layer, n)) t = DType::Q6_K;
    else if (ft == "Q4_K_S" && layer < 4) t = DType::Q5_K;
    // The 70B's attn_v is 8x smaller than attn_q (8 heads share it): more bits cost little.
    if (m.is_70b && (t == DType::Q3_K || t == DType::Q4_K)) t = DType::Q5_K;
  } else if (r == "attn_k" || r == "attn_q") {
    if (ft == "IQ3_XS") t = DType::IQ3_XXS;
    else if (ft == "IQ3_XXS") t = DType::IQ2_S;
  } else if (r == "ffn_down") {
    // (llama.cpp's Q3_K_M picks Q3_K for the middle layers only on Falcon; every other architecture gets Q4_K.)
    if (ft == "Q2_K") t = DType::Q3_K;
    else if (ft == "Q2_K_S") { if (layer < n / 8) t = DType::Q4_K; }
    else if (ft == "IQ3_XXS" && !m.has_imatrix) t = layer < n / 8 ? DType::Q4_K : DType::Q3_K;
    else if (ft == "Q3_K_M") t = layer < n / 16 ? DType::Q5_K : DType::Q4_K;
    else if (ft == "IQ3_M" && layer < n / 8) t = DType::Q4_K;
    else if (ft == "Q3_K_L") t = DType::Q5_K;
    else if (ft == "Q4_K_M") { if (use_more_bits(layer, n)) t = DType::Q6_K; }
    else if (layer < n / 8 && (ft == "IQ4_NL" || ft == "IQ4_XS") && !m.has_imatrix) t = DType::Q5_K;
    else if (ft == "Q5_K_M" && use_more_bits(layer, n)) t = DType::Q6_K;
    else if (ft == "Q4_K_S" && layer < n / 8) t = DType::Q5_K;
    // Guards the first ffn_down layers of Q4_0 / Q5_0 only with an imatrix, as llama.cpp does.
    else if ((ft == "Q4_0" || ft == "Q5_0") && m.has_imatrix && layer < n / 8)
      t = ft == "Q4_0" ? DType::Q4_1 : DType::Q5_1;
  } else if (r == "attn_output") {
    if (ft == "Q2_K") t = DType::Q3_K;
    else if (ft == "IQ3_XXS") t = DType::IQ3_S;
    else if (ft == "Q3_K_M" || ft == "IQ3_M") t = DType::Q4_K;
    else if (ft == "Q3_K_L") t = DType::Q5_K;
  }
  return fallback ? fallback_type(t, cols) : t;
}

uint32_t file_type_of(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::Q2_K: return 10;
    case DType::Q3_K: return 11;
    case DType::Q4_K: return 14;
    case DType::Q5_K: return 16;
    case DType::Q6_K: return 18;
    case DType::IQ2_XXS: return 19;
    case DType::IQ2_XS: return 20;
    case DType::IQ3_XXS: return 23;
    case DType::IQ1_S: return 24;
    case DType::IQ3_S: return 26;
    case DType::IQ2_S: return 28;
    case DType::IQ1_M: return 31;
    case DType::IQ4_NL: return 25;
    case DType::IQ4_XS: return 30;
    case DType::BF16: return 32;
    default: return 0;
  }
}

}  // namespace lowbit::quant
