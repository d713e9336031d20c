// quant: RTN and GPTQ against brute-force references on small problems, the Hessian accumulator against a naive
// loop, and the error ordering GPTQ <= RTN on correlated activations.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>

#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "quant/quantizer.h"

namespace lowbit::quant {
namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A small asymmetric uniform-grid format written for these tests: per block a float scale and float zero, then
// one byte per code. value = scale * (code - zero), code in [0, 2^bits - 1].
class GridFormat final : public formats::Format {
 public:
  GridFormat(int bits, int block) : bits_(bits), block_(block), maxq_(static_cast<float>((1 << bits) - 1)) {}
  std::string name() const override { return "testgrid" + std::to_string(bits_) + "g" + std::to_string(block_); }
  int block() const override { return block_; }
  size_t block_bytes() const override { return 8 + static_cast<size_t>(block_); }
  formats::BlockParams fit(std::span<const float> w, std::span<const float>) const override {
    float mn = 0.0f, mx = 0.0f;
    for (float v : w) {
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
    formats::BlockParams p;
    p.scale = (mx - mn) / maxq_;
    if (p.scale == 0.0f) p.scale = 1.0f;
    p.zero = std::nearbyint(-mn / p.scale);
    return p;
  }
  float code(float w, const formats::BlockParams& p) const {
    return std::clamp(std::nearbyint(w / p.scale) + p.zero, 0.0f, maxq_);
  }
  float round(float w, const formats::BlockParams& p, int) const override { return p.scale * (code(w, p) - p.zero); }
  void encode(std::span<const float> w, const formats::BlockParams& p, std::byte* out) const override {
    std::memcpy(out, &p.scale, 4);
    std::memcpy(out + 4, &p.zero, 4);
    for (int i = 0; i < block_; ++i) out[8 + i] = static_cast<std::byte>(static_cast<int>(code(w[i], p)));
  }
  void decode(const std::byte* in, std::span<float> out) const override {
    float s, z;
    std::memcpy(&s, in, 4);
    std::memcpy(&z, in + 4, 4);
    for (int i = 0; i < block_; ++i) out[i] = s * (static_cast<float>(static_cast<uint8_t>(in[8 + i])) - z);
  }
  float dot(const std::byte* in, const float* x) const override {
    std::vector<float> v(static_cast<size_t>(block_));
    decode(in, v);
    float acc = 0.0f;
    for (int i = 0; i < block_; ++i) acc += v[i] * x[i];
    return acc;
  }

 private:
  int bits_, block_;
  float maxq_;
};

std::vector<float> randn(std::mt19937& rng, size_t n, float sd = 1.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Correlated activations: X = Z * M (n x cols), optionally with a few channels scaled up.
std::vector<float> correlated_x(std::mt19937& rng, int64_t n, int64_t cols, int n_loud = 0, float loud = 1.0f) {
  auto z = randn(rng, static_cast<size_t>(n * cols));
  auto m = randn(rng, static_cast<size_t>(cols * cols), 0.3f);
  for (int64_t i = 0; i < cols; ++i) m[i * cols + i] += 1.0f;
  std::vector<float> x(static_cast<size_t>(n * cols), 0.0f);
  for (int64_t s = 0; s < n; ++s)
    for (int64_t k = 0; k < cols; ++k)
      for (int64_t j = 0; j < cols; ++j) x[s * cols + j] += z[s * cols + k] * m[k * cols + j];
  std::uniform_int_distribution<int64_t> pick(0, cols - 1);
  for (int i = 0; i < n_loud; ++i) {
    const int64_t c = pick(rng);
    for (int64_t s = 0; s < n; ++s) x[s * cols + c] *= loud;
  }
  return x;
}

LayerStats stats_of(const std::vector<float>& x, int64_t n, int64_t cols) {
  HessianAccumulator acc(cols);
  acc.add(x.data(), n);
  return acc.stats();
}

// Obviously-correct OBQ-style reference for one row: quantize columns left to right; after column j, update the
// remaining columns with the inverse of H restricted to the not-yet-quantized columns, recomputed from scratch.
std::vector<double> obq_reference_row(const formats::Format& fmt, std::vector<double> w, MatD H, double percdamp) {
  const int64_t n = static_cast<int64_t>(w.size());
  for (int64_t j = 0; j < n; ++j)
    if (H(j, j) == 0.0) {
      H(j, j) = 1.0;
      w[j] = 0.0;
    }
  H.diagonal().array() += percdamp * H.diagonal().mean();
  std::vector<double> q(static_cast<size_t>(n));
  formats::BlockParams p;
  const int64_t g = fmt.block();
  for (int64_t j = 0; j < n; ++j) {
    if (j % g == 0) {  // a partial last block is fitted on its own weights (GridFormat::fit takes any length)
      std::vector<float> blk(static_cast<size_t>(std::min(g, n - j)));
      for (size_t t = 0; t < blk.size(); ++t) blk[t] = static_cast<float>(w[j + static_cast<int64_t>(t)]);
      p = fmt.fit(blk, {});
    }
    q[j] = fmt.round(static_cast<float>(w[j]), p, static_cast<int>(j % g));
    const int64_t m = n - j;
    const MatD Hinv = MatD(H.block(j, j, m, m)).inverse();
    for (int64_t k = j + 1; k < n; ++k) w[k] -= (w[j] - q[j]) * Hinv(0, k - j) / Hinv(0, 0);
  }
  return q;
}

// The same reference in an arbitrary column order with static groups: each block's params fitted on the
// original (dead-zeroed) row before the pass; the inverse is over the not-yet-quantized set in that order.
std::vector<double> obq_reference_row_ordered(const formats::Format& fmt, std::vector<double> w, MatD H,
                                              double percdamp, const std::vector<int64_t>& order) {
  const int64_t n = static_cast<int64_t>(w.size());
  const int64_t g = fmt.block();
  for (int64_t j = 0; j < n; ++j)
    if (H(j, j) == 0.0) {
      H(j, j) = 1.0;
      w[j] = 0.0;
    }
  H.diagonal().array() += percdamp * H.diagonal().mean();
  std::vector<formats::BlockParams> params;
  for (int64_t k = 0; k * g < n; ++k) {
    std::vector<float> blk(static_cast<size_t>(std::min(g, n - k * g)));
    for (size_t t = 0; t < blk.size(); ++t) blk[t] = static_cast<float>(w[k * g + static_cast<int64_t>(t)]);
    params.push_back(fmt.fit(blk, {}));
  }
  std::vector<double> q(static_cast<size_t>(n));
  for (int64_t s = 0; s < n; ++s) {
    const int64_t j = order[s];
    q[j] = fmt.round(static_cast<float>(w[j]), params[j / g], static_cast<int>(j % g));
    const std::vector<int64_t> F(order.begin() + s, order.end());  // F[0] == j
    const int64_t m = static_cast<int64_t>(F.size());
    MatD HF(m, m);
    for (int64_t a = 0; a < m; ++a)
      for (int64_t b = 0; b < m; ++b) HF(a, b) = H(F[a], F[b]);
    const MatD Hinv = HF.inverse();
    for (int64_t a = 1; a < m; ++a) w[F[a]] -= (w[j] - q[j]) * Hinv(0, a) / Hinv(0, 0);
  }
  return q;
}

// The float products (one ssyrk per block of HessianAccumulator::kBlockRows rows, summed in double) are within the
// float rounding bound of one block's sum of the exact double loop: |H - H_ref| <= rows_in_block * 2^-24 *
// 2/N * sum |x_i x_j| (here 18 rows: one partial block).
TEST(HessianAccumulator, MatchesNaiveLoop) {
  std::mt19937 rng(1);
  const int64_t cols = 13;
  auto x1 = randn(rng, 7 * cols), x2 = randn(rng, 11 * cols);
  HessianAccumulator acc(cols);
  acc.add(x1.data(), 7);
  acc.add(x2.data(), 11);
  const LayerStats s = acc.stats();
  ASSERT_EQ(s.n_samples, 18);
  std::vector<float> all = x1;
  all.insert(all.end(), x2.begin(), x2.end());
  const double bound = 18 * std::ldexp(1.0, -24);
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      double sum = 0.0, abs_sum = 0.0;
      for (int64_t t = 0; t < 18; ++t) {
        sum += static_cast<double>(all[t * cols + i]) * all[t * cols + j];
        abs_sum += std::abs(static_cast<double>(all[t * cols + i]) * all[t * cols + j]);
      }
      EXPECT_NEAR(s.H[i * cols + j], 2.0 * sum / 18.0, bound * 2.0 * abs_sum / 18.0);
      EXPECT_EQ(s.H[i * cols + j], s.H[j * cols + i]);
      if (i == j) EXPECT_NEAR(s.act_sq_mean[i], sum / 18.0, bound * abs_sum / 18.0);
    }
  }
}

// The Hessian of a layer wide enough for OpenBLAS to thread its products is the same bits for any thread count
// (quantize's output must not depend on -t; OpenBLAS's threaded ssyrk did, measured on this shape).
TEST(HessianAccumulator, SameBitsForAnyThreadCount) {
  std::mt19937 rng(6);
  const int64_t cols = 640, n = HessianAccumulator::kBlockRows + 300;
  const std::vector<float> x = randn(rng, static_cast<size_t>(n * cols));
  const int before = lowbit::num_threads();
  std::vector<std::vector<double>> h;
  for (int threads : {1, 2, 3}) {
    lowbit::set_num_threads(threads);
    HessianAccumulator acc(cols);
    acc.add(x.data(), n);
    h.push_back(acc.stats().H);
  }
  lowbit::set_num_threads(before);
  EXPECT_TRUE(h[0] == h[1]) << "1 vs 2 threads";
  EXPECT_TRUE(h[0] == h[2]) << "1 vs 3 threads";
}

// Many blocks with a partial one at the end, fed in uneven batches, on activations with a large mean and a few loud
// channels (the case where float sums lose most): every entry within one block's float rounding bound of the
// double reference, and in practice far inside it (1e-6 of the entry's scale). The result depends on the rows
// only: any split into add() calls gives the same bits.
TEST(HessianAccumulator, FloatBlocksMatchDoubleReference) {
  std::mt19937 rng(5);
  const int64_t cols = 37, n = 3 * HessianAccumulator::kBlockRows + 123;
  std::vector<float> x = randn(rng, static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < cols; ++j) x[t * cols + j] += 3.0f;
    x[t * cols + 5] *= 40.0f;
  }
  HessianAccumulator a(cols), b(cols), c(cols);
  a.add(x.data(), n);
  for (int64_t t = 0; t < n; ++t) b.add(x.data() + t * cols, 1);
  const int64_t splits[] = {1, 700, 3, HessianAccumulator::kBlockRows, 2, 100};
  int64_t done = 0;
  for (int64_t k = 0; done < n; ++k) {
    const int64_t m = std::min(splits[k % 6], n - done);
    c.add(x.data() + done * cols, m);
    done += m;
  }
  const LayerStats sa = a.stats(), sb = b.stats(), sc = c.stats();
  EXPECT_EQ(sa.H, sb.H);
  EXPECT_EQ(sa.H, sc.H);
  EXPECT_EQ(sa.act_sq_mean, sc.act_sq_mean);
  const double bound = HessianAccumulator::kBlockRows * std::ldexp(1.0, -24);
  double worst = 0;  // |H - H_ref| / (2/N sum |x_i x_j|)
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double sum = 0.0, abs_sum = 0.0;
      for (int64_t t = 0; t < n; ++t) {
        const double p = static_cast<double>(x[t * cols + i]) * x[t * cols + j];
        sum += p;
        abs_sum += std::abs(p);
      }
      const double want = 2.0 * sum / static_cast<double>(n), scale = 2.0 * abs_sum / static_cast<double>(n);
      ASSERT_NEAR(sa.H[i * cols + j], want, bound * scale) << i << "," << j;
      worst = std::max(worst, std::abs(sa.H[i * cols + j] - want) / scale);
    }
  EXPECT_LT(worst, 1e-6);
  // An accumulator read midway keeps accumulating as if it had not been read.
  HessianAccumulator d(cols);
  d.add(x.data(), 1000);
  (void)d.stats();
  d.add(x.data() + 1000 * cols, n - 1000);
  EXPECT_EQ(d.stats().H, sa.H);
}

TEST(Registry, NamesAndErrors) {
  EXPECT_EQ(make_quantizer("rtn")->name(), "rtn");
  EXPECT_EQ(make_quantizer("gptq")->name(), "gptq");
  EXPECT_EQ(make_quantizer("gptaq")->name(), "gptaq");
  EXPECT_EQ(quantizer_names().size(), 3u);
  EXPECT_THROW(make_quantizer("awq-nope"), lowbit::Error);
  GridFormat fmt(4, 8);
  std::vector<float> w(2 * 12, 0.5f);
  // 12 weights per row: one full block of 8 and a partial one of 4.
  EXPECT_EQ(make_quantizer("rtn")->quantize(w.data(), 2, 12, fmt, nullptr).row_bytes, 2 * fmt.block_bytes());
  EXPECT_THROW(make_quantizer("rtn")->quantize(w.data(), 2, 0, fmt, nullptr), lowbit::Error);
  std::vector<float> w16(2 * 16, 0.5f);
  EXPECT_THROW(make_quantizer("gptq")->quantize(w16.data(), 2, 16, fmt, nullptr), lowbit::Error);  // no stats
}

TEST(Rtn, EqualsPerBlockFitAndRound) {
  std::mt19937 rng(2);
  GridFormat fmt(3, 8);
  const int64_t rows = 5, cols = 32;
  auto w = randn(rng, rows * cols);
  const QuantResult res = make_quantizer("rtn")->quantize(w.data(), rows, cols, fmt, nullptr);
  ASSERT_EQ(res.row_bytes, 4 * fmt.block_bytes());
  ASSERT_EQ(res.data.size(), rows * res.row_bytes);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols / 8; ++k) {
      std::span<const float> blk(w.data() + r * cols + k * 8, 8);
      const auto p = fmt.fit(blk, {});
      for (int i = 0; i < 8; ++i) EXPECT_EQ(res.dequant[r * cols + k * 8 + i], fmt.round(blk[i], p, i));
    }
}

TEST(Rtn, PartialLastBlockIsFittedOnItsOwnWeights) {
  std::mt19937 rng(3);
  GridFormat fmt(3, 8);
  const int64_t rows = 4, cols = 19;  // 8 + 8 + 3
  auto w = randn(rng, rows * cols);
  const QuantResult res = make_quantizer("rtn")->quantize(w.data(), rows, cols, fmt, nullptr);
  ASSERT_EQ(res.row_bytes, 3 * fmt.block_bytes());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k * 8 < cols; ++k) {
      const int64_t len = std::min<int64_t>(8, cols - k * 8);
      std::span<const float> blk(w.data() + r * cols + k * 8, static_cast<size_t>(len));
      const auto p = fmt.fit(blk, {});
      for (int i = 0; i < len; ++i) EXPECT_EQ(res.dequant[r * cols + k * 8 + i], fmt.round(blk[i], p, i));
    }
}

void expect_gptq_matches_obq(const formats::Format& fmt, uint32_t seed, int64_t rows, int64_t cols, int block_size,
                             int dead) {
  std::mt19937 rng(seed);
  auto w = randn(rng, static_cast<size_t>(rows * cols));
  const int64_t ns = 3 * cols;
  auto x = correlated_x(rng, ns, cols);
  for (int d = 0; d < dead; ++d)
    for (int64_t s = 0; s < ns; ++s) x[s * cols + (3 * d + 1) % cols] = 0.0f;
  const LayerStats st = stats_of(x, ns, cols);
  QuantOptions opts;
  opts.block_size = block_size;
  const QuantResult res = make_quantizer("gptq", opts)->quantize(w.data(), rows, cols, fmt, &st);
  const MatD H = Eigen::Map<const MatD>(st.H.data(), cols, cols);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> wr(w.begin() + r * cols, w.begin() + (r + 1) * cols);
    const auto q = obq_reference_row(fmt, wr, H, opts.percdamp);
    for (int64_t j = 0; j < cols; ++j)
      ASSERT_NEAR(res.dequant[r * cols + j], q[j], 1e-5) << "seed " << seed << " row " << r << " col " << j;
  }
}

TEST(Gptq, EqualsBruteForceObq) {
  for (uint32_t seed = 0; seed < 12; ++seed) {
    const int64_t rows = 3 + seed % 6;
    const int64_t cols = (seed % 2) ? 16 : 12;
    expect_gptq_matches_obq(GridFormat(3, 4), seed, rows, cols, 4 + 4 * (seed % 2), 0);  // lazy batch < cols
  }
  expect_gptq_matches_obq(GridFormat(3, 8), 100, 5, 16, 4, 0);   // batch rounded up to the format block
  expect_gptq_matches_obq(GridFormat(3, 8), 101, 4, 8, 128, 0);  // one batch
  // Rows that end in a partial block (13 = 3 x 4 + 1, 21 = 2 x 8 + 5).
  expect_gptq_matches_obq(GridFormat(3, 4), 102, 5, 13, 4, 0);
  expect_gptq_matches_obq(GridFormat(3, 8), 103, 4, 21, 8, 1);
  expect_gptq_matches_obq(GridFormat(3, 8), 104, 3, 21, 128, 0);
}

TEST(Gptq, DeadColumnsMatchBruteForceAndAreZero) {
  for (uint32_t seed = 20; seed < 24; ++seed) expect_gptq_matches_obq(GridFormat(3, 4), seed, 6, 16, 8, 2);
  std::mt19937 rng(7);
  GridFormat fmt(4, 8);
  const int64_t rows = 6, cols = 32, ns = 100;
  auto w = randn(rng, rows * cols);
  auto x = correlated_x(rng, ns, cols);
  for (int64_t s = 0; s < ns; ++s) x[s * cols + 5] = x[s * cols + 17] = 0.0f;
  const LayerStats st = stats_of(x, ns, cols);
  const QuantResult res = make_quantizer("gptq")->quantize(w.data(), rows, cols, fmt, &st);
  for (float v : res.dequant) ASSERT_TRUE(std::isfinite(v));
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(res.dequant[r * cols + 5], 0.0f);
    EXPECT_EQ(res.dequant[r * cols + 17], 0.0f);
  }
}

TEST(Gptq, ActOrderEqualsBruteForceInPermutedOrder) {
  for (uint32_t seed = 40; seed < 46; ++seed) {
    std::mt19937 rng(seed);
    GridFormat fmt(3, 4);
    const int64_t rows = 3 + seed % 4, cols = seed >= 44 ? 14 : 16, ns = 48;  // 14: a partial last block
    auto w = randn(rng, static_cast<size_t>(rows * cols));
    auto x = correlated_x(rng, ns, cols, 3, 4.0f);
    if (seed % 2)
      for (int64_t s = 0; s < ns; ++s) x[s * cols + 6] = 0.0f;  // a dead column too
    const LayerStats st = stats_of(x, ns, cols);
    QuantOptions opts;
    opts.act_order = true;
    opts.block_size = 8;
    const QuantResult res = make_quantizer("gptq", opts)->quantize(w.data(), rows, cols, fmt, &st);
    const MatD H = Eigen::Map<const MatD>(st.H.data(), cols, cols);
    std::vector<int64_t> order(static_cast<size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const double da = H(a, a) == 0.0 ? 1.0 : H(a, a), db = H(b, b) == 0.0 ? 1.0 : H(b, b);
      return da > db;
    });
    ASSERT_FALSE(std::is_sorted(order.begin(), order.end()));  // the order really is permuted
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double> wr(w.begin() + r * cols, w.begin() + (r + 1) * cols);
      const auto q = obq_reference_row_ordered(fmt, wr, H, opts.percdamp, order);
      for (int64_t j = 0; j < cols; ++j)
        ASSERT_NEAR(res.dequant[r * cols + j], q[j], 1e-5) << "seed " << seed << " row " << r << " col " << j;
    }
  }
}

double err_of(const std::string& method, const QuantOptions& opts, const std::vector<float>& w, int64_t rows,
              int64_t cols, const formats::Format& fmt, const LayerStats& st, QuantResult* out = nullptr);

TEST(Gptq, SingularHessianWithoutDampingRetries) {
  // Rank-deficient H (fewer samples than columns, duplicated channels) and percdamp 0: the first factorization
  // fails and GPTQ retries with a small damping instead of failing or producing NaNs.
  std::mt19937 rng(11);
  GridFormat fmt(4, 8);
  const int64_t rows = 4, cols = 32, ns = 10;
  auto w = randn(rng, rows * cols);
  auto x = randn(rng, ns * cols);
  for (int64_t s = 0; s < ns; ++s) x[s * cols + 3] = x[s * cols + 2];
  const LayerStats st = stats_of(x, ns, cols);
  QuantOptions opts;
  opts.percdamp = 0.0;
  const QuantResult res = make_quantizer("gptq", opts)->quantize(w.data(), rows, cols, fmt, &st);
  for (float v : res.dequant) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LE(layer_error(w.data(), res.dequant.data(), rows, cols, st),
            err_of("rtn", {}, w, rows, cols, fmt, st) * 1.0001);
}

double err_of(const std::string& method, const QuantOptions& opts, const std::vector<float>& w, int64_t rows,
              int64_t cols, const formats::Format& fmt, const LayerStats& st, QuantResult* out) {
  QuantResult res = make_quantizer(method, opts)->quantize(w.data(), rows, cols, fmt, &st);
  const double e = layer_error(w.data(), res.dequant.data(), rows, cols, st);
  if (out) *out = std::move(res);
  return e;
}

TEST(Gptq, LowerLayerErrorThanRtn) {
  GridFormat fmt(3, 16);
  const int64_t rows = 32, cols = 64, ns = 256;
  double sum_rtn = 0, sum_gptq = 0;
  for (uint32_t seed = 0; seed < 5; ++seed) {
    std::mt19937 rng(1000 + seed);
    auto w = randn(rng, rows * cols);
    const LayerStats st = stats_of(correlated_x(rng, ns, cols), ns, cols);
    const double e_rtn = err_of("rtn", {}, w, rows, cols, fmt, st);
    const double e_gptq = err_of("gptq", {}, w, rows, cols, fmt, st);
    EXPECT_LE(e_gptq, e_rtn) << "seed " << seed;
    sum_rtn += e_rtn;
    sum_gptq += e_gptq;
  }
  std::printf("layer error over 5 seeds: rtn %.4g gptq %.4g\n", sum_rtn, sum_gptq);
  EXPECT_LT(sum_gptq, 0.9 * sum_rtn);
}

TEST(Gptq, ActOrderStaticGroupsPlainLayoutAndLowerError) {
  GridFormat fmt(3, 16);
  const int64_t rows = 32, cols = 64, ns = 256;
  QuantOptions ao;
  ao.act_order = true;
  double sum_plain = 0, sum_ao = 0;
  for (uint32_t seed = 0; seed < 5; ++seed) {
    std::mt19937 rng(2000 + seed);
    auto w = randn(rng, rows * cols);
    const LayerStats st = stats_of(correlated_x(rng, ns, cols, 4, 10.0f), ns, cols);
    QuantResult plain, act;
    sum_plain += err_of("gptq", {}, w, rows, cols, fmt, st, &plain);
    sum_ao += err_of("gptq", ao, w, rows, cols, fmt, st, &act);
    ASSERT_EQ(act.row_bytes, plain.row_bytes);
    ASSERT_EQ(act.data.size(), plain.data.size());
    // Plain decoder on the act-order bytes; each block's params are those fitted on the original weights.
    std::vector<float> dec(16);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < cols / 16; ++k) {
        const std::byte* blk = act.data.data() + r * act.row_bytes + k * fmt.block_bytes();
        fmt.decode(blk, dec);
        for (int i = 0; i < 16; ++i) ASSERT_EQ(dec[i], act.dequant[r * cols + k * 16 + i]);
        const auto p = fmt.fit(std::span<const float>(w.data() + r * cols + k * 16, 16), {});
        float s, z;
        std::memcpy(&s, blk, 4);
        std::memcpy(&z, blk + 4, 4);
        EXPECT_EQ(s, p.scale);
        EXPECT_EQ(z, p.zero);
      }
  }
  std::printf("layer error over 5 seeds: gptq %.4g gptq act-order %.4g\n", sum_plain, sum_ao);
  EXPECT_LT(sum_ao, sum_plain);
}

TEST(Gptq, SameResultForAnyThreadCount) {
  std::mt19937 rng(5);
  GridFormat fmt(4, 8);
  const int64_t rows = 200, cols = 32, ns = 64;  // several row chunks
  auto w = randn(rng, rows * cols);
  const LayerStats st = stats_of(correlated_x(rng, ns, cols), ns, cols);
  const LayerStats other = stats_of(correlated_x(rng, ns, cols), ns, cols);
  const int before = lowbit::num_threads();
  lowbit::set_num_threads(1);
  const QuantResult a = make_quantizer("gptq")->quantize(w.data(), rows, cols, fmt, &st);
  lowbit::set_num_threads(2);
  make_quantizer("gptq")->quantize(w.data(), rows, cols, fmt, &other);  // U factored again below, on 2 threads
  const QuantResult b = make_quantizer("gptq")->quantize(w.data(), rows, cols, fmt, &st);
  lowbit::set_num_threads(before);
  EXPECT_EQ(a.data, b.data);
}

// Consecutive calls with one H (q, k and v; gate and up) reuse its factorization: the results are those of a
// fresh factorization, for other weights and for other options alike.
TEST(Gptq, SharedHessianGivesTheSameResultAsAFreshOne) {
  std::mt19937 rng(8);
  GridFormat fmt(3, 8);
  const int64_t cols = 48, ns = 96;
  const LayerStats st = stats_of(correlated_x(rng, ns, cols, 2, 5.0f), ns, cols);
  const LayerStats other = stats_of(correlated_x(rng, ns, cols), ns, cols);
  const auto w1 = randn(rng, 7 * cols), w2 = randn(rng, 130 * cols);
  QuantOptions ao;
  ao.act_order = true;
  for (const QuantOptions& opts : {QuantOptions{}, ao}) {
    auto q = make_quantizer("gptq", opts);
    q->quantize(w2.data(), 130, cols, fmt, &other);  // whatever this thread held before
    const QuantResult fresh = q->quantize(w2.data(), 130, cols, fmt, &st);
    q->quantize(w1.data(), 7, cols, fmt, &other);
    q->quantize(w1.data(), 7, cols, fmt, &st);
    const QuantResult reused = q->quantize(w2.data(), 130, cols, fmt, &st);  // after w1 with the same H
    EXPECT_EQ(fresh.data, reused.data) << "act_order " << opts.act_order;
    EXPECT_EQ(fresh.dequant, reused.dequant);
  }
  // Same H, other damping: not the cached factor.
  QuantOptions damped;
  damped.percdamp = 0.5;
  auto q = make_quantizer("gptq");
  q->quantize(w2.data(), 130, cols, fmt, &st);
  const QuantResult after = make_quantizer("gptq", damped)->quantize(w2.data(), 130, cols, fmt, &st);
  make_quantizer("gptq")->quantize(w2.data(), 130, cols, fmt, &other);
  const QuantResult alone = make_quantizer("gptq", damped)->quantize(w2.data(), 130, cols, fmt, &st);
  EXPECT_EQ(after.data, alone.data);
}

// layer_error's float Gram blocks (summed in double) against the double definition sum_r d_r^T H d_r, on GPTQ
// output -- whose error is shaped to be small in the H norm, the case where rounding in D^T D shows most -- and on
// the weights themselves (the reference of rel_output_error). Several blocks of rows.
TEST(LayerError, FloatGramMatchesDoubleDefinition) {
  std::mt19937 rng(21);
  GridFormat fmt(3, 16);
  const int64_t rows = 2 * HessianAccumulator::kBlockRows + 77, cols = 96, ns = 400;
  const auto w = randn(rng, static_cast<size_t>(rows * cols));
  const LayerStats st = stats_of(correlated_x(rng, ns, cols, 4, 10.0f), ns, cols);
  const QuantResult res = make_quantizer("gptq")->quantize(w.data(), rows, cols, fmt, &st);
  const std::vector<float> zero(w.size(), 0.0f);
  for (const std::vector<float>* q : {&res.dequant, &zero}) {
    double want = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < cols; ++i) {
        const double di = static_cast<double>(w[r * cols + i]) - (*q)[r * cols + i];
        for (int64_t j = 0; j < cols; ++j)
          want += di * st.H[i * cols + j] * (static_cast<double>(w[r * cols + j]) - (*q)[r * cols + j]);
      }
    const double got = layer_error(w.data(), q->data(), rows, cols, st);
    EXPECT_NEAR(got, want, 1e-6 * want) << (q == &zero ? "reference" : "gptq");
  }
}

// The same checks with lowbit's real intN formats (clip-search fit, fp16 params, packed codes).
TEST(GptqIntN, EqualsBruteForceObq) {
  const auto f3 = formats::make_format("int3g32a");
  const auto f4 = formats::make_format("int4g32s");
  expect_gptq_matches_obq(*f3, 300, 4, 96, 32, 0);
  expect_gptq_matches_obq(*f4, 301, 3, 64, 32, 1);
  expect_gptq_matches_obq(*f3, 302, 3, 64, 128, 0);
}

TEST(GptqIntN, LowerErrorThanRtnAndPlainRowLayout) {
  for (const char* name : {"int3g32a", "int4g64s", "int2g128a"}) {
    const auto fmt = formats::make_format(name);
    const int64_t rows = 24, cols = 256, ns = 384;
    double sum_rtn = 0, sum_gptq = 0, sum_ao = 0;
    QuantOptions ao;
    ao.act_order = true;
    for (uint32_t seed = 0; seed < 3; ++seed) {
      std::mt19937 rng(3000 + seed);
      auto w = randn(rng, rows * cols);
      const LayerStats st = stats_of(correlated_x(rng, ns, cols, 6, 8.0f), ns, cols);
      QuantResult act;
      const double e_rtn = err_of("rtn", {}, w, rows, cols, *fmt, st);
      const double e_gptq = err_of("gptq", {}, w, rows, cols, *fmt, st);
      EXPECT_LE(e_gptq, e_rtn) << name << " seed " << seed;
      sum_rtn += e_rtn;
      sum_gptq += e_gptq;
      sum_ao += err_of("gptq", ao, w, rows, cols, *fmt, st, &act);
      ASSERT_EQ(act.row_bytes, formats::row_bytes(*fmt, cols));
      std::vector<float> dec(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        formats::decode_row(*fmt, act.data.data() + r * act.row_bytes, dec);
        for (int64_t j = 0; j < cols; ++j) ASSERT_EQ(dec[j], act.dequant[r * cols + j]);
      }
    }
    std::printf("%s layer error over 3 seeds: rtn %.4g gptq %.4g gptq act-order %.4g\n", name, sum_rtn, sum_gptq,
                sum_ao);
    EXPECT_LT(sum_gptq, sum_rtn) << name;
    EXPECT_LT(sum_ao, sum_rtn) << name;
  }
}

TEST(RtnIntN, ImportanceIsDiagH) {
  // A format wrapper that records the importance each fit receives.
  struct Recording final : formats::Format {
    std::unique_ptr<formats::Format> f = formats::make_format("int4g32a");
    mutable std::vector<std::vector<float>> seen;
    std::string name() const override { return f->name(); }
    int block() const override { return f->block(); }
    size_t block_bytes() const override { return f->block_bytes(); }
    formats::BlockParams fit(std::span<const float> w, std::span<const float> imp) const override {
#pragma omp critical
      seen.emplace_back(imp.begin(), imp.end());
      return f->fit(w, imp);
    }
    float round(float w, const formats::BlockParams& p, int i) const override { return f->round(w, p, i); }
    void encode(std::span<const float> w, const formats::BlockParams& p, std::byte* o) const override {
      f->encode(w, p, o);
    }
    void decode(const std::byte* in, std::span<float> out) const override { f->decode(in, out); }
    float dot(const std::byte* in, const float* x) const override { return f->dot(in, x); }
  } fmt;
  std::mt19937 rng(9);
  const int64_t rows = 2, cols = 64, ns = 50;
  auto w = randn(rng, rows * cols);
  const LayerStats st = stats_of(correlated_x(rng, ns, cols), ns, cols);
  QuantOptions opts;
  opts.use_importance = true;
  make_quantizer("rtn", opts)->quantize(w.data(), rows, cols, fmt, &st);
  ASSERT_EQ(fmt.seen.size(), 4u);
  for (const auto& imp : fmt.seen) {
    ASSERT_EQ(imp.size(), 32u);
    const bool first = imp[0] == static_cast<float>(st.H[0]);
    const int64_t base = first ? 0 : 32;
    for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(imp[i], static_cast<float>(st.H[(base + i) * cols + base + i]));
  }
  fmt.seen.clear();
  make_quantizer("rtn")->quantize(w.data(), rows, cols, fmt, &st);
  for (const auto& imp : fmt.seen) EXPECT_TRUE(imp.empty());
}

}  // namespace
}  // namespace lowbit::quant
