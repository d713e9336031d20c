// llama.cpp's quantization mixtures (quant/gguf_presets.h): the per-tensor types llama-quantize picks.
#include <gtest/gtest.h>

#include <string>

#include "quant/gguf_presets.h"

namespace lowbit::quant {
namespace {

std::string type_of(const char* preset, const std::string& name, int64_t cols, int layers = 32, int gqa = 1) {
  auto p = gguf_preset(preset);
  EXPECT_TRUE(p.has_value()) << preset;
  PresetModelInfo m;
  m.n_layers = layers;
  m.n_gqa = gqa;
  return std::string(dtype_name(preset_tensor_type(*p, name, cols, m)));
}

TEST(GgufPresets, NamesAndFileTypes) {
  EXPECT_EQ(gguf_preset("q4_k_m")->file_type, 15u);
  EXPECT_EQ(gguf_preset("Q3_K_M")->file_type, 12u);
  EXPECT_EQ(gguf_preset("IQ4_XS")->base, DType::IQ4_XS);
  EXPECT_EQ(gguf_preset("Q2_K")->file_type, 10u);
  EXPECT_FALSE(gguf_preset("Q4_K_X").has_value());
  EXPECT_EQ(gguf_preset_names().size(), 17u);
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
  EXPECT_EQ(type_of("Q3_K_M", "blk.6.ffn_down.weight", 4096), "q4_K");   // use_more_bits: (6 - 4) % 3 == 2
  EXPECT_EQ(type_of("Q3_K_M", "blk.4.ffn_down.weight", 4096), "q3_K");
  EXPECT_EQ(type_of("Q3_K_M", "blk.5.ffn_down.weight", 4096), "q3_K");
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
