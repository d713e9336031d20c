// ggml decoders for the types lowbit reads but does not write (ggml_decode_other.cpp), through ggml_decode_row:
// block sizes against ggml's struct layouts, pinned checksums of the i-quant grids, hand-built golden blocks per
// type (expected values computed here from the layout description, not by the decoder), zero blocks, multi-block
// rows, errors, and the plain types F64 / I8..I64 / F16 / BF16.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "formats/ggml.h"
#include "lowbit/dtype.h"
#include "lowbit/error.h"

#include "formats/ggml_iq_grids.inc"

namespace lf = lowbit::formats;
using lowbit::DType;

namespace {

const DType kOtherTypes[] = {DType::Q8_1,   DType::Q8_K,    DType::IQ2_XXS, DType::IQ2_XS,
                             DType::IQ2_S,  DType::IQ3_XXS, DType::IQ3_S,   DType::IQ1_S,
                             DType::IQ1_M,  DType::TQ1_0,   DType::TQ2_0};

struct Block {
  std::vector<std::byte> b;
  explicit Block(size_t n) : b(n, std::byte{0}) {}
  void u8(size_t at, unsigned v) { b[at] = static_cast<std::byte>(v & 0xff); }
  void u16(size_t at, unsigned v) {
    u8(at, v);
    u8(at + 1, v >> 8);
  }
  void u32(size_t at, uint32_t v) {
    u16(at, v & 0xffff);
    u16(at + 2, v >> 16);
  }
};

std::vector<float> decode(DType t, const std::vector<std::byte>& bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n), std::nanf(""));
  lf::ggml_decode_row(t, bytes.data(), n, out.data());
  return out;
}

void expect_same(const std::vector<float>& got, const std::vector<float>& want, const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
        << what << " weight " << i << ": got " << got[i] << ", want " << want[i];
}

// Sign of weight j of a group from 7 explicit sign bits: bit j for j < 7, the parity of the 7 bits for j == 7.
float sign7(unsigned seven, int j) {
  if (j < 7) return (seven >> j) & 1u ? -1.0f : 1.0f;
  return std::popcount(seven & 127u) % 2 ? -1.0f : 1.0f;
}
float sign8(unsigned bits, int j) { return (bits >> j) & 1u ? -1.0f : 1.0f; }

uint64_t fnv1a(const void* data, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

template <typename T, size_t N>
uint64_t table_checksum(const T (&table)[N]) {  // over the entries' little-endian bytes
  uint64_t h = 0xcbf29ce484222325ull;
  for (T v : table)
    for (size_t k = 0; k < sizeof(T); ++k) {
      const unsigned char c = static_cast<unsigned char>(v >> (8 * k));
      h = fnv1a(&c, 1, h);
    }
  return h;
}

}  // namespace

// ggml-common.h's block structs: sizeof() written out from the fields, and QK = 32 (q8_1) or QK_K = 256.
TEST(GgmlDecodeOther, BlockSizesMatchGgmlStructs) {
  struct Want {
    DType t;
    uint32_t block, bytes;
  };
  const Want want[] = {
      {DType::Q8_1, 32, 2 + 2 + 32},              // d, s, qs[32]
      {DType::Q8_K, 256, 4 + 256 + 16 * 2},       // float d, qs[256], int16 bsums[16]
      {DType::IQ2_XXS, 256, 2 + 32 * 2},          // d, uint16 qs[32]
      {DType::IQ2_XS, 256, 2 + 32 * 2 + 8},       // d, uint16 qs[32], scales[8]
      {DType::IQ2_S, 256, 2 + 64 + 8 + 8},        // d, qs[64], qh[8], scales[8]
      {DType::IQ3_XXS, 256, 2 + 96},              // d, qs[96]
      {DType::IQ3_S, 256, 2 + 64 + 8 + 32 + 4},   // d, qs[64], qh[8], signs[32], scales[4]
      {DType::IQ1_S, 256, 2 + 32 + 8 * 2},        // d, qs[32], uint16 qh[8]
      {DType::IQ1_M, 256, 32 + 16 + 8},           // qs[32], qh[16], scales[8]
      {DType::TQ1_0, 256, 48 + 4 + 2},            // qs[(256 - 16) / 5], qh[4], d
      {DType::TQ2_0, 256, 64 + 2},                // qs[64], d
  };
  for (const Want& w : want) {
    const lowbit::DTypeInfo info = lowbit::dtype_info(w.t);
    EXPECT_EQ(info.block, w.block) << info.name;
    EXPECT_EQ(info.block_bytes, w.bytes) << info.name;
    EXPECT_TRUE(lf::ggml_decodable(w.t)) << info.name;
    // IQ2_XXS / IQ2_XS / IQ3_XXS have encoders (ggml_iq_lattice.cpp, tested in ggml_iq_lattice_test.cpp); the
    // others decode only.
    EXPECT_EQ(lf::ggml_encodable(w.t), w.t == DType::IQ2_XXS || w.t == DType::IQ2_XS || w.t == DType::IQ2_S ||
                                           w.t == DType::IQ3_XXS || w.t == DType::IQ3_S || w.t == DType::IQ1_S ||
                                           w.t == DType::IQ1_M)
        << info.name;
  }
}

// The grid tables are format data; a later edit must not change them silently. The pinned values were computed
// after every entry was cross-checked against gguf-py's independent copy (see ggml_iq_grids.inc).
TEST(GgmlDecodeOther, GridChecksumsArePinned) {
  namespace g = lf::iq_grids;
  EXPECT_EQ(table_checksum(g::kIq2xxsGrid), 0xbb4ee025b5ac6e8eull);
  EXPECT_EQ(table_checksum(g::kIq2xsGrid), 0xc9b1ee61e79909bdull);
  EXPECT_EQ(table_checksum(g::kIq2sGrid), 0x123edd38a3b62b90ull);
  EXPECT_EQ(table_checksum(g::kIq3xxsGrid), 0xdfa5dc83d6a155d5ull);
  EXPECT_EQ(table_checksum(g::kIq3sGrid), 0xfa37020c25b44829ull);
  EXPECT_EQ(table_checksum(g::kIq1sGrid), 0x6703ed863501ae2eull);
  // Shape of the data: levels per table.
  auto levels_ok = [](uint64_t e, int bytes, std::initializer_list<int> allowed) {
    for (int j = 0; j < bytes; ++j) {
      const int v = static_cast<int>((e >> (8 * j)) & 0xff);
      bool ok = false;
      for (int a : allowed) ok = ok || a == v;
      if (!ok) return false;
    }
    return true;
  };
  for (uint64_t e : g::kIq2xxsGrid) EXPECT_TRUE(levels_ok(e, 8, {0x08, 0x19, 0x2b}));
  for (uint64_t e : g::kIq2xsGrid) EXPECT_TRUE(levels_ok(e, 8, {0x08, 0x19, 0x2b}));
  for (uint64_t e : g::kIq2sGrid) EXPECT_TRUE(levels_ok(e, 8, {0x08, 0x19, 0x2b}));
  for (uint32_t e : g::kIq3xxsGrid) EXPECT_TRUE(levels_ok(e, 4, {4, 12, 20, 28, 36, 44, 52, 62}));
  for (uint32_t e : g::kIq3sGrid) EXPECT_TRUE(levels_ok(e, 4, {1, 3, 5, 7, 9, 11, 13, 15}));
  for (uint64_t e : g::kIq1sGrid) EXPECT_TRUE(levels_ok(e, 8, {0xff, 0x00, 0x01}));
  // Tables start and end where ggml's do.
  EXPECT_EQ(g::kIq2xxsGrid[0], 0x0808080808080808ull);
  EXPECT_EQ(g::kIq2xxsGrid[255], 0x2b2b2b1908081908ull);
  EXPECT_EQ(g::kIq2sGrid[1023], 0x2b2b2b2b2b2b2b2bull);
  EXPECT_EQ(g::kIq3sGrid[511], 0x0f0f0101u);
  EXPECT_EQ(g::kIq1sGrid[2047], 0x0101010101010101ull);
}

// ggml's ksigns_iq2xs (7 sign bits + parity) is derived in the decoder; the rule reproduces its published
// entries (ggml-common.h: 0, 129, 130, 3, 132, ..., 126, 255) and its FNV-1a checksum over all 128 bytes.
TEST(GgmlDecodeOther, SignParityRuleMatchesGgmlTable) {
  unsigned char ks[128];
  for (unsigned i = 0; i < 128; ++i) ks[i] = static_cast<unsigned char>(i | ((std::popcount(i) & 1u) << 7));
  EXPECT_EQ(ks[0], 0);
  EXPECT_EQ(ks[1], 129);
  EXPECT_EQ(ks[2], 130);
  EXPECT_EQ(ks[3], 3);
  EXPECT_EQ(ks[4], 132);
  EXPECT_EQ(ks[16], 144);
  EXPECT_EQ(ks[126], 126);
  EXPECT_EQ(ks[127], 255);
  EXPECT_EQ(fnv1a(ks, 128), 0xf19ba8f8c3292ba5ull);
}

TEST(GgmlDecodeOther, Q8_1Golden) {
  Block blk(36);
  blk.u16(0, 0x3800);  // d = 0.5
  blk.u16(2, 0xBEEF);  // s: a cached sum, ignored by the decoder
  std::vector<float> want(32);
  for (int j = 0; j < 32; ++j) {
    const int8_t q = static_cast<int8_t>(j * 9 - 128);
    blk.u8(4 + j, static_cast<uint8_t>(q));
    want[j] = 0.5f * static_cast<float>(q);
  }
  expect_same(decode(DType::Q8_1, blk.b, 32), want, "q8_1");
}

TEST(GgmlDecodeOther, Q8_KGolden) {
  Block blk(292);
  const float d = 0.3f;  // float32 scale
  uint32_t dbits = std::bit_cast<uint32_t>(d);
  blk.u32(0, dbits);
  std::vector<float> want(256);
  for (int j = 0; j < 256; ++j) {
    const int8_t q = static_cast<int8_t>(j * 13);
    blk.u8(4 + j, static_cast<uint8_t>(q));
    want[j] = d * static_cast<float>(q);
  }
  for (int k = 0; k < 16; ++k) blk.u16(260 + 2 * k, 0x7777u + k);  // group sums: not used to decode
  expect_same(decode(DType::Q8_K, blk.b, 256), want, "q8_K");
}

TEST(GgmlDecodeOther, TQ2_0Golden) {
  Block blk(66);
  blk.u16(64, 0x3E00);  // d = 1.5
  for (int i = 0; i < 64; ++i) blk.u8(i, (i * 37 + 11) & 0xff);
  std::vector<float> want(256);
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 4; ++l)
      for (int m = 0; m < 32; ++m) {
        const int q = ((((32 * h + m) * 37 + 11) & 0xff) >> (2 * l)) & 3;
        want[128 * h + 32 * l + m] = static_cast<float>(q - 1) * 1.5f;
      }
  expect_same(decode(DType::TQ2_0, blk.b, 256), want, "tq2_0");
}

// TQ1_0 packs trits t0..t4 (t0 most significant) of a byte as ceil((t0*81 + t1*27 + t2*9 + t3*3 + t4) * 256 / 243)
// (four trits in qh, scaled by 3 so that they fill the top positions).
TEST(GgmlDecodeOther, TQ1_0Golden) {
  auto pack = [](const int* t, int count) {
    int v = 0;
    for (int k = 0; k < count; ++k) v = v * 3 + t[k];
    for (int k = count; k < 5; ++k) v *= 3;
    return (v * 256 + 242) / 243;
  };
  // A hand check of the packing: trits (2, 1, 0, 2, 1) -> 196 -> byte 207.
  const int hand[5] = {2, 1, 0, 2, 1};
  EXPECT_EQ(pack(hand, 5), 207);

  std::vector<int> trit(256);
  for (int w = 0; w < 256; ++w) trit[w] = (w * 7 + w / 5 + 1) % 3;
  trit[0] = 2, trit[32] = 1, trit[64] = 0, trit[96] = 2, trit[128] = 1;  // byte 0 is then the hand example
  Block blk(54);
  blk.u16(52, 0x3E00);  // d = 1.5
  for (int m = 0; m < 32; ++m) {
    int t[5];
    for (int n = 0; n < 5; ++n) t[n] = trit[32 * n + m];
    blk.u8(m, pack(t, 5));
  }
  for (int m = 0; m < 16; ++m) {
    int t[5];
    for (int n = 0; n < 5; ++n) t[n] = trit[160 + 16 * n + m];
    blk.u8(32 + m, pack(t, 5));
  }
  for (int j = 0; j < 4; ++j) {
    int t[4];
    for (int n = 0; n < 4; ++n) t[n] = trit[240 + 4 * n + j];
    blk.u8(48 + j, pack(t, 4));
  }
  EXPECT_EQ(static_cast<int>(blk.b[0]), 207);
  std::vector<float> want(256);
  for (int w = 0; w < 256; ++w) want[w] = static_cast<float>(trit[w] - 1) * 1.5f;
  expect_same(decode(DType::TQ1_0, blk.b, 256), want, "tq1_0");
}

TEST(GgmlDecodeOther, IQ2_XXSGolden) {
  Block blk(66);
  blk.u16(0, 0x3C00);  // d = 1
  // Sub-block 0: grid indices 0, 1, 2, 255; sign fields 0, 1, 0x7f, 3; scale 3.
  const unsigned idx0[4] = {0, 1, 2, 255}, sg0[4] = {0, 1, 0x7f, 3};
  for (int l = 0; l < 4; ++l) blk.u8(2 + l, idx0[l]);
  blk.u32(6, sg0[0] | (sg0[1] << 7) | (sg0[2] << 14) | (sg0[3] << 21) | (3u << 28));
  // Sub-block 7: grid index 255 in group 0, no signs, scale 15.
  blk.u8(2 + 56, 255);
  blk.u32(2 + 56 + 4, 15u << 28);
  // Levels of the entries used (iq2xxs_grid, bytes from the least significant).
  const int lv[4][8] = {{8, 8, 8, 8, 8, 8, 8, 8},
                        {43, 8, 8, 8, 8, 8, 8, 8},
                        {25, 25, 8, 8, 8, 8, 8, 8},
                        {8, 25, 8, 8, 25, 43, 43, 43}};
  std::vector<float> want(256);
  const float db0 = 1.0f * (0.5f + 3.0f) * 0.25f;
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j) want[8 * l + j] = db0 * static_cast<float>(lv[l][j]) * sign7(sg0[l], j);
  const float db_zero = 1.0f * (0.5f + 0.0f) * 0.25f;  // scale 0, index 0: level 8
  for (int w = 32; w < 224; ++w) want[w] = db_zero * 8.0f;
  const float db7 = 1.0f * (0.5f + 15.0f) * 0.25f;
  for (int j = 0; j < 8; ++j) want[224 + j] = db7 * static_cast<float>(lv[3][j]);
  for (int w = 232; w < 256; ++w) want[w] = db7 * 8.0f;
  expect_same(decode(DType::IQ2_XXS, blk.b, 256), want, "iq2_xxs");
  // Spot values in plain numbers: weight 0 = 0.875 * 8, weight 8 (group 1, j 0) = -0.875 * 43.
  EXPECT_EQ(want[0], 7.0f);
  EXPECT_EQ(want[8], -37.625f);
}

TEST(GgmlDecodeOther, IQ2_XSGolden) {
  Block blk(74);
  blk.u16(0, 0x4000);  // d = 2
  const unsigned idx[4] = {511, 300, 100, 1}, sg[4] = {0x01, 0x00, 0x7f, 0x40};
  for (int l = 0; l < 4; ++l) blk.u16(2 + 2 * l, idx[l] | (sg[l] << 9));
  blk.u8(66, 0x52);  // sub-block 0: groups 0-1 scale 2, groups 2-3 scale 5
  const int lv[4][8] = {{43, 43, 43, 43, 43, 43, 43, 43},  // iq2xs_grid[511]
                        {8, 25, 25, 8, 8, 25, 8, 25},      // [300] = 0x1908190808191908
                        {8, 25, 8, 8, 43, 25, 8, 8},       // [100] = 0x0808192b08081908
                        {43, 8, 8, 8, 8, 8, 8, 8}};        // [1]
  std::vector<float> want(256);
  const float db[2] = {2.0f * (0.5f + 2.0f) * 0.25f, 2.0f * (0.5f + 5.0f) * 0.25f};
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j) want[8 * l + j] = db[l / 2] * static_cast<float>(lv[l][j]) * sign7(sg[l], j);
  for (int w = 32; w < 256; ++w) want[w] = 2.0f * (0.5f + 0.0f) * 0.25f * 8.0f;
  expect_same(decode(DType::IQ2_XS, blk.b, 256), want, "iq2_xs");
}

TEST(GgmlDecodeOther, IQ2_SGolden) {
  Block blk(82);
  blk.u16(0, 0x3C00);  // d = 1
  // Sub-block 1: low index bytes at 2 + 4..7, high bits in qh[1] (2 bits per group), signs at 34 + 4..7.
  const unsigned lo[4] = {0xff, 1, 0, 5}, hi[4] = {3, 0, 1, 2}, sg[4] = {0xa5, 0x00, 0xff, 0x80};
  for (int l = 0; l < 4; ++l) {
    blk.u8(2 + 4 + l, lo[l]);
    blk.u8(34 + 4 + l, sg[l]);
  }
  blk.u8(66 + 1, hi[0] | (hi[1] << 2) | (hi[2] << 4) | (hi[3] << 6));  // 0x93
  EXPECT_EQ(static_cast<int>(blk.b[67]), 0x93);
  blk.u8(74 + 1, 0xf0);  // sub-block 1: groups 0-1 scale 0, groups 2-3 scale 15
  const int lv[4][8] = {{43, 43, 43, 43, 43, 43, 43, 43},  // iq2s_grid[1023]
                        {43, 8, 8, 8, 8, 8, 8, 8},         // [1]
                        {25, 25, 25, 25, 25, 8, 25, 8},    // [256] = 0x0819081919191919
                        {8, 8, 25, 25, 25, 8, 8, 25}};     // [517] = 0x1908081919190808
  std::vector<float> want(256);
  const float db_zero = 1.0f * (0.5f + 0.0f) * 0.25f;
  for (int w = 0; w < 256; ++w) want[w] = db_zero * 8.0f;  // index 0: all level 8, no signs
  const float db[2] = {db_zero, 1.0f * (0.5f + 15.0f) * 0.25f};
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j) want[32 + 8 * l + j] = db[l / 2] * static_cast<float>(lv[l][j]) * sign8(sg[l], j);
  expect_same(decode(DType::IQ2_S, blk.b, 256), want, "iq2_s");
}

TEST(GgmlDecodeOther, IQ3_XXSGolden) {
  Block blk(98);
  blk.u16(0, 0x3C00);  // d = 1
  // Sub-block 2: 8 grid indices (two 4-weight entries per group of 8) and its u32 of signs + scale.
  const unsigned idx[8] = {0, 5, 77, 200, 255, 0, 0, 0}, sg[4] = {0x00, 0x55, 0x01, 0x00};
  for (int k = 0; k < 8; ++k) blk.u8(2 + 16 + k, idx[k]);
  blk.u32(66 + 8, sg[0] | (sg[1] << 7) | (sg[2] << 14) | (sg[3] << 21) | (7u << 28));
  auto level = [](unsigned i, int j) {  // iq3xxs_grid entries used, bytes from the least significant
    switch (i) {
      case 0: { const int v[4] = {4, 4, 4, 4}; return v[j]; }
      case 5: { const int v[4] = {62, 12, 4, 4}; return v[j]; }      // 0x04040c3e
      case 77: { const int v[4] = {20, 12, 20, 12}; return v[j]; }   // 0x0c140c14
      case 200: { const int v[4] = {4, 62, 4, 44}; return v[j]; }    // 0x2c043e04
      default: { const int v[4] = {4, 28, 52, 62}; return v[j]; }    // [255] 0x3e341c04
    }
  };
  std::vector<float> want(256);
  for (int w = 0; w < 256; ++w) want[w] = 1.0f * (0.5f + 0.0f) * 0.5f * 4.0f;
  const float db = 1.0f * (0.5f + 7.0f) * 0.5f;
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j) {
      const unsigned i = idx[2 * l + j / 4];
      want[64 + 8 * l + j] = db * static_cast<float>(level(i, j % 4)) * sign7(sg[l], j);
    }
  expect_same(decode(DType::IQ3_XXS, blk.b, 256), want, "iq3_xxs");
}

TEST(GgmlDecodeOther, IQ3_SGolden) {
  Block blk(110);
  blk.u16(0, 0x3800);  // d = 0.5
  // Sub-block 3: indices 3, 260, 300, 511 for the two entries of groups 0 and 1 (bit 8 of the k-th index of the
  // sub-block is bit k of qh[3]); groups 2 and 3 use index 0.
  const unsigned idx[8] = {3, 260, 300, 511, 0, 0, 0, 0};
  unsigned qh = 0;
  for (int k = 0; k < 8; ++k) {
    blk.u8(2 + 24 + k, idx[k] & 0xff);
    qh |= ((idx[k] >> 8) & 1u) << k;
  }
  EXPECT_EQ(qh, 0x0eu);
  blk.u8(66 + 3, qh);
  const unsigned sg[4] = {0x0f, 0xf0, 0x00, 0x00};
  for (int l = 0; l < 4; ++l) blk.u8(74 + 12 + l, sg[l]);
  blk.u8(106 + 1, 0x60);  // sub-block 3 scale 6 (high nibble), sub-block 2 scale 0
  auto level = [](unsigned i, int j) {  // iq3s_grid entries used
    switch (i) {
      case 0: { const int v[4] = {1, 1, 1, 1}; return v[j]; }
      case 3: { const int v[4] = {11, 1, 1, 1}; return v[j]; }       // 0x0101010b
      case 260: { const int v[4] = {5, 15, 9, 5}; return v[j]; }     // 0x05090f05
      case 300: { const int v[4] = {3, 5, 3, 7}; return v[j]; }      // 0x07030503
      default: { const int v[4] = {1, 1, 15, 15}; return v[j]; }    // [511] 0x0f0f0101
    }
  };
  std::vector<float> want(256);
  for (int w = 0; w < 256; ++w) want[w] = 0.5f * static_cast<float>(1 + 2 * 0) * 1.0f;
  const float db = 0.5f * static_cast<float>(1 + 2 * 6);
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j)
      want[96 + 8 * l + j] = db * static_cast<float>(level(idx[2 * l + j / 4], j % 4)) * sign8(sg[l], j);
  expect_same(decode(DType::IQ3_S, blk.b, 256), want, "iq3_s");
}

TEST(GgmlDecodeOther, IQ1_SGolden) {
  Block blk(50);
  blk.u16(0, 0x3C00);  // d = 1
  // Sub-block 0: indices 0, 1, 700, 1030 (11 bits: low byte in qs, 3 high bits in qh), scale 2, delta -0.125.
  const unsigned idx[4] = {0, 1, 700, 1030};
  unsigned qh = (2u << 12) | 0x8000u;
  for (int l = 0; l < 4; ++l) {
    blk.u8(2 + l, idx[l] & 0xff);
    qh |= (idx[l] >> 8) << (3 * l);
  }
  blk.u16(34, qh);
  // Sub-block 5: index 2047 in group 0, scale 7, delta +0.125.
  blk.u8(2 + 20, 0xff);
  blk.u16(34 + 10, 7u | (7u << 12));
  const int lv[5][8] = {{-1, -1, -1, -1, -1, -1, -1, -1},   // iq1s_grid[0]
                        {1, -1, -1, -1, -1, -1, -1, -1},    // [1] = 0xffffffffffffff01
                        {0, -1, 0, 0, -1, 0, -1, 0},        // [700] = 0x00ff00ff0000ff00
                        {1, 0, 0, 0, 0, 0, 0, 0},           // [1030] = 0x0000000000000001
                        {1, 1, 1, 1, 1, 1, 1, 1}};          // [2047]
  std::vector<float> want(256);
  for (int w = 0; w < 256; ++w) want[w] = 1.0f * static_cast<float>(2 * 0 + 1) * (-1.0f + 0.125f);
  const float dl0 = 1.0f * static_cast<float>(2 * 2 + 1);
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j) want[8 * l + j] = dl0 * (static_cast<float>(lv[l][j]) + -0.125f);
  const float dl5 = 1.0f * static_cast<float>(2 * 7 + 1);
  for (int j = 0; j < 8; ++j) want[160 + j] = dl5 * (static_cast<float>(lv[4][j]) + 0.125f);
  for (int w = 168; w < 192; ++w) want[w] = dl5 * (-1.0f + 0.125f);
  expect_same(decode(DType::IQ1_S, blk.b, 256), want, "iq1_s");
}

TEST(GgmlDecodeOther, IQ1_MGolden) {
  Block blk(56);
  // d = -0.5 = fp16 0xB800, stored as the top nibbles of the four u16 scales: 0x0, 0x0, 0x8, 0xB.
  // 3-bit scales in the low 12 bits of scales[0]: sub-block 0 -> 1 (groups 0-1), 2 (groups 2-3);
  // sub-block 1 -> 7, 0. All other sub-blocks 0.
  blk.u16(48, 1u | (2u << 3) | (7u << 6) | (0u << 9));
  blk.u16(50, 0);
  blk.u16(52, 0x8000);
  blk.u16(54, 0xB000);
  // Sub-block 0: indices 700, 1030, 2047, 1; deltas -, +, +, -.
  const unsigned idx[4] = {700, 1030, 2047, 1};
  const bool neg[4] = {true, false, false, true};
  for (int l = 0; l < 4; ++l) blk.u8(l, idx[l] & 0xff);
  for (int pair = 0; pair < 2; ++pair) {
    const int a = 2 * pair, b = a + 1;
    blk.u8(32 + pair, (idx[a] >> 8) | (neg[a] ? 0x08u : 0u) | ((idx[b] >> 8) << 4) | (neg[b] ? 0x80u : 0u));
  }
  EXPECT_EQ(static_cast<int>(blk.b[32]), 0x4a);
  EXPECT_EQ(static_cast<int>(blk.b[33]), 0x87);
  const int lv[4][8] = {{0, -1, 0, 0, -1, 0, -1, 0},        // iq1s_grid[700]
                        {1, 0, 0, 0, 0, 0, 0, 0},           // [1030]
                        {1, 1, 1, 1, 1, 1, 1, 1},           // [2047]
                        {1, -1, -1, -1, -1, -1, -1, -1}};   // [1]
  std::vector<float> want(256);
  for (int w = 0; w < 256; ++w) want[w] = -0.5f * static_cast<float>(2 * 0 + 1) * (-1.0f + 0.125f);
  const float dl[2] = {-0.5f * static_cast<float>(2 * 1 + 1), -0.5f * static_cast<float>(2 * 2 + 1)};
  for (int l = 0; l < 4; ++l)
    for (int j = 0; j < 8; ++j)
      want[8 * l + j] = dl[l / 2] * (static_cast<float>(lv[l][j]) + (neg[l] ? -0.125f : 0.125f));
  for (int w = 32; w < 48; ++w) want[w] = -0.5f * static_cast<float>(2 * 7 + 1) * (-1.0f + 0.125f);
  expect_same(decode(DType::IQ1_M, blk.b, 256), want, "iq1_m");
}

// All-zero bytes: d = 0 in every type, so every weight is (+-)0.
TEST(GgmlDecodeOther, ZeroBlocksDecodeToZero) {
  for (DType t : kOtherTypes) {
    const lowbit::DTypeInfo info = lowbit::dtype_info(t);
    const std::vector<std::byte> zeros(2 * info.block_bytes, std::byte{0});
    const std::vector<float> y = decode(t, zeros, 2 * info.block);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], 0.0f) << info.name << " weight " << i;
  }
}

// A row of several blocks is each block decoded in turn (strides), and decoding is deterministic. The scale
// fields get finite fp16 values so that nothing is NaN.
TEST(GgmlDecodeOther, RowIsBlocksInSequence) {
  std::mt19937 rng(20250220);
  for (DType t : kOtherTypes) {
    const lowbit::DTypeInfo info = lowbit::dtype_info(t);
    const int nb = 3;
    std::vector<std::byte> row(nb * info.block_bytes);
    for (auto& c : row) c = static_cast<std::byte>(rng() & 0xff);
    for (int b = 0; b < nb; ++b) {
      std::byte* blk = row.data() + b * info.block_bytes;
      auto finite_f16 = [&](size_t at) {  // exponent field below 31
        blk[at + 1] = static_cast<std::byte>(static_cast<unsigned>(blk[at + 1]) & 0xbf);
      };
      switch (t) {
        case DType::Q8_K: {
          const float d = 0.001f * static_cast<float>(b + 1);
          std::memcpy(blk, &d, 4);
          break;
        }
        case DType::TQ1_0: finite_f16(52); break;
        case DType::TQ2_0: finite_f16(64); break;
        case DType::IQ1_M: blk[55] = static_cast<std::byte>(static_cast<unsigned>(blk[55]) & 0xbf); break;
        default: finite_f16(0); break;
      }
    }
    const std::vector<float> whole = decode(t, row, nb * info.block);
    for (int b = 0; b < nb; ++b) {
      const std::vector<std::byte> one(row.begin() + b * info.block_bytes, row.begin() + (b + 1) * info.block_bytes);
      const std::vector<float> part = decode(t, one, info.block);
      const std::vector<float> slice(whole.begin() + b * info.block, whole.begin() + (b + 1) * info.block);
      expect_same(slice, part, info.name.data());
      for (float v : part) ASSERT_TRUE(std::isfinite(v)) << info.name;
    }
    expect_same(decode(t, row, nb * info.block), whole, info.name.data());
  }
}

TEST(GgmlDecodeOther, RejectsPartialBlocks) {
  for (DType t : kOtherTypes) {
    const lowbit::DTypeInfo info = lowbit::dtype_info(t);
    std::vector<std::byte> bytes(2 * info.block_bytes, std::byte{0});
    std::vector<float> out(2 * info.block);
    try {
      lf::ggml_decode_row(t, bytes.data(), info.block + 1, out.data());
      ADD_FAILURE() << info.name << ": no error for a partial block";
    } catch (const lowbit::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(std::string(info.name)), std::string::npos) << msg;
      EXPECT_NE(msg.find("multiple of its block of " + std::to_string(info.block)), std::string::npos) << msg;
    }
    EXPECT_THROW(lf::ggml_decode_row(t, bytes.data(), -static_cast<int64_t>(info.block), out.data()),
                 lowbit::Error);
    // Zero values is a whole number of blocks: nothing written.
    lf::ggml_decode_row(t, bytes.data(), 0, out.data());
  }
}

TEST(GgmlDecodeOther, OnlyClaimsItsOwnTypes) {
  std::vector<std::byte> bytes(512, std::byte{0});
  std::vector<float> out(256, 1.0f);
  for (DType t : {DType::F32, DType::F16, DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::IQ4_NL, DType::IQ4_XS})
    EXPECT_FALSE(lf::ggml_decode_other_row(t, bytes.data(), 256, out.data())) << lowbit::dtype_name(t);
  for (float v : out) EXPECT_EQ(v, 1.0f);  // untouched
  for (DType t : kOtherTypes)
    EXPECT_TRUE(lf::ggml_decode_other_row(t, bytes.data(), lowbit::dtype_info(t).block, out.data()))
        << lowbit::dtype_name(t);
}

// The plain types ggml_decode_row handles itself.
TEST(GgmlDecodeOther, PlainTypesThroughDecodeRow) {
  auto bytes_of = [](const auto& values) {
    std::vector<std::byte> b(sizeof(values[0]) * values.size());
    std::memcpy(b.data(), values.data(), b.size());
    return b;
  };
  {
    const std::vector<double> v = {1.5, -2.25, 1e300, 0.1};
    const auto y = decode(DType::F64, bytes_of(v), 4);
    EXPECT_EQ(y[0], 1.5f);
    EXPECT_EQ(y[1], -2.25f);
    EXPECT_TRUE(std::isinf(y[2]) && y[2] > 0);
    EXPECT_EQ(y[3], 0.1f);
  }
  {
    const std::vector<int8_t> v = {-128, 127, 0, -1};
    expect_same(decode(DType::I8, bytes_of(v), 4), {-128.0f, 127.0f, 0.0f, -1.0f}, "i8");
  }
  {
    const std::vector<int16_t> v = {-32768, 12345, 32767};
    expect_same(decode(DType::I16, bytes_of(v), 3), {-32768.0f, 12345.0f, 32767.0f}, "i16");
  }
  {
    const std::vector<int32_t> v = {std::numeric_limits<int32_t>::min(), 16777217, -7};
    expect_same(decode(DType::I32, bytes_of(v), 3), {-2147483648.0f, 16777216.0f, -7.0f}, "i32");
  }
  {
    const std::vector<int64_t> v = {-(int64_t{1} << 40), std::numeric_limits<int64_t>::max(), 3};
    expect_same(decode(DType::I64, bytes_of(v), 3), {-1099511627776.0f, 9223372036854775808.0f, 3.0f}, "i64");
  }
  {
    const std::vector<uint16_t> v = {0x3C00, 0xC000, 0x7C00, 0x0001, 0x3555};
    const auto y = decode(DType::F16, bytes_of(v), 5);
    EXPECT_EQ(y[0], 1.0f);
    EXPECT_EQ(y[1], -2.0f);
    EXPECT_TRUE(std::isinf(y[2]));
    EXPECT_EQ(y[3], std::ldexp(1.0f, -24));
    EXPECT_EQ(y[4], 0.333251953125f);
  }
  {
    const std::vector<uint16_t> v = {0x3F80, 0xC0A0, 0x3EAA};
    const auto y = decode(DType::BF16, bytes_of(v), 3);
    EXPECT_EQ(y[0], 1.0f);
    EXPECT_EQ(y[1], -5.0f);
    EXPECT_EQ(y[2], 0.33203125f);
  }
}
