// Packed intN matmul against two references, on every Highway target this CPU runs:
//  1. gemv_intn_rows_ref: the same integer arithmetic in double, codes read one at a time through the format's
//     scalar unpacker. The kernels must agree to float rounding: |y - ref| <= 1e-5 * sum|terms|.
//  2. the dequantize-then-f32 dot (format decode, double accumulation). The only difference is the activation
//     rounding, |x - d q| <= d / 2 per element with d = max|x| / act_max per block (act_max = 127 * 256 for int16
//     activations, 127 * 16 and 127 * 64 for the AVX3_DL 4- and 2-bit kernels), so |ref - f32| <= sum_i |w_i| * d_block(i) / 2.
// Every bit width 2..8, group 32/64/128, symmetric and asymmetric; odd row lengths (partial last blocks).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "formats/format.h"
#include "formats/intn.h"
#include "ops/ggml_dot.h"
#include "ops/kernels.h"
#include "ops/ops.h"
#include "ops/ops_test_util.h"
#include "ops/reference.h"

namespace lowbit::ops::test {
namespace {

struct Packed {
  std::vector<std::byte> bytes;
  std::vector<float> deq;  // rows x cols decoded by the format (reference)
  WeightView view;
};

Packed make_packed(const formats::IntNFormat& f, int64_t rows, int64_t cols, uint32_t seed) {
  Packed p;
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = nd(rng);
  w[static_cast<size_t>(rows * cols / 2)] = 0.9f;  // an outlier
  const size_t rb = formats::row_bytes(f, cols);
  p.bytes.resize(rb * static_cast<size_t>(rows) + 3);
  std::byte* base = p.bytes.data() + 3;  // rows not aligned
  p.deq.resize(w.size());
  for (int64_t r = 0; r < rows; ++r) {
    std::span<const float> row(w.data() + r * cols, static_cast<size_t>(cols));
    formats::encode_row(f, row, {}, base + r * rb);
    formats::decode_row(f, base + r * rb, std::span<float>(p.deq.data() + r * cols, static_cast<size_t>(cols)));
  }
  p.view.dtype = DType::I8;
  p.view.rows = rows;
  p.view.cols = cols;
  p.view.row_bytes = rb;
  p.view.data = base;
  p.view.intn = &f;
  return p;
}

std::vector<float> activations(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = nd(rng);
  if (n > 5) x[5] = 12.0f;  // an activation outlier in the first block
  return x;
}

class IntNGemv : public PerTarget {};

TEST_P(IntNGemv, EveryFormatMatchesTheScalarReferenceAndTheF32Path) {
  int checked = 0;
  uint32_t seed = 1;
  for (int bits = 2; bits <= 8; ++bits)
    for (int g : {32, 64, 128})
      for (bool asym : {false, true}) {
        const std::string name = "int" + std::to_string(bits) + "g" + std::to_string(g) + (asym ? "a" : "s");
        const formats::IntNFormat& f = formats::intn_format(name);
        const int act_max = detail::intn_act_max(bits);
        for (int64_t cols : {int64_t{g}, int64_t{3 * g}, int64_t{2 * g + 7}, int64_t{172}, int64_t{5}, int64_t{17 * g + 3}}) {
          const int64_t rows = 13;
          const Packed p = make_packed(f, rows, cols, seed++);
          const std::vector<float> x = activations(cols, seed++);
          std::vector<float> y(static_cast<size_t>(rows)), ref(y.size());
          matmul(p.view, x.data(), 1, y.data());
          gemv_intn_rows_ref(p.view, x.data(), 0, rows, ref.data(), act_max);
          for (int64_t r = 0; r < rows; ++r) {
            double mag = 0, f32 = 0, act_err = 0;
            for (int64_t c = 0; c < cols; ++c) {
              const int64_t b0 = c / g * g, len = std::min<int64_t>(g, cols - b0);
              float amax = 0;
              for (int64_t i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[static_cast<size_t>(b0 + i)]));
              const double wv = p.deq[static_cast<size_t>(r * cols + c)];
              mag += std::fabs(wv * x[static_cast<size_t>(c)]) + std::fabs(wv) * amax / act_max;
              f32 += wv * x[static_cast<size_t>(c)];
              act_err += std::fabs(wv) * amax / act_max / 2.0;
            }
            ASSERT_NEAR(y[r], ref[r], 1e-5 * mag + 1e-20) << name << " cols " << cols << " row " << r;
            ASSERT_NEAR(ref[r], f32, act_err * 1.0001 + 1e-6 * mag) << name << " cols " << cols << " row " << r;
            ++checked;
          }
          // get_row (the prefill path's decode) equals the format's decode bit for bit.
          std::vector<float> row(static_cast<size_t>(cols));
          get_row(p.view, 3, row.data());
          for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(row[c], p.deq[static_cast<size_t>(3 * cols + c)]) << name << " col " << c;
          // Single-threaded row ranges give the same values as the threaded matmul.
          std::vector<float> part(5);
          gemv_rows(p.view, x.data(), 4, 9, part.data());
          for (int i = 0; i < 5; ++i) ASSERT_EQ(part[i], y[4 + i]) << name;
        }
      }
  EXPECT_EQ(checked, 7 * 3 * 2 * 6 * 13);
}

TEST_P(IntNGemv, LargeMatrixThreadedEqualsSingleThreaded) {
  const formats::IntNFormat& f = formats::intn_format("int4g128a");
  const int64_t rows = 1024, cols = 2048;  // above the parallel threshold
  const Packed p = make_packed(f, rows, cols, 77);
  const std::vector<float> x = activations(cols, 78);
  std::vector<float> y(rows), single(rows), ref(rows);
  matmul(p.view, x.data(), 1, y.data());
  gemv_rows(p.view, x.data(), 0, rows, single.data());
  gemv_intn_rows_ref(p.view, x.data(), 0, rows, ref.data(), detail::intn_act_max(4));
  std::vector<uint8_t> codes(128);
  for (int64_t r = 0; r < rows; ++r) {
    ASSERT_EQ(y[r], single[r]) << r;
    // Float rounding of the kernel's sums scales with its terms, scale * (code + offset) * |x| (the offset part
    // cancels in the result but not in the accumulators).
    double terms = 0;
    for (int64_t b = 0; b < cols / 128; ++b) {
      const formats::IntNBlock blk =
          formats::intn_unpack_block(f, p.view.data + r * p.view.row_bytes + b * f.block_bytes(), codes.data());
      for (int i = 0; i < 128; ++i)
        terms += std::fabs(blk.scale) * (codes[i] + std::fabs(blk.offset)) * std::fabs(x[static_cast<size_t>(b * 128 + i)]);
    }
    ASSERT_NEAR(y[r], ref[r], 1e-5 * terms) << r;
  }
}

// Prefill (several tokens) on weights that are not repacked decodes panels to f32 and uses SGEMM: equal to the f32
// product of the decoded weights.
TEST_P(IntNGemv, BatchedMatmulEqualsDecodedF32) {
  const formats::IntNFormat& f = formats::intn_format("int3g32a");
  const int64_t rows = 40, cols = 100, n = 7;
  const Packed p = make_packed(f, rows, cols, 91);
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    const auto xt = activations(cols, 100 + static_cast<uint32_t>(t));
    std::copy(xt.begin(), xt.end(), x.begin() + t * cols);
  }
  std::vector<float> y(static_cast<size_t>(n * rows));
  matmul(p.view, x.data(), n, y.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double w = p.deq[static_cast<size_t>(r * cols + c)];
        s += w * x[static_cast<size_t>(t * cols + c)];
        mag += std::fabs(w * x[static_cast<size_t>(t * cols + c)]);
      }
      ASSERT_NEAR(y[static_cast<size_t>(t * rows + r)], s, 1e-5 * mag + 1e-20) << t << " " << r;
    }
  // get_row decodes exactly what the format decodes.
  std::vector<float> row(static_cast<size_t>(cols));
  get_row(p.view, 17, row.data());
  for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(row[c], p.deq[static_cast<size_t>(17 * cols + c)]);
}

// Repacked at load (ops.h repack_for_kernels): decode (one token) and batches read the repacked copy and equal the
// dequantized weights times the dequantized int8 activations (float rounding only). Groups larger than the row
// (one partial block), rows that are not whole 32-value blocks, partial super-chunks. int4 takes its integer zeros
// out of the integer sums (Fold::Zero: vpmaddwd of zero and the unit's activation sum); "int4g128a, zero 255" rewrites
// one block's stored zero to the largest a Zero header holds.
TEST_P(IntNGemv, RepackedDecodeAndBatchesMatchDequantizedProduct) {
  for (std::string name : {"int4g128a", "int4g128a, zero 255", "int4g64s", "int4g32a", "int8g32a", "int8g128s"}) {
    const bool high_zero = name.find("zero 255") != std::string::npos;
    const formats::IntNFormat& f = formats::intn_format(name.substr(0, name.find(',')));
    for (int64_t cols : {int64_t{64}, int64_t{172}, int64_t{512}, int64_t{32 * 23}, int64_t{2048}}) {
      SCOPED_TRACE(name + " cols " + std::to_string(cols));
      const int64_t rows = 70, n = 41;  // two panels of groups; 13 token triples and a pair
      const int64_t padded = (cols + 31) / 32 * 32;  // matmul zero-pads rows that are not whole 32-value blocks
      Packed p = make_packed(f, rows, cols, 7 + static_cast<uint32_t>(cols));
      if (high_zero) {  // row 3, first block: zero 255 (fp16 0x5BF8), decoded again
        std::byte* row = const_cast<std::byte*>(p.view.data) + 3 * p.view.row_bytes;
        row[2] = std::byte{0xF8}, row[3] = std::byte{0x5B};
        formats::decode_row(f, row, std::span<float>(p.deq.data() + 3 * cols, static_cast<size_t>(cols)));
      }
      RepackedPtr rp = repack_for_kernels(p.view);
      if (!rp) continue;  // no repacked layout on this target
      if (cols % 512 == 0)  // whole super-chunks: one scale and one zero byte per block, as the file (plus the zero)
        EXPECT_LE(repacked_bytes(*rp), static_cast<size_t>((rows + 3) / 4 * 4 * (p.view.row_bytes + cols / f.block())));
      WeightView v = p.view;
      v.repacked = rp.get();
      std::vector<float> x(static_cast<size_t>(n * cols)), yb(static_cast<size_t>(n * rows)), y1(yb.size());
      std::vector<detail::GgmlActs> ref(n);
      for (int64_t t = 0; t < n; ++t) {
        const auto xt = activations(cols, 400 + static_cast<uint32_t>(t));
        std::copy(xt.begin(), xt.end(), x.begin() + t * cols);
        std::vector<float> xp(static_cast<size_t>(padded), 0.0f);
        std::copy(xt.begin(), xt.end(), xp.begin());
        detail::quantize_acts_ggml(DType::Q4_1, xp.data(), padded, ref[t]);
        matmul(v, xt.data(), 1, y1.data() + t * rows);
      }
      matmul(v, x.data(), n, yb.data());
      for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          double want = 0, mag = 0;
          for (int64_t c = 0; c < cols; ++c) {
            const double a = double(ref[t].dg[c / 16]) * ref[t].q[c];
            want += p.deq[static_cast<size_t>(r * cols + c)] * a;
            mag += std::fabs(p.deq[static_cast<size_t>(r * cols + c)] * a);
          }
          ASSERT_NEAR(y1[static_cast<size_t>(t * rows + r)], want, 2e-6 * mag + 1e-12) << "decode token " << t << " row " << r;
          ASSERT_NEAR(yb[static_cast<size_t>(t * rows + r)], want, 2e-6 * mag + 1e-12) << "batch token " << t << " row " << r;
        }
    }
  }
}

LOWBIT_INSTANTIATE_PER_TARGET(IntNGemv);

}  // namespace
}  // namespace lowbit::ops::test
