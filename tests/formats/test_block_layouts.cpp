// The block layouts (formats/ggml_blocks.h) against the dtype table, and the two scale unpackings of the K-quants
// (the scalar reference q4k_scale_min / q3k_scales, and the four-bytes-at-a-time form the kernels use) against
// each other on random scale bytes.
#include <gtest/gtest.h>

#include <random>

#include "formats/ggml_blocks.h"
#include "formats/ggml_kquants.h"
#include "lowbit/dtype.h"

namespace lowbit::formats {
namespace {

TEST(BlockLayouts, SizesMatchTheDtypeTable) {
  namespace B = blocks;
  EXPECT_EQ(sizeof(B::Q4_0), dtype_info(DType::Q4_0).block_bytes);
  EXPECT_EQ(sizeof(B::Q4_1), dtype_info(DType::Q4_1).block_bytes);
  EXPECT_EQ(sizeof(B::Q5_0), dtype_info(DType::Q5_0).block_bytes);
  EXPECT_EQ(sizeof(B::Q5_1), dtype_info(DType::Q5_1).block_bytes);
  EXPECT_EQ(sizeof(B::Q8_0), dtype_info(DType::Q8_0).block_bytes);
  EXPECT_EQ(sizeof(B::IQ4_NL), dtype_info(DType::IQ4_NL).block_bytes);
  EXPECT_EQ(sizeof(B::Q2_K), dtype_info(DType::Q2_K).block_bytes);
  EXPECT_EQ(sizeof(B::Q3_K), dtype_info(DType::Q3_K).block_bytes);
  EXPECT_EQ(sizeof(B::Q4_K), dtype_info(DType::Q4_K).block_bytes);
  EXPECT_EQ(sizeof(B::Q5_K), dtype_info(DType::Q5_K).block_bytes);
  EXPECT_EQ(sizeof(B::Q6_K), dtype_info(DType::Q6_K).block_bytes);
  EXPECT_EQ(sizeof(B::IQ4_XS), dtype_info(DType::IQ4_XS).block_bytes);
}

TEST(BlockLayouts, WordWiseScaleUnpackingEqualsTheReference) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int trial = 0; trial < 2000; ++trial) {
    uint8_t s[12];
    for (auto& b : s) b = static_cast<uint8_t>(trial < 2 ? trial * 255 : byte(rng));  // all-0 and all-1 bits too
    uint8_t wide[16];
    q4k_scales_mins16(s, wide);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      q4k_scale_min(s, j, sc, m);
      ASSERT_EQ(wide[j], sc) << trial << " scale " << j;
      ASSERT_EQ(wide[8 + j], m) << trial << " min " << j;
    }
    int8_t ref[16];
    q3k_scales(s, ref);
    q3k_scales16(s, wide);
    for (int j = 0; j < 16; ++j) ASSERT_EQ(static_cast<int>(wide[j]) - 32, ref[j]) << trial << " q3_K scale " << j;
  }
}

}  // namespace
}  // namespace lowbit::formats
