// Matrix products on llama.cpp block types (ops/ggml_dot.h), on every Highway target this CPU runs:
//  1. the block decomposition S_g * (u_i - c) - M_g equals ggml's dequantization (formats::ggml_decode_row,
//     itself checked bit for bit against llama.cpp's in tests/formats) for random blocks of every type;
//  2. the SIMD kernel (decode and batched) agrees with the scalar reference ggml_dot_row_ref to float rounding;
//  3. the reference equals the dequantized weights dotted with the dequantized int8 activations (double sums);
//  4. the activation quantizers follow llama.cpp's rules (Q8_0: fp16 scale max|x|/127; Q8_K: -127/x_max);
//  5. ops::matmul (threads, batches) equals the single-threaded rows, and the whole path stays within the int8
//     activation rounding of the f32 product.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_blocks.h"
#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "ops/ggml_dot.h"
#include "ops/ops.h"
#include "ops/ops_test_util.h"

namespace lowbit::ops::test {
namespace {

const DType kTypes[] = {DType::Q8_0,   DType::Q4_0,   DType::Q4_1,  DType::Q5_0,    DType::Q5_1,
                        DType::IQ4_NL, DType::Q2_K,   DType::Q3_K,  DType::Q4_K,    DType::Q5_K,
                        DType::Q6_K,   DType::IQ4_XS, DType::IQ2_XXS, DType::IQ2_XS, DType::IQ2_S,
                        DType::IQ3_XXS, DType::IQ3_S, DType::IQ1_S, DType::IQ1_M};
const DType kIqTypes[] = {DType::IQ2_XXS, DType::IQ2_XS, DType::IQ2_S, DType::IQ3_XXS,
                          DType::IQ3_S,   DType::IQ1_S,  DType::IQ1_M};
bool is_iq(DType t) { return std::find(std::begin(kIqTypes), std::end(kIqTypes), t) != std::end(kIqTypes); }

// Offsets of the fp16 fields of a block (the rest of the bytes may be anything).
std::vector<int> half_fields(DType t) {
  switch (t) {
    case DType::Q4_1: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K: return {0, 2};
    case DType::Q2_K: return {80, 82};
    case DType::Q3_K: return {108};
    case DType::Q6_K: return {208};
    default: return {0};
  }
}

// Random but valid rows: random bytes, fp16 fields set to finite values of either sign.
struct Rows {
  std::vector<std::byte> bytes;
  WeightView view;
};
Rows random_rows(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  const DTypeInfo info = dtype_info(t);
  const size_t rb = cols / info.block * info.block_bytes;
  Rows r;
  r.bytes.resize(rb * static_cast<size_t>(rows) + 5);
  for (auto& b : r.bytes) b = static_cast<std::byte>(rng() & 0xFF);
  std::byte* base = r.bytes.data() + 5;  // unaligned rows
  std::uniform_real_distribution<float> ud(-0.02f, 0.02f);
  for (int64_t k = 0; k < rows * (cols / info.block); ++k) {
    if (t == DType::IQ1_M) {  // fp16 d in the top nibbles of the four 16-bit scale words (bytes 48..55)
      const uint16_t h = f32_to_f16(ud(rng));
      for (int j = 0; j < 4; ++j) {
        std::byte* hi = base + k * info.block_bytes + 48 + 2 * j + 1;
        *hi = static_cast<std::byte>((static_cast<unsigned>(*hi) & 0x0F) | (((h >> (4 * j)) & 0xF) << 4));
      }
      continue;
    }
    for (int off : half_fields(t)) {
      const uint16_t h = f32_to_f16(ud(rng));
      std::memcpy(base + k * info.block_bytes + off, &h, 2);
    }
  }
  r.view.dtype = t;
  r.view.rows = rows;
  r.view.cols = cols;
  r.view.row_bytes = rb;
  r.view.data = base;
  return r;
}

class GgmlDot : public PerTarget {};
LOWBIT_INSTANTIATE_PER_TARGET(GgmlDot);

// The traits table (formats/ggml_blocks.h) against the dtype table and each type's decomposition on random blocks:
// whether there is a min, and over how many values S and M stay the same. (The centre is read from the table by
// ggml_block_terms; DecompositionEqualsDequantization checks it against each type's own decoder.)
TEST(GgmlTraits, MatchDecomposition) {
  namespace FB = formats::blocks;
  for (DType t : kTypes) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const FB::Traits tr = FB::traits(t);
    ASSERT_EQ(tr.values, static_cast<int>(dtype_info(t).block));
    ASSERT_EQ(static_cast<size_t>(tr.bytes), dtype_info(t).block_bytes);
    Rows r = random_rows(t, 1, 64 * tr.values, 5);
    bool any_min = false, any_pair_differs = false;
    detail::GgmlBlockTerms bt;
    for (int b = 0; b < 64; ++b) {
      detail::ggml_block_terms(t, r.view.data + b * tr.bytes, bt);
      for (int g = 0; g < tr.values / 16; ++g) {
        any_min = any_min || bt.M[g] != 0.0f;
        if (g % 2 == 1) {
          const bool same = bt.S[g] == bt.S[g - 1] && bt.M[g] == bt.M[g - 1];
          if (tr.scale_group == 32) EXPECT_TRUE(same) << "block " << b << " group " << g;
          any_pair_differs = any_pair_differs || !same;
        }
      }
    }
    EXPECT_EQ(any_min, tr.has_min);
    if (tr.scale_group == 16) EXPECT_TRUE(any_pair_differs);  // 16-value groups really have their own scales
    if (tr.has_min) EXPECT_EQ(tr.centre, 0);
  }
}

TEST_P(GgmlDot, DecompositionEqualsDequantization) {
  for (DType t : kTypes) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const int B = detail::ggml_block_values(t);
    Rows r = random_rows(t, 1, 8 * B, 11);
    std::vector<float> ref(static_cast<size_t>(8 * B));
    formats::ggml_decode_row(t, r.view.data, 8 * B, ref.data());
    detail::GgmlBlockTerms bt;
    for (int b = 0; b < 8; ++b) {
      detail::ggml_block_terms(t, r.view.data + b * dtype_info(t).block_bytes, bt);
      for (int i = 0; i < B; ++i) {
        const float v = bt.S[i / 16] * static_cast<float>(static_cast<int>(bt.u[i]) - bt.c) - bt.M[i / 16];
        ASSERT_NEAR(v, ref[static_cast<size_t>(b * B + i)], 1e-6f * (std::fabs(ref[b * B + i]) + 1e-3f))
            << "block " << b << " value " << i;
      }
    }
  }
}

TEST_P(GgmlDot, KernelMatchesReference) {
  for (DType t : kTypes) {
    const int B = detail::ggml_block_values(t);
    // Whole 256-value chunks, and (32-value types) rows with a tail of blocks outside the chunks.
    for (int64_t cols : {int64_t{256}, int64_t{1024}, int64_t{B == 32 ? 32 * 11 : 512}}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " cols " + std::to_string(cols));
      // Odd row and token counts: every row- and token-tail of the batched kernel's register tiles.
      const int64_t rows = 9, ntok = 7;
      Rows w = random_rows(t, rows, cols, 7 + static_cast<uint32_t>(cols));
      std::vector<detail::GgmlActs> acts(ntok);
      for (int64_t k = 0; k < ntok; ++k) {
        const auto x = random_floats(static_cast<size_t>(cols), 100 + static_cast<uint32_t>(k), -2.0f, 2.0f);
        detail::quantize_acts_ggml(t, x.data(), cols, acts[k], /*gemm=*/true);
      }
      std::vector<float> y1(static_cast<size_t>(rows)), yb(static_cast<size_t>(rows * ntok));
      detail::gemm_ggml_rows(w.view, acts.data(), 1, 0, rows, y1.data(), rows);
      detail::gemm_ggml_rows(w.view, acts.data(), ntok, 0, rows, yb.data(), rows);
      for (int64_t k = 0; k < ntok; ++k)
        for (int64_t rr = 0; rr < rows; ++rr) {
          const std::byte* row = w.view.data + rr * w.view.row_bytes;
          const double ref = detail::ggml_dot_row_ref(t, row, acts[k]);
          // Bound: float rounding of the sum of |terms|.
          std::vector<float> wd(static_cast<size_t>(cols));
          formats::ggml_decode_row(t, row, cols, wd.data());
          double mag = 0;
          for (int64_t i = 0; i < cols; ++i) mag += std::fabs(wd[i]) * std::fabs(acts[k].dg[i / 16] * acts[k].q[i]);
          const double tol = 2e-5 * mag + 1e-7;
          EXPECT_NEAR(yb[k * rows + rr], ref, tol) << "batched token " << k << " row " << rr;
          if (k == 0) EXPECT_NEAR(y1[rr], ref, tol) << "decode row " << rr;
          // 3. against the dequantized product in double.
          double exact = 0;
          for (int64_t i = 0; i < cols; ++i) exact += static_cast<double>(wd[i]) * acts[k].dg[i / 16] * acts[k].q[i];
          EXPECT_NEAR(ref, exact, tol) << "reference row " << rr;
        }
    }
  }
}

// The batched quantizer (SIMD on the VNNI path) equals the scalar rules exactly, including a block of zeros, a
// value of largest magnitude that appears with both signs (Q8_K takes the first) and a partial super-chunk.
TEST_P(GgmlDot, BatchedActivationsEqualReference) {
  for (DType t : kTypes) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const int64_t n = detail::ggml_block_values(t) == 32 ? 32 * 21 : 256 * 3;
    auto x = random_floats(static_cast<size_t>(n), 17, -3.0f, 3.0f);
    std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
    x[300] = 4.5f;
    x[290] = -4.5f;  // first in its Q8_K block
    detail::GgmlActs ref, fast;
    detail::quantize_acts_ggml(t, x.data(), n, ref, /*gemm=*/true);
    detail::quantize_acts_batched(t, x.data(), n, fast);
    if (std::string(ggml_kernel_path()) == "avx512-vnni") {
      EXPECT_EQ(fast.unit, ref.unit);
      EXPECT_EQ(fast.supers, ref.supers);
      EXPECT_EQ(fast.qg, ref.qg);
      EXPECT_EQ(fast.du, ref.du);
      EXPECT_EQ(fast.da, ref.da);
      EXPECT_EQ(fast.ci, ref.ci);
      EXPECT_EQ(fast.as, ref.as);
      // The kernels read these 64 bytes at a time: cache-line aligned (CacheAligned), not malloc's 16 bytes.
      for (const void* p : {static_cast<const void*>(fast.qg.data()), static_cast<const void*>(fast.du.data()),
                            static_cast<const void*>(fast.da.data()), static_cast<const void*>(fast.ci.data()),
                            static_cast<const void*>(fast.as.data())})
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
    } else {
      EXPECT_EQ(fast.q, ref.q);
      EXPECT_EQ(fast.dg, ref.dg);
      EXPECT_EQ(fast.ag, ref.ag);
    }
  }
}

// Weights repacked at load (ops.h repack_for_kernels) for decode and batches: every repackable type against the
// scalar reference on the same activations, with rows whose length is not whole super-chunks (512 values).
TEST_P(GgmlDot, RepackedMatchesReference) {
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::IQ4_NL, DType::Q4_K, DType::IQ4_XS, DType::Q8_0, DType::Q2_K,
                  DType::Q3_K, DType::Q6_K, DType::IQ2_XXS, DType::IQ2_XS, DType::IQ2_S, DType::IQ3_XXS,
                  DType::IQ3_S, DType::IQ1_S, DType::IQ1_M}) {
    const int B = detail::ggml_block_values(t);
    for (int64_t cols : {int64_t{256}, int64_t{1024}, int64_t{B == 32 ? 32 * 11 : 768}}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " cols " + std::to_string(cols));
      const int64_t rows = 9, ntok = 5;
      Rows w = random_rows(t, rows, cols, 3 + static_cast<uint32_t>(cols));
      RepackedPtr rp = repack_for_kernels(w.view);
      if (!rp) continue;  // no repacked layout on this target
      WeightView v = w.view;
      v.repacked = rp.get();
      // Whole super-chunks: the repacked copy is at most 6% larger than the blocks (rows in fours); the i-quants'
      // level indices and headers take at most 3.625 bits per weight (IQ2, IQ1: 3-bit indices) or 4.625 (IQ3).
      if (cols == 1024 && !is_iq(t))
        EXPECT_LE(repacked_bytes(*rp), 1.06 * static_cast<double>((rows + 3) / 4 * 4 * w.view.row_bytes));
      const bool three = t != DType::IQ3_XXS && t != DType::IQ3_S;
      if (cols == 1024 && is_iq(t))
        EXPECT_LE(repacked_bytes(*rp), (three ? 3.625 : 4.625) / 8 * static_cast<double>((rows + 3) / 4 * 4 * cols));
      const auto x = random_floats(static_cast<size_t>(cols * ntok), 41, -2.0f, 2.0f);
      std::vector<float> yb(static_cast<size_t>(rows * ntok)), y1(yb.size());
      matmul(v, x.data(), ntok, yb.data());
      for (int64_t k = 0; k < ntok; ++k) matmul(v, x.data() + k * cols, 1, y1.data() + k * rows);
      std::vector<float> wd(static_cast<size_t>(cols));
      for (int64_t k = 0; k < ntok; ++k) {
        detail::GgmlActs a;
        detail::quantize_acts_ggml(t, x.data() + k * cols, cols, a);
        for (int64_t rr = 0; rr < rows; ++rr) {
          const std::byte* row = w.view.data + rr * w.view.row_bytes;
          const double ref = detail::ggml_dot_row_ref(t, row, a);
          formats::ggml_decode_row(t, row, cols, wd.data());
          double mag = 0;
          for (int64_t i = 0; i < cols; ++i) mag += std::fabs(wd[i]) * std::fabs(a.dg[i / 16] * a.q[i]);
          EXPECT_NEAR(yb[k * rows + rr], ref, 2e-5 * mag + 1e-7) << "batch token " << k << " row " << rr;
          EXPECT_NEAR(y1[k * rows + rr], ref, 2e-5 * mag + 1e-7) << "decode token " << k << " row " << rr;
        }
      }
    }
  }
}

TEST(GgmlActs, Q8_0RulesAndSums) {
  std::vector<float> x = random_floats(64, 3, -3.0f, 3.0f);
  x[5] = -7.5f;  // block 0's extreme
  detail::GgmlActs a;
  detail::quantize_acts_ggml(DType::Q4_0, x.data(), 64, a);
  const float d0 = lowbit::f16_to_f32(lowbit::f32_to_f16(7.5f / 127.0f));
  EXPECT_EQ(a.dg[0], d0);
  EXPECT_EQ(a.dg[1], d0);  // both 16-groups of block 0
  EXPECT_EQ(a.q[5], -127);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(a.q[i], static_cast<int>(std::nearbyint(x[i] * (127.0f / 7.5f))));
  for (int g = 0; g < 4; ++g) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += a.q[16 * g + i];
    EXPECT_EQ(a.ag[g], s);
  }
  EXPECT_THROW(detail::quantize_acts_ggml(DType::Q4_0, x.data(), 48, a), Error);  // not whole blocks
  // A NaN activation (NaN weights upstream) gives code 0, not an undefined conversion (UBSan checks this).
  x[3] = std::nanf("");
  detail::quantize_acts_ggml(DType::Q4_0, x.data(), 64, a);
  EXPECT_EQ(a.q[3], 0);
  EXPECT_EQ(a.q[5], -127);
}

TEST(GgmlActs, Q8_KRulesAndZeroBlock) {
  std::vector<float> x(512, 0.0f);
  auto r = random_floats(256, 4, -1.0f, 1.0f);
  std::copy(r.begin(), r.end(), x.begin());
  x[17] = 2.0f;  // positive extreme: iscale = -127 / 2, codes negated, clamped at 127
  detail::GgmlActs a;
  detail::quantize_acts_ggml(DType::Q4_K, x.data(), 512, a);
  EXPECT_FLOAT_EQ(a.dg[0], 1.0f / (-127.0f / 2.0f));
  EXPECT_EQ(a.q[17], -127);
  for (int g = 16; g < 32; ++g) EXPECT_EQ(a.dg[g], 0.0f);  // all-zero second block
  for (int i = 256; i < 512; ++i) EXPECT_EQ(a.q[i], 0);
  for (int i = 0; i < 256; ++i) EXPECT_NEAR(a.dg[0] * a.q[i], x[i], std::fabs(a.dg[0]) * 0.5f + 1e-7f);
}

TEST_P(GgmlDot, MatmulThreadsAndBatchesAgree) {
  for (DType t : {DType::Q4_0, DType::Q4_K, DType::Q8_0, DType::Q6_K, DType::IQ2_XS, DType::IQ3_XXS}) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const int64_t rows = 200, cols = 1024, ntok = 4;
    Rows w = random_rows(t, rows, cols, 21);
    const auto x = random_floats(static_cast<size_t>(cols * ntok), 5);
    std::vector<float> y1(static_cast<size_t>(rows * ntok)), y2(y1.size()), yd(y1.size());
    set_num_threads(1);
    matmul(w.view, x.data(), ntok, y1.data());
    set_num_threads(2);
    matmul(w.view, x.data(), ntok, y2.data());
    for (int64_t k = 0; k < ntok; ++k) matmul(w.view, x.data() + k * cols, 1, yd.data() + k * rows);
    set_num_threads(0);
    EXPECT_EQ(y1, y2);  // a (row, token) result does not depend on how rows are split between threads
    // Batches (the register-tiled GEMM) and decode (per-row kernel) sum the same integer products in another float
    // order: equal to float rounding of the sum of |terms|.
    std::vector<float> wd(static_cast<size_t>(cols));
    for (int64_t rr = 0; rr < rows; ++rr) {
      formats::ggml_decode_row(t, w.view.data + rr * w.view.row_bytes, cols, wd.data());
      for (int64_t k = 0; k < ntok; ++k) {
        double mag = 0;
        for (int64_t i = 0; i < cols; ++i) mag += std::fabs(wd[i] * x[k * cols + i]);
        ASSERT_NEAR(y1[k * rows + rr], yd[k * rows + rr], 2e-6 * mag + 1e-7) << "row " << rr << " token " << k;
      }
    }
    // Within int8 activation rounding of the f32 product: |error| <= sum |w| * d / 2.
    detail::GgmlActs a;
    for (int64_t rr = 0; rr < rows; rr += 37) {
      formats::ggml_decode_row(t, w.view.data + rr * w.view.row_bytes, cols, wd.data());
      detail::quantize_acts_ggml(t, x.data(), cols, a);
      double exact = 0, bound = 0;
      for (int64_t i = 0; i < cols; ++i) {
        exact += static_cast<double>(wd[i]) * x[i];
        bound += std::fabs(wd[i]) * std::fabs(a.dg[i / 16]) * 0.5 + 1e-6 * std::fabs(wd[i] * x[i]);
      }
      EXPECT_NEAR(y1[rr], exact, bound);
    }
  }
}

}  // namespace
}  // namespace lowbit::ops::test

namespace lowbit::ops::test {
namespace {

// Types without an integer kernel (TQ, Q8_K/Q8_1) still run: each row is decoded and dotted in f32 (decode) or
// widened into the BLAS panel (batches). Random bytes <= 0x3F keep every fp16 / f32 scale finite.
TEST(GgmlDecodeOnly, MatmulEqualsDecodedProduct) {
  for (DType t : {DType::TQ1_0, DType::TQ2_0, DType::Q8_K, DType::Q8_1}) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const DTypeInfo info = dtype_info(t);
    const int64_t rows = 5, cols = 512, ntok = 3;
    const size_t rb = cols / info.block * info.block_bytes;
    std::vector<std::byte> bytes(rb * rows);
    std::mt19937 rng(static_cast<uint32_t>(t));
    for (auto& b : bytes) b = static_cast<std::byte>(rng() & 0x3F);
    TensorInfo ti;
    ti.name = "w";
    ti.dtype = t;
    ti.shape = {rows, cols};
    ti.data = bytes.data();
    ti.nbytes = bytes.size();
    const WeightView w = view_of(ti);
    const auto x = random_floats(static_cast<size_t>(cols * ntok), 9);
    std::vector<float> yb(static_cast<size_t>(rows * ntok)), y1(static_cast<size_t>(rows));
    matmul(w, x.data(), ntok, yb.data());
    std::vector<float> wd(static_cast<size_t>(cols));
    for (int64_t k = 0; k < ntok; ++k) {
      matmul(w, x.data() + k * cols, 1, y1.data());
      for (int64_t r = 0; r < rows; ++r) {
        formats::ggml_decode_row(t, bytes.data() + r * rb, cols, wd.data());
        double exact = 0, mag = 0;
        for (int64_t i = 0; i < cols; ++i) {
          exact += static_cast<double>(wd[i]) * x[k * cols + i];
          mag += std::fabs(static_cast<double>(wd[i]) * x[k * cols + i]);
        }
        ASSERT_TRUE(std::isfinite(exact));
        EXPECT_NEAR(y1[r], exact, 1e-5 * mag + 1e-6) << "decode row " << r;
        EXPECT_NEAR(yb[k * rows + r], exact, 1e-5 * mag + 1e-6) << "batched row " << r;
      }
    }
  }
}

TEST(GgmlDecodeOnly, BadShapeIsAClearError) {
  std::vector<std::byte> bytes(1000);
  TensorInfo ti;
  ti.name = "blk.0.attn_q.weight";
  ti.file = "m.gguf";
  ti.dtype = DType::Q4_K;
  ti.shape = {2, 300};  // 300 is not whole 256-value super-blocks
  ti.data = bytes.data();
  ti.nbytes = bytes.size();
  try {
    view_of(ti);
    FAIL() << "accepted 300 columns of q4_K";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("m.gguf"), std::string::npos) << m;
    EXPECT_NE(m.find("blk.0.attn_q.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("256"), std::string::npos) << m;
  }
  ti.shape = {8, 256};  // 8 rows need 8 * 144 bytes
  EXPECT_THROW(view_of(ti), Error);
}

}  // namespace
}  // namespace lowbit::ops::test
