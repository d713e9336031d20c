// quant: GPTAQ against independent references on small random problems -- with rounding off the least-squares
// solution of its objective (stacked QR, not the normal equations), with rounding on a slow greedy reference that
// re-solves the least-squares problem after every rounded column, GPTQ's bytes when the calibration is symmetric
// (alpha = 0 or C = 0) -- and the cross-term accumulator against a naive loop.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "formats/format.h"
#include "lowbit/error.h"
#include "quant/gptaq/cross_stats.h"
#include "quant/quantizer.h"

namespace lowbit::quant {
namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rounding off: a test-only format that stores every weight as itself (f32), so a quantizer returns the weights
// its pass would round.
class ExactFormat final : public formats::Format {
 public:
  explicit ExactFormat(int block) : block_(block) {}
  std::string name() const override { return "exact" + std::to_string(block_); }
  int block() const override { return block_; }
  size_t block_bytes() const override { return 4 * static_cast<size_t>(block_); }
  formats::BlockParams fit(std::span<const float>, std::span<const float>) const override { return {}; }
  float round(float w, const formats::BlockParams&, int) const override { return w; }
  void encode(std::span<const float> w, const formats::BlockParams&, std::byte* out) const override {
    std::memcpy(out, w.data(), 4 * w.size());
  }
  void decode(const std::byte* in, std::span<float> out) const override { std::memcpy(out.data(), in, 4 * out.size()); }
  float dot(const std::byte* in, const float* x) const override {
    std::vector<float> v(static_cast<size_t>(block_));
    decode(in, v);
    float acc = 0.0f;
    for (int i = 0; i < block_; ++i) acc += v[i] * x[i];
    return acc;
  }

 private:
  int block_;
};

std::vector<float> randn(std::mt19937& rng, size_t n, float sd = 1.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A calibration problem: the quantized model's inputs Xq (correlated channels) and the full-precision model's
// Xfp = Xq + dev_sd (Xq E + Z) on the same ns tokens -- a deviation partly explained by Xq, as the error the
// quantized layers before add is; `dead` channels of Xq are zero on every token (Xfp keeps them).
struct Problem {
  int64_t rows, cols, ns;
  std::vector<float> w, xq, xfp;
  LayerStats st;
};

Problem make_problem(uint32_t seed, int64_t rows, int64_t cols, int64_t ns, std::vector<int64_t> dead = {},
                     float dev_sd = 0.3f) {
  std::mt19937 rng(seed);
  Problem p{rows, cols, ns, randn(rng, static_cast<size_t>(rows * cols)), {}, {}, {}};
  // Row-major ns x cols is column-major cols x ns: a token per column, x_s = M^T z_s.
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;
  auto random = [&](int64_t r, int64_t c, float sd) {
    const auto v = randn(rng, static_cast<size_t>(r * c), sd);
    return MatF(Eigen::Map<const MatF>(v.data(), r, c));
  };
  const float k = 1.0f / std::sqrt(static_cast<float>(cols));
  const MatF Xq = (random(cols, cols, 2.0f * k) + MatF::Identity(cols, cols)).transpose() * random(cols, ns, 1.0f);
  const MatF Xfp = Xq + dev_sd * (random(cols, cols, k).transpose() * Xq + random(cols, ns, 1.0f));
  p.xq.assign(Xq.data(), Xq.data() + Xq.size());
  p.xfp.assign(Xfp.data(), Xfp.data() + Xfp.size());
  for (int64_t j : dead)
    for (int64_t s = 0; s < ns; ++s) p.xq[s * cols + j] = 0.0f;
  HessianAccumulator h(cols);
  CrossAccumulator c(cols);
  // Two batches: the accumulators must sum across calls.
  const int64_t n1 = ns / 3;
  h.add(p.xq.data(), n1);
  h.add(p.xq.data() + n1 * cols, ns - n1);
  c.add(p.xfp.data(), p.xq.data(), n1);
  c.add(p.xfp.data() + n1 * cols, p.xq.data() + n1 * cols, ns - n1);
  p.st = h.stats();
  c.attach(p.st);
  // H exactly, in double: the solver is what these tests check, against a reference built from X itself; the
  // accumulator's float blocks (~1e-7 relative, HessianAccumulator.FloatBlocksMatchDoubleReference) would otherwise
  // set the bound of the least-squares comparison.
  const double k2 = 2.0 / static_cast<double>(ns);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double sum = 0;
      for (int64_t s = 0; s < ns; ++s) sum += static_cast<double>(p.xq[s * cols + i]) * p.xq[s * cols + j];
      p.st.H[static_cast<size_t>(i * cols + j)] = k2 * sum;
    }
  return p;
}

MatD map_rows(const std::vector<float>& v, int64_t r, int64_t c) {
  return Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), r, c)
      .cast<double>();
}

// The objective's pieces built straight from the data, in double: the damping GPTQ uses (dead columns' H_jj = 1,
// then percdamp * mean diag), the dead columns, and the target inputs X_a = Xq + alpha (Xfp - Xq).
struct Objective {
  MatD W, Wz, Xq, Xa, Hd;  // Wz: W with dead columns zeroed
  std::vector<int64_t> dead;
  double damp = 0.0;
};

Objective objective_of(const Problem& p, double alpha, double percdamp) {
  Objective o;
  o.W = map_rows(p.w, p.rows, p.cols);
  o.Xq = map_rows(p.xq, p.ns, p.cols);
  const MatD Xfp = map_rows(p.xfp, p.ns, p.cols);
  o.Xa = o.Xq + alpha * (Xfp - o.Xq);
  o.Hd = (2.0 / static_cast<double>(p.ns)) * o.Xq.transpose() * o.Xq;
  o.Wz = o.W;
  for (int64_t j = 0; j < p.cols; ++j)
    if (o.Hd(j, j) == 0.0) {
      o.dead.push_back(j);
      o.Hd(j, j) = 1.0;
      o.Wz.col(j).setZero();
    }
  o.damp = percdamp * o.Hd.diagonal().mean();
  o.Hd.diagonal().array() += o.damp;
  return o;
}

// J(Q) = 2/N ||Xq Q^T - Xa W^T||^2 + damp ||Q - Wz||^2 + ||Q_dead||^2: what GPTAQ minimises (see gptaq.cpp).
double objective_value(const Objective& o, const MatD& Q) {
  const double k = 2.0 / static_cast<double>(o.Xq.rows());
  double j = k * (o.Xq * Q.transpose() - o.Xa * o.W.transpose()).squaredNorm() + o.damp * (Q - o.Wz).squaredNorm();
  for (int64_t d : o.dead) j += Q.col(d).squaredNorm();
  return j;
}

// The minimiser of objective_value as one stacked least-squares problem, solved by QR:
// [sqrt(2/N) Xq; sqrt(damp) I; e_dead^T] Q^T = [sqrt(2/N) Xa W^T; sqrt(damp) Wz^T; 0].
MatD least_squares_by_qr(const Objective& o) {
  const int64_t ns = o.Xq.rows(), n = o.Xq.cols(), rows = o.W.rows(), nd = static_cast<int64_t>(o.dead.size());
  const double k = std::sqrt(2.0 / static_cast<double>(ns)), sd = std::sqrt(o.damp);
  Eigen::MatrixXd A = Eigen::MatrixXd::Zero(ns + n + nd, n), B = Eigen::MatrixXd::Zero(ns + n + nd, rows);
  A.topRows(ns) = k * o.Xq;
  B.topRows(ns) = k * o.Xa * o.W.transpose();
  A.middleRows(ns, n) = sd * Eigen::MatrixXd::Identity(n, n);
  B.middleRows(ns, n) = sd * o.Wz.transpose();
  for (int64_t t = 0; t < nd; ++t) A(ns + n + t, o.dead[t]) = 1.0;
  return A.colPivHouseholderQr().solve(B).transpose();
}

QuantResult run_gptaq(const Problem& p, const formats::Format& fmt, const QuantOptions& opts) {
  return make_quantizer("gptaq", opts)->quantize(p.w.data(), p.rows, p.cols, fmt, &p.st);
}

// (a) Rounding off: GPTAQ returns the least-squares solution W + alpha W C H_d^-1 of its objective.
TEST(Gptaq, RoundingOffIsTheLeastSquaresSolution) {
  struct Case {
    uint32_t seed;
    int64_t rows, cols, ns;
    std::vector<int64_t> dead;
    bool act_order;
    int block_size;
    double alpha;
  };
  const Case cases[] = {
      {1, 5, 24, 80, {}, false, 8, 1.0},
      {2, 4, 21, 60, {}, false, 128, 1.0},  // a partial last block, one lazy batch
      {3, 6, 32, 96, {3, 17}, false, 8, 1.0},  // dead channels of the quantized model
      {4, 5, 24, 80, {5}, true, 8, 1.0},        // act_order: C is permuted with H
      {5, 5, 24, 80, {}, false, 16, 0.25},      // the default alpha
  };
  for (const Case& c : cases) {
    const Problem p = make_problem(c.seed, c.rows, c.cols, c.ns, c.dead);
    QuantOptions opts;
    opts.gptaq_alpha = c.alpha;
    opts.act_order = c.act_order;
    opts.block_size = c.block_size;
    const QuantResult res = run_gptaq(p, ExactFormat(8), opts);
    const Objective o = objective_of(p, c.alpha, opts.percdamp);
    const MatD ref = least_squares_by_qr(o);
    const MatD got = map_rows(res.dequant, p.rows, p.cols);
    const double rel = (got - ref).cwiseAbs().maxCoeff() / ref.cwiseAbs().maxCoeff();
    EXPECT_LT(rel, 1e-6) << "seed " << c.seed;
    // The asymmetry really moved the weights (the test would pass vacuously on W itself otherwise).
    EXPECT_GT((ref - o.Wz).cwiseAbs().maxCoeff(), 1e-2 * ref.cwiseAbs().maxCoeff()) << "seed " << c.seed;
    for (int64_t j : c.dead)
      for (int64_t r = 0; r < p.rows; ++r) EXPECT_EQ(res.dequant[r * p.cols + j], 0.0f) << "seed " << c.seed;
  }
}

// The slow greedy reference: for each column j in order, solve the normal equations for columns j.. given the
// rounded columns ..j-1 (fresh LDLT each time), fit the block's params on those values at a block's first column
// (as gptq.cpp does), round column j. Returns the decoded weights (encode/decode of the pre-rounding values under
// the fitted params, as the quantizers store them).
MatD greedy_reference(const Objective& o, const formats::Format& fmt) {
  const int64_t rows = o.W.rows(), n = o.W.cols(), g = fmt.block();
  const MatD target = o.Wz * o.Hd + (o.W * (o.Xa - o.Xq).transpose() * o.Xq) * (2.0 / static_cast<double>(o.Xq.rows()));
  MatD Q = MatD::Zero(rows, n);
  MatD pre(rows, n);  // the value each weight was rounded from
  std::vector<formats::BlockParams> params(static_cast<size_t>(rows));
  std::vector<std::vector<formats::BlockParams>> all(static_cast<size_t>(rows));
  for (int64_t j = 0; j < n; ++j) {
    const int64_t m = n - j;
    const Eigen::LDLT<Eigen::MatrixXd> ldlt(o.Hd.block(j, j, m, m));
    Eigen::MatrixXd rhs = (target.rightCols(m) - Q.leftCols(j) * o.Hd.block(0, j, j, m)).transpose();
    const Eigen::MatrixXd V = ldlt.solve(rhs);  // m x rows: the current least-squares values of columns j..
    for (int64_t r = 0; r < rows; ++r) {
      if (j % g == 0) {
        std::vector<float> blk(static_cast<size_t>(std::min(g, m)));
        for (size_t t = 0; t < blk.size(); ++t) blk[t] = static_cast<float>(V(static_cast<int64_t>(t), r));
        params[r] = formats::fit_block(fmt, blk, {});
        all[r].push_back(params[r]);
      }
      const float v = static_cast<float>(V(0, r));
      pre(r, j) = v;
      Q(r, j) = fmt.round(v, params[r], static_cast<int>(j % g));
    }
  }
  MatD dec(rows, n);
  std::vector<std::byte> buf(fmt.block_bytes());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k * g < n; ++k) {
      const int64_t len = std::min(g, n - k * g);
      std::vector<float> w(static_cast<size_t>(len)), out(static_cast<size_t>(len));
      for (int64_t t = 0; t < len; ++t) w[t] = static_cast<float>(pre(r, k * g + t));
      formats::encode_block(fmt, w, all[r][k], buf.data());
      formats::decode_block(fmt, buf.data(), out);
      for (int64_t t = 0; t < len; ++t) dec(r, k * g + t) = out[t];
    }
  return dec;
}

// (b) Rounding on, real formats: GPTAQ equals the greedy reference.
TEST(Gptaq, EqualsGreedyLeastSquaresReference) {
  struct Case {
    const char* format;
    uint32_t seed;
    int64_t rows, cols;
    int block_size;
    double alpha;
  };
  const Case cases[] = {
      {"int4g32a", 10, 6, 96, 32, 1.0},   {"int4g32a", 11, 5, 96, 128, 0.25}, {"int3g32s", 12, 4, 64, 32, 1.0},
      {"q4_0", 13, 5, 64, 32, 1.0},       {"q4_0", 14, 4, 96, 64, 0.25},      {"q4_K", 15, 3, 256, 128, 1.0},
  };
  for (const Case& c : cases) {
    const auto fmt = formats::make_format(c.format);
    const Problem p = make_problem(c.seed, c.rows, c.cols, 2 * c.cols, c.seed % 2 ? std::vector<int64_t>{7} : std::vector<int64_t>{});
    QuantOptions opts;
    opts.gptaq_alpha = c.alpha;
    opts.block_size = c.block_size;
    const QuantResult res = run_gptaq(p, *fmt, opts);
    const Objective o = objective_of(p, c.alpha, opts.percdamp);
    const MatD ref = greedy_reference(o, *fmt);
    const MatD got = map_rows(res.dequant, p.rows, p.cols);
    int64_t differ = 0;
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t j = 0; j < p.cols; ++j) differ += got(r, j) != ref(r, j);
    EXPECT_LE(static_cast<double>(differ), 0.005 * static_cast<double>(p.rows * p.cols)) << c.format << " seed " << c.seed;
    const double jg = objective_value(o, got), jr = objective_value(o, ref);
    EXPECT_NEAR(jg, jr, 1e-6 * jr) << c.format << " seed " << c.seed << " (" << differ << " weights differ)";
    // Rounding really happened, and it is not GPTQ's result.
    EXPECT_GT((got - o.Wz).cwiseAbs().maxCoeff(), 1e-3) << c.format;
    QuantOptions gopts;
    gopts.block_size = c.block_size;
    const QuantResult gptq = make_quantizer("gptq", gopts)->quantize(p.w.data(), p.rows, p.cols, *fmt, &p.st);
    EXPECT_NE(gptq.dequant, res.dequant) << c.format;
  }
}

// (c) Symmetric calibration: alpha = 0 or C = 0 gives GPTQ's bytes.
TEST(Gptaq, SymmetricCalibrationIsGptqBytes) {
  for (const char* name : {"int4g32a", "q4_K"}) {
    const auto fmt = formats::make_format(name);
    const int64_t cols = std::string(name) == "q4_K" ? 256 : 96;
    for (bool act_order : {false, true}) {
      QuantOptions opts;
      opts.act_order = act_order;
      Problem p = make_problem(20, 6, cols, 2 * cols, {9});
      const QuantResult gptq = make_quantizer("gptq", opts)->quantize(p.w.data(), p.rows, p.cols, *fmt, &p.st);
      opts.gptaq_alpha = 0.0;
      const QuantResult a0 = run_gptaq(p, *fmt, opts);
      EXPECT_EQ(a0.data, gptq.data) << name << " alpha 0";
      EXPECT_EQ(a0.dequant, gptq.dequant) << name << " alpha 0";
      // C = 0: the full-precision model's inputs are the quantized model's.
      opts.gptaq_alpha = 1.0;
      CrossAccumulator c(cols);
      c.add(p.xq.data(), p.xq.data(), p.ns);
      c.attach(p.st);
      ASSERT_TRUE(std::all_of(p.st.cross.begin(), p.st.cross.end(), [](double v) { return v == 0.0; }));
      const QuantResult c0 = run_gptaq(p, *fmt, opts);
      EXPECT_EQ(c0.data, gptq.data) << name << " C = 0";
      EXPECT_EQ(c0.dequant, gptq.dequant) << name << " C = 0";
    }
  }
}

// What GPTAQ is for: a lower error against the full-precision output than GPTQ, which targets the quantized one.
TEST(Gptaq, LowerAsymmetricErrorThanGptq) {
  const auto fmt = formats::make_format("int3g32a");
  double sum_gptq = 0.0, sum_gptaq = 0.0;
  for (uint32_t seed = 30; seed < 34; ++seed) {
    const Problem p = make_problem(seed, 8, 64, 128);
    QuantOptions opts;
    opts.gptaq_alpha = 1.0;
    const Objective o = objective_of(p, 1.0, opts.percdamp);
    const QuantResult gptq = make_quantizer("gptq", opts)->quantize(p.w.data(), p.rows, p.cols, *fmt, &p.st);
    const QuantResult gptaq = run_gptaq(p, *fmt, opts);
    sum_gptq += objective_value(o, map_rows(gptq.dequant, p.rows, p.cols));
    sum_gptaq += objective_value(o, map_rows(gptaq.dequant, p.rows, p.cols));
  }
  std::printf("error against the full-precision output over 4 seeds: gptq %.4g gptaq %.4g\n", sum_gptq, sum_gptaq);
  EXPECT_LT(sum_gptaq, 0.9 * sum_gptq);
}

TEST(Gptaq, NeedsTheFullPrecisionInputs) {
  Problem p = make_problem(40, 3, 32, 64);
  const auto fmt = formats::make_format("int4g32a");
  const auto q = make_quantizer("gptaq");
  EXPECT_EQ(q->name(), "gptaq");
  EXPECT_EQ(QuantOptions{}.gptaq_alpha, 0.25);
  EXPECT_THROW(q->quantize(p.w.data(), p.rows, p.cols, *fmt, nullptr), lowbit::Error);
  LayerStats sym = p.st;
  sym.cross.clear();
  try {
    q->quantize(p.w.data(), p.rows, p.cols, *fmt, &sym);
    ADD_FAILURE() << "no error without the cross term";
  } catch (const lowbit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("full-precision"), std::string::npos) << e.what();
  }
  LayerStats bad = p.st;
  bad.cross.resize(10);
  EXPECT_THROW(q->quantize(p.w.data(), p.rows, p.cols, *fmt, &bad), lowbit::Error);
  bad = p.st;
  bad.cross[5] = NAN;
  EXPECT_THROW(q->quantize(p.w.data(), p.rows, p.cols, *fmt, &bad), lowbit::Error);
  for (double alpha : {-0.1, 1.5, double(NAN)}) {
    QuantOptions opts;
    opts.gptaq_alpha = alpha;
    EXPECT_THROW(make_quantizer("gptaq", opts)->quantize(p.w.data(), p.rows, p.cols, *fmt, &p.st), lowbit::Error);
  }
}

TEST(CrossAccumulator, MatchesNaiveLoopAndChecksItsPartner) {
  std::mt19937 rng(41);
  const int64_t cols = 11;
  auto xq = randn(rng, 19 * cols), xfp = randn(rng, 19 * cols);
  CrossAccumulator acc(cols);
  EXPECT_EQ(acc.cross(), std::vector<double>(cols * cols, 0.0));
  acc.add(xfp.data(), xq.data(), 8);
  acc.add(xfp.data() + 8 * cols, xq.data() + 8 * cols, 11);
  ASSERT_EQ(acc.n_samples(), 19);
  const std::vector<double> C = acc.cross();
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double sum = 0.0;
      for (int64_t s = 0; s < 19; ++s)
        sum += (static_cast<double>(xfp[s * cols + i]) - xq[s * cols + i]) * static_cast<double>(xq[s * cols + j]);
      EXPECT_NEAR(C[i * cols + j], 2.0 * sum / 19.0, 1e-12 * (1.0 + std::abs(sum)));
    }
  HessianAccumulator h(cols);
  h.add(xq.data(), 18);  // one row short: H and C would not be normalised alike
  LayerStats st = h.stats();
  EXPECT_THROW(acc.attach(st), lowbit::Error);
  h.add(xq.data() + 18 * cols, 1);
  st = h.stats();
  acc.attach(st);
  EXPECT_EQ(st.cross, C);
  HessianAccumulator h12(cols + 1);
  LayerStats wrong = h12.stats();
  EXPECT_THROW(acc.attach(wrong), lowbit::Error);
  EXPECT_THROW({ CrossAccumulator none(0); }, lowbit::Error);
}

}  // namespace
}  // namespace lowbit::quant
