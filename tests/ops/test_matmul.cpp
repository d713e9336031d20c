// GEMV / matmul / get_row / view_of against the scalar references, for every dtype and Highway target.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "lowbit/error.h"
#include "lowbit/model_file.h"
#include "lowbit/threads.h"
#include "ops/ops.h"
#include "ops/reference.h"
#include "ops_test_util.h"

namespace lowbit::ops::test {
namespace {

constexpr DType kDTypes[] = {DType::F32, DType::F16, DType::BF16};

// Tolerance: the kernels accumulate in f32 (in a different order than the double reference), so each
// output may differ by a small multiple of f32 epsilon times sum_c |W[r,c] * x[c]|. 1e-5 ~ 80 ulps of that.
void expect_matches_ref(const WeightView& w, const float* x, int64_t n_tokens, const float* y, const float* y_ref,
                        const std::string& what) {
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double mag = 0;
      for (int64_t c = 0; c < w.cols; ++c) mag += std::fabs(weight_at_ref(w, r, c) * x[t * w.cols + c]);
      const size_t i = static_cast<size_t>(t * w.rows + r);
      ASSERT_NEAR(y[i], y_ref[i], 1e-5 * mag + 1e-30) << what << " token " << t << " row " << r;
    }
  }
}

std::string describe(DType dt, int64_t rows, int64_t cols) {
  return std::string(dtype_name(dt)) + " " + std::to_string(rows) + "x" + std::to_string(cols);
}

class Gemv : public PerTarget {};

TEST_P(Gemv, TargetSwitchTakesEffect) { EXPECT_STREQ(simd_target(), hwy::TargetName(GetParam())); }

TEST_P(Gemv, AllDTypesOddShapes) {
  const int64_t sizes[] = {1, 7, 33, 255, 1000};
  uint32_t seed = 1;
  for (DType dt : kDTypes) {
    for (int64_t rows : sizes) {
      for (int64_t cols : sizes) {
        TestMatrix m(dt, rows, cols, seed++);
        const std::vector<float> x = random_floats(static_cast<size_t>(cols), seed++);
        std::vector<float> y(static_cast<size_t>(rows), NAN), y_ref(static_cast<size_t>(rows));
        gemv_rows(m.view, x.data(), 0, rows, y.data());
        gemv_rows_ref(m.view, x.data(), 0, rows, y_ref.data());
        expect_matches_ref(m.view, x.data(), 1, y.data(), y_ref.data(), describe(dt, rows, cols));
      }
    }
  }
}

TEST_P(Gemv, RowRangeAndPaddedStride) {
  for (DType dt : kDTypes) {
    TestMatrix m(dt, 37, 100, 7, /*pad=*/3);
    const std::vector<float> x = random_floats(100, 8);
    std::vector<float> y(37, NAN), y_ref(37, NAN);
    gemv_rows(m.view, x.data(), 5, 30, y.data());
    gemv_rows_ref(m.view, x.data(), 5, 30, y_ref.data());
    for (int i = 0; i < 25; ++i) EXPECT_NEAR(y[i], y_ref[i], 1e-4) << dtype_name(dt) << " row " << 5 + i;
    EXPECT_TRUE(std::isnan(y[25])) << "wrote past r1 - r0 outputs";
  }
}

TEST_P(Gemv, KnownValues) {
  // W = [[1, 2, 3], [-1, 0.5, 4]], x = [1, 1, 2] -> y = [9, 7.5]; exact in every dtype.
  for (DType dt : kDTypes) {
    TestMatrix m(dt, 2, 3, 1);
    const float vals[] = {1, 2, 3, -1, 0.5f, 4};
    for (int i = 0; i < 6; ++i) {
      std::byte* p = const_cast<std::byte*>(m.view.data) + (i / 3) * m.view.row_bytes;
      if (dt == DType::F32) {
        std::memcpy(p + (i % 3) * 4, &vals[i], 4);
      } else {
        const uint16_t h = dt == DType::F16 ? lowbit::f32_to_f16(vals[i]) : lowbit::f32_to_bf16(vals[i]);
        std::memcpy(p + (i % 3) * 2, &h, 2);
      }
    }
    const float x[] = {1, 1, 2};
    float y[2], y_ref[2];
    matmul(m.view, x, 1, y);
    matmul_ref(m.view, x, 1, y_ref);
    EXPECT_EQ(y[0], 9.0f);
    EXPECT_EQ(y[1], 7.5f);
    EXPECT_EQ(y_ref[0], 9.0f);
    EXPECT_EQ(y_ref[1], 7.5f);
  }
}

TEST_P(Gemv, ThreadedDecodeMatchesRef) {
  const int saved = num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (DType dt : kDTypes) {
      for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1001, 257}, {130, 2048}, {9, 8192}}) {
        TestMatrix m(dt, rows, cols, static_cast<uint32_t>(rows + cols));
        const std::vector<float> x = random_floats(static_cast<size_t>(cols), 99);
        std::vector<float> y(static_cast<size_t>(rows), NAN), y_ref(static_cast<size_t>(rows));
        matmul(m.view, x.data(), 1, y.data());
        matmul_ref(m.view, x.data(), 1, y_ref.data());
        expect_matches_ref(m.view, x.data(), 1, y.data(), y_ref.data(),
                           describe(dt, rows, cols) + " threads " + std::to_string(threads));
      }
    }
  }
  set_num_threads(saved);
}

TEST_P(Gemv, PrefillMatchesRef) {
  // n_tokens > 1 goes through SGEMM; F16/BF16 through widened panels (300 x 4096 needs more than one panel:
  // 4 MiB / (4 * 4096) = 256 rows).
  struct Case {
    int64_t rows, cols, n;
  };
  const Case cases[] = {{33, 7, 2}, {33, 7, 33}, {255, 1000, 7}, {1000, 255, 33}, {300, 4096, 3}};
  for (DType dt : kDTypes) {
    for (const auto [rows, cols, n] : cases) {
      {
        TestMatrix m(dt, rows, cols, static_cast<uint32_t>(rows * 3 + n), /*pad=*/dt == DType::F32 ? 1 : 0);
        const std::vector<float> x = random_floats(static_cast<size_t>(n * cols), static_cast<uint32_t>(n));
        std::vector<float> y(static_cast<size_t>(n * rows), NAN), y_ref(y.size());
        matmul(m.view, x.data(), n, y.data());
        matmul_ref(m.view, x.data(), n, y_ref.data());
        expect_matches_ref(m.view, x.data(), n, y.data(), y_ref.data(),
                           describe(dt, rows, cols) + " n_tokens " + std::to_string(n));
      }
    }
  }
}

TEST_P(Gemv, GetRowIsExact) {
  for (DType dt : kDTypes) {
    for (int64_t cols : {1, 7, 33, 255, 1000}) {
      TestMatrix m(dt, 5, cols, static_cast<uint32_t>(cols), /*pad=*/1);
      std::vector<float> out(static_cast<size_t>(cols)), ref(static_cast<size_t>(cols));
      for (int64_t r = 0; r < 5; ++r) {
        get_row(m.view, r, out.data());
        get_row_ref(m.view, r, ref.data());
        ASSERT_EQ(out, ref) << describe(dt, 5, cols) << " row " << r;
      }
    }
  }
}

LOWBIT_INSTANTIATE_PER_TARGET(Gemv);

TEST(WeightView, GetRowOutOfRangeThrows) {
  TestMatrix m(DType::F32, 3, 4, 1);
  float out[4];
  EXPECT_THROW(get_row(m.view, 3, out), lowbit::Error);
  EXPECT_THROW(get_row(m.view, -1, out), lowbit::Error);
}

TEST(WeightView, UnsupportedDTypeInViewThrows) {
  TestMatrix m(DType::F32, 3, 4, 1);
  WeightView w = m.view;
  w.dtype = DType::Q4_0;
  float y[3];
  const float x[4] = {};
  EXPECT_THROW(matmul(w, x, 1, y), lowbit::Error);
  EXPECT_THROW(gemv_rows(w, x, 0, 3, y), lowbit::Error);
}

TensorInfo make_tensor(DType dt, std::vector<int64_t> shape, uint64_t nbytes, const std::byte* data) {
  TensorInfo t;
  t.name = "blk.0.attn_q.weight";
  t.file = "model.gguf";
  t.dtype = dt;
  t.shape = std::move(shape);
  t.nbytes = nbytes;
  t.data = data;
  return t;
}

std::string error_of(const TensorInfo& t) {
  try {
    view_of(t);
  } catch (const lowbit::Error& e) {
    return e.what();
  }
  return "";
}

TEST(WeightView, ViewOf) {
  std::vector<std::byte> buf(6 * 4 * 4);
  const WeightView w = view_of(make_tensor(DType::BF16, {6, 8}, 6 * 8 * 2, buf.data()));
  EXPECT_EQ(w.dtype, DType::BF16);
  EXPECT_EQ(w.rows, 6);
  EXPECT_EQ(w.cols, 8);
  EXPECT_EQ(w.row_bytes, 16u);
  EXPECT_EQ(w.data, buf.data());

  std::vector<std::byte> qbuf(6 * 18);
  const WeightView q40 = view_of(make_tensor(DType::Q4_0, {6, 32}, 6 * 18, qbuf.data()));  // llama.cpp block type
  EXPECT_EQ(q40.row_bytes, 18u);
  EXPECT_EQ(q40.cols, 32);
  const std::string q = error_of(make_tensor(DType::I32, {6, 8}, 6 * 8 * 4, buf.data()));
  EXPECT_NE(q.find("i32"), std::string::npos) << q;
  EXPECT_NE(q.find("blk.0.attn_q.weight"), std::string::npos) << q;
  EXPECT_NE(q.find("model.gguf"), std::string::npos) << q;
  const std::string one_d = error_of(make_tensor(DType::F32, {24}, 96, buf.data()));
  EXPECT_NE(one_d.find("2-D"), std::string::npos) << one_d;
  // 3-D: merged MoE experts {experts, rows, cols}, viewed as experts * rows rows; 4-D is an error.
  const WeightView experts = view_of(make_tensor(DType::F32, {2, 3, 4}, 96, buf.data()));
  EXPECT_EQ(experts.rows, 6);
  EXPECT_EQ(experts.cols, 4);
  EXPECT_EQ(experts.row_bytes, 16u);
  const std::string four_d = error_of(make_tensor(DType::F32, {2, 3, 2, 2}, 96, buf.data()));
  EXPECT_NE(four_d.find("2-D"), std::string::npos) << four_d;
  const std::string small = error_of(make_tensor(DType::F32, {6, 8}, 100, buf.data()));
  EXPECT_NE(small.find("needs 192"), std::string::npos) << small;
}

}  // namespace
}  // namespace lowbit::ops::test
