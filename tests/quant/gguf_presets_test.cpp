// llama.cpp's quantization mixtures (quant/gguf_presets.h): the per-tensor types llama-quantize picks.
#include <gtest/gtest.h>

#include <string>

#include "quant/gguf_presets.h"

namespace lowbit::quant {
namespace {

std::string type_of(const char* preset, const std::string& name, int64_t cols, int layers = 32, int gqa = 1,
                    bool imatrix = false) {
  auto p = gguf_preset(preset);
  EXPECT_TRUE(p.has_value()) << preset;
  PresetModelInfo m;
  m.n_layers = layers;
  m.n_gqa = gqa;
  m.has_imatrix = imatrix;
  m.is_70b = layers == 80 && gqa > 1;
  return std::string(dtype_name(preset_tensor_type(*p, name, cols, m)));
}

TEST(GgufPresets, NamesAndFileTypes) {
  EXPECT_EQ(gguf_preset("q4_k_m")->file_type, 15u);
  EXPECT_EQ(gguf_preset("Q3_K_M")->file_type, 12u);
  EXPECT_EQ(gguf_preset("IQ4_XS")->base, DType::IQ4_XS);
  EXPECT_EQ(gguf_preset("Q2_K")->file_type, 10u);
  EXPECT_FALSE(gguf_preset("Q4_K_X").has_value());
  EXPECT_EQ(gguf_preset("iq2_xs")->file_type, 20u);
  EXPECT_EQ(gguf_preset("IQ2_XXS")->file_type, 19u);
  EXPECT_EQ(gguf_preset("IQ2_M")->base, DType::IQ2_S);
  EXPECT_EQ(gguf_preset("IQ2_S")->base, DType::IQ2_XS);
  EXPECT_EQ(gguf_preset("IQ1_M")->file_type, 31u);
  EXPECT_EQ(gguf_preset_names().size(), 27u);
}

// The other i-quant presets (synth256's fixtures cover one head layout; these pin the rest of llama.cpp's rules).
TEST(GgufPresets, IQ1_IQ2_S_M_IQ3) {
  EXPECT_EQ(type_of("IQ2_M", "token_embd.weight", 4096), "iq3_s");
  EXPECT_EQ(type_of("IQ2_S", "blk.9.attn_v.weight", 4096), "iq3_s");
  EXPECT_EQ(type_of("IQ2_M", "blk.9.attn_v.weight", 4096, 32, 8), "q4_K");
  EXPECT_EQ(type_of("IQ2_M", "blk.0.ffn_down.weight", 11008), "iq3_s");
  EXPECT_EQ(type_of("IQ2_M", "blk.9.ffn_down.weight", 11008), "iq2_s");
  EXPECT_EQ(type_of("IQ2_S", "blk.9.ffn_down.weight", 11008), "iq2_xs");
  EXPECT_EQ(type_of("IQ2_M", "blk.9.attn_output.weight", 4096), "iq3_s");
  EXPECT_EQ(type_of("IQ1_S", "blk.9.attn_output.weight", 4096), "iq2_xxs");
  EXPECT_EQ(type_of("IQ1_M", "token_embd.weight", 4096), "q2_K");
  EXPECT_EQ(type_of("IQ1_M", "output.weight", 4096), "q5_K");
  EXPECT_EQ(type_of("IQ3_XXS", "output.weight", 4096), "q5_K");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.3.attn_k.weight", 4096), "iq2_s");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.3.attn_q.weight", 4096), "iq2_s");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.3.attn_v.weight", 4096, 32, 1, true), "iq3_xxs");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.3.attn_v.weight", 4096, 32, 1, false), "iq3_s");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.3.ffn_down.weight", 11008, 32, 1, false), "q4_K");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.9.ffn_down.weight", 11008, 32, 1, false), "q3_K");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.9.ffn_down.weight", 11008, 32, 1, true), "iq3_xxs");
  EXPECT_EQ(type_of("IQ3_XXS", "blk.9.attn_output.weight", 4096), "iq3_s");
  EXPECT_EQ(type_of("IQ3_XS", "blk.9.attn_q.weight", 4096), "iq3_xxs");
  EXPECT_EQ(type_of("IQ3_M", "blk.9.attn_v.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("IQ3_M", "blk.1.ffn_down.weight", 11008), "q4_K");
  EXPECT_EQ(type_of("IQ3_M", "blk.9.ffn_down.weight", 11008), "iq3_s");
  EXPECT_EQ(type_of("IQ3_S", "output.weight", 4096), "q6_K");
  EXPECT_EQ(type_of("IQ3_S", "blk.9.attn_v.weight", 4096, 32, 4), "q4_K");
  EXPECT_EQ(type_of("IQ1_S", "blk.9.attn_q.weight", 4000), "iq4_nl");  // fallback of a 256-block type
}

// llama.cpp's very-low-bit branch: head Q5_K, embedding Q2_K, attn_v Q4_K with 4+ query heads per KV head (else
// Q2_K), the first eighth of ffn_down Q2_K, every other linear the base type (attn_output included).
TEST(GgufPresets, IQ2_XXS_IQ2_XS) {
  for (const char* p : {"IQ2_XXS", "IQ2_XS"}) {
    const std::string base = p == std::string("IQ2_XXS") ? "iq2_xxs" : "iq2_xs";
    EXPECT_EQ(type_of(p, "output.weight", 4096), "q5_K") << p;
    EXPECT_EQ(type_of(p, "token_embd.weight", 4096), "q2_K") << p;
    EXPECT_EQ(type_of(p, "blk.7.attn_v.weight", 4096, 32, 1), "q2_K") << p;
    EXPECT_EQ(type_of(p, "blk.7.attn_v.weight", 4096, 32, 4), "q4_K") << p;
    EXPECT_EQ(type_of(p, "blk.3.ffn_down.weight", 11008), "q2_K") << p;  // 11008 = 43 x 256; layers 0..3 of 32
    EXPECT_EQ(type_of(p, "blk.4.ffn_down.weight", 11008), base) << p;
    EXPECT_EQ(type_of(p, "blk.3.ffn_down.weight", 11008, 16), base) << p;  // layers 0..1 of 16
    EXPECT_EQ(type_of(p, "blk.1.ffn_down.weight", 11008, 16), "q2_K") << p;
    EXPECT_EQ(type_of(p, "blk.5.attn_output.weight", 4096), base) << p;
    EXPECT_EQ(type_of(p, "blk.5.attn_q.weight", 4096), base) << p;
    EXPECT_EQ(type_of(p, "blk.5.attn_q.weight", 4000), "iq4_nl") << p;  // llama.cpp's fallback for rows of 4000
  }
}

TEST(GgufPresets, Q4_K_M) {
  // use_more_bits over 32 layers: 0..3, 28..31 and every third from 6: 6, 9, 12, ...
  for (int l : {0, 3, 6, 9, 27, 28, 31}) {
    EXPECT_EQ(type_of("Q4_K_M", "blk." + std::to_string(l) + ".attn_v.weight", 4096), "q6_K") << l;
    EXPECT_EQ(type_of("Q4_K_M", "blk." + std::to_string(l) + ".ffn_down.weight", 11264), "q6_K") << l;
  }
  for (int l : {4, 5, 7, 8, 26}) {
    EXPECT_EQ(type_of("Q4_K_M", "blk." + std::to_string(l) + ".attn_v.weight", 4096), "q4_K") << l;
    EXPECT_EQ(type_of("Q4_K_M", "blk." + std::to_string(l) + ".ffn_down.weight", 11264), "q4_K") << l;
  }
  EXPECT_EQ(type_of("Q4_K_M", "blk.5.attn_q.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("Q4_K_M", "output.weight", 4096), "q6_K");
  EXPECT_EQ(type_of("Q4_K_M", "token_embd.weight", 4096), "q4_K");
}

TEST(GgufPresets, Q3_K_M_Q2_K_IQ4_XS) {
  EXPECT_EQ(type_of("Q3_K_M", "blk.0.attn_v.weight", 4096), "q5_K");
  EXPECT_EQ(type_of("Q3_K_M", "blk.2.attn_v.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("Q3_K_M", "blk.1.ffn_down.weight", 4096), "q5_K");   // < n/16
  // Every later layer: llama.cpp keeps q3_K (outside use_more_bits) for Falcon only.
  EXPECT_EQ(type_of("Q3_K_M", "blk.6.ffn_down.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("Q3_K_M", "blk.4.ffn_down.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("Q3_K_M", "blk.5.ffn_down.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("Q3_K_M", "blk.0.ffn_down.weight", 4096, 2), "q4_K");  // n/16 = 0 (synth256's 2 layers)
  EXPECT_EQ(type_of("Q3_K_M", "blk.5.attn_output.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("Q3_K_M", "blk.5.ffn_up.weight", 4096), "q3_K");
  EXPECT_EQ(type_of("Q2_K", "blk.5.attn_v.weight", 4096, 32, 1), "q3_K");
  EXPECT_EQ(type_of("Q2_K", "blk.5.attn_v.weight", 4096, 32, 4), "q4_K");
  EXPECT_EQ(type_of("Q2_K", "blk.5.ffn_down.weight", 4096), "q3_K");
  EXPECT_EQ(type_of("Q2_K", "blk.5.ffn_gate.weight", 4096), "q2_K");
  EXPECT_EQ(type_of("IQ4_XS", "blk.5.attn_v.weight", 4096, 32, 4), "q5_K");
  EXPECT_EQ(type_of("IQ4_XS", "blk.5.attn_q.weight", 4096, 32, 4), "iq4_xs");
  EXPECT_EQ(type_of("Q8_0", "output.weight", 4096), "q8_0");
  EXPECT_EQ(type_of("Q4_0", "output.weight", 4096), "q6_K");
}

// The rules that depend on an importance matrix (llama_tensor_get_type's has_imatrix), Q2_K_S's ffn_down and the
// 70B's attn_v.
TEST(GgufPresets, ImatrixAnd70bRules) {
  // IQ4_NL / IQ4_XS: the first eighth of ffn_down gets q5_K only without an imatrix.
  EXPECT_EQ(type_of("IQ4_XS", "blk.3.ffn_down.weight", 4096, 32, 1, false), "q5_K");
  EXPECT_EQ(type_of("IQ4_XS", "blk.3.ffn_down.weight", 4096, 32, 1, true), "iq4_xs");
  EXPECT_EQ(type_of("IQ4_NL", "blk.4.ffn_down.weight", 4096, 32, 1, false), "iq4_nl");
  // Q4_0 / Q5_0: the first eighth of ffn_down gets q4_1 / q5_1 only with one.
  EXPECT_EQ(type_of("Q4_0", "blk.3.ffn_down.weight", 4096, 32, 1, true), "q4_1");
  EXPECT_EQ(type_of("Q5_0", "blk.3.ffn_down.weight", 4096, 32, 1, true), "q5_1");
  EXPECT_EQ(type_of("Q4_0", "blk.3.ffn_down.weight", 4096, 32, 1, false), "q4_0");
  EXPECT_EQ(type_of("Q4_0", "blk.4.ffn_down.weight", 4096, 32, 1, true), "q4_0");
  EXPECT_EQ(type_of("Q4_0", "blk.0.ffn_down.weight", 4096, 2, 1, true), "q4_0");  // n/8 = 0
  EXPECT_EQ(type_of("Q2_K_S", "blk.3.ffn_down.weight", 4096), "q4_K");
  EXPECT_EQ(type_of("Q2_K_S", "blk.4.ffn_down.weight", 4096), "q2_K");
  // use_more_bits(20, 80) is false: q4_K, then 70B: q5_K.
  EXPECT_EQ(type_of("Q4_K_M", "blk.20.attn_v.weight", 8192, 80, 8), "q5_K");
  EXPECT_EQ(type_of("Q4_K_M", "blk.20.attn_v.weight", 8192, 80, 1), "q4_K");  // 65B (no GQA)
  EXPECT_EQ(type_of("Q4_K_M", "blk.0.attn_v.weight", 8192, 80, 8), "q6_K");
}

TEST(GgufPresets, FallbacksForRowsThatDoNotFillBlocks) {
  EXPECT_EQ(type_of("Q4_K_M", "blk.5.attn_q.weight", 384), "q5_0");
  EXPECT_EQ(type_of("Q4_K_M", "blk.5.attn_v.weight", 128, 32), "q5_0");
  EXPECT_EQ(type_of("Q4_K_M", "blk.0.attn_v.weight", 128), "q8_0");  // q6_K -> q8_0
  EXPECT_EQ(type_of("Q3_K_M", "blk.5.ffn_up.weight", 384), "iq4_nl");
  EXPECT_EQ(type_of("Q5_K_M", "blk.5.ffn_up.weight", 384), "q5_1");
  EXPECT_EQ(type_of("Q4_K_M", "output.weight", 384), "q8_0");
  EXPECT_EQ(type_of("Q4_K_M", "blk.5.ffn_down.weight", 172), "f16");  // not even 32 divides 172
  EXPECT_EQ(fallback_type(DType::Q4_0, 64), DType::Q4_0);
  EXPECT_EQ(fallback_type(DType::Q4_0, 48), DType::F16);
}

}  // namespace
}  // namespace lowbit::quant
