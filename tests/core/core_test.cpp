// core: the dtype table against ggml's published block layouts, error formatting, thread settings.
#include <gtest/gtest.h>

#include "lowbit/dtype.h"
#include "lowbit/error.h"
#include "lowbit/threads.h"

namespace lowbit {
namespace {

// Block sizes from the ggml block structs: e.g. block_q4_K = fp16 d + fp16 dmin + 12 scale bytes + 128 nibble bytes.
TEST(DType, BlockLayoutsMatchGgml) {
  struct Want {
    DType t;
    uint32_t block, bytes;
  } want[] = {
      {DType::F32, 1, 4},        {DType::F16, 1, 2},         {DType::BF16, 1, 2},
      {DType::Q4_0, 32, 2 + 16}, {DType::Q4_1, 32, 4 + 16},  {DType::Q5_0, 32, 2 + 4 + 16},
      {DType::Q5_1, 32, 4 + 4 + 16}, {DType::Q8_0, 32, 2 + 32}, {DType::Q2_K, 256, 16 + 64 + 4},
      {DType::Q3_K, 256, 32 + 64 + 12 + 2}, {DType::Q4_K, 256, 4 + 12 + 128}, {DType::Q5_K, 256, 4 + 12 + 32 + 128},
      {DType::Q6_K, 256, 128 + 64 + 16 + 2}, {DType::Q8_K, 256, 4 + 256 + 32}, {DType::IQ4_NL, 32, 2 + 16},
      {DType::IQ4_XS, 256, 2 + 2 + 4 + 128},
  };
  for (const auto& w : want) {
    DTypeInfo i = dtype_info(w.t);
    EXPECT_EQ(i.block, w.block) << i.name;
    EXPECT_EQ(i.block_bytes, w.bytes) << i.name;
  }
}

TEST(DType, NamesRoundTripAndUnknownIdsAreRejected) {
  for (uint32_t id = 0; id < 64; ++id) {
    auto info = dtype_info(id);
    if (!info) continue;
    auto back = dtype_from_name(info->name);
    ASSERT_TRUE(back.has_value()) << info->name;
    EXPECT_EQ(static_cast<uint32_t>(*back), id);
  }
  EXPECT_FALSE(dtype_info(4).has_value());   // removed Q4_2
  EXPECT_FALSE(dtype_info(31).has_value());  // removed Q4_0_4_4
  EXPECT_FALSE(dtype_info(1000).has_value());
  EXPECT_EQ(dtype_from_name("Q4_k"), DType::Q4_K);
  EXPECT_FALSE(dtype_from_name("q4_9").has_value());
}

TEST(DType, RowBytes) {
  EXPECT_EQ(dtype_row_bytes(DType::Q4_K, 512), 288u);
  EXPECT_EQ(dtype_row_bytes(DType::F16, 7), 14u);
  EXPECT_FALSE(dtype_row_bytes(DType::Q8_0, 33).has_value());
}

TEST(Error, OneLineNamingFileFieldOffset) {
  EXPECT_EQ(format_error("m.gguf", "tensor 'x'", 42, "bad\nthing"), "m.gguf: tensor 'x' at offset 42: bad thing");
  EXPECT_EQ(format_error("m.gguf", "", -1, "cannot open"), "m.gguf: cannot open");
  try {
    fail_at("f", "k", 3, "msg");
    FAIL() << "fail_at returned";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "f: k at offset 3: msg");
  }
}

TEST(Threads, SetAndDefault) {
  set_num_threads(1);
  EXPECT_EQ(num_threads(), 1);
  set_num_threads(0);
  EXPECT_EQ(num_threads(), hardware_threads());
}

}  // namespace
}  // namespace lowbit

#include "core/checksum.h"

namespace lowbit {
namespace {

// FNV-1a 64 published test vectors.
TEST(Checksum, Fnv1a64KnownVectors) {
  auto h = [](const std::string& s) { return fnv1a64(reinterpret_cast<const std::byte*>(s.data()), s.size()); };
  EXPECT_EQ(h(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(h("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(h("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(hex64(0xabcull), "0000000000000abc");
}

}  // namespace
}  // namespace lowbit
