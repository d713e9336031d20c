// Equivalence transforms (issue 12): with quantization off (--transforms-only) and non-trivial parameters, the
// transformed model computes the same logits as the source (1e-4 relative) on both fixture models and synth256;
// the rotation matrices are orthogonal; AWQ's scale search equals an exhaustive search over the same grid.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "formats/format.h"
#include "io/arch.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "ops/ops.h"
#include "quant/awq/awq.h"
#include "quant/methods.h"
#include "quant/quantize_model.h"
#include "quant/rotate/rotate.h"
#include "test_util.h"

namespace lowbit::quant {
namespace {

namespace fs = std::filesystem;

std::string tmp(const std::string& name) {
  return (fs::temp_directory_path() / ("lowbit_tr_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::vector<float> logits_of(const std::string& path, const std::vector<int32_t>& tokens) {
  auto f = load_model(path);
  Model m(f, static_cast<int>(tokens.size()));
  std::vector<float> out(tokens.size() * static_cast<size_t>(f->config.n_vocab));
  m.forward(tokens, 0, out.data(), true);
  return out;
}

std::vector<float> tensor_f32(const ModelFile& f, const std::string& name) {
  const TensorInfo& t = f.get(name);
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (t.shape.size() == 2) {
    const ops::WeightView w = ops::view_of(t);
    for (int64_t r = 0; r < w.rows; ++r) ops::get_row(w, r, v.data() + r * w.cols);
  } else {
    ops::widen_vector(t, v.data());
  }
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
  return d;
}

double max_abs(const std::vector<float>& a) {
  double m = 0;
  for (float v : a) m = std::max(m, std::fabs(static_cast<double>(v)));
  return m;
}

struct Case {
  const char* model;  // under ../shared
  const char* format;
};
const Case kModels[] = {
    {"models/TinyStories-656K", "int4g32a"},                        // HF directory (half-split RoPE, f32)
    {"models/stories260K/stories260K.gguf", "int4g32a"},             // GGUF, GQA, tied head, 172-wide FFN
    {"reference/gguf/synth256-F32.gguf", "q4_K"},                    // rows fill 256-weight blocks
};

class TransformExact : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(TransformExact, LogitsEqualTheSource) {
  const Case& c = kModels[std::get<0>(GetParam())];
  const std::string method = std::get<1>(GetParam());
  LOWBIT_REQUIRE_SHARED(c.model);
  const std::string src = test::shared(c.model);
  auto base = load_model(src);
  const ModelConfig& cfg = base->config;
  std::mt19937 rng(7);
  auto window = [&](int len) {
    std::vector<int32_t> w(static_cast<size_t>(len));
    for (auto& t : w) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(cfg.n_vocab));
    return w;
  };
  QuantizeModelOptions o;
  o.method = method;
  o.format = c.format;
  o.transforms_only = true;
  o.qopts.awq_alpha = 0.5;   // non-trivial scales wherever mean|x| varies
  o.qopts.awq_clip = false;  // clipping is part of quantizing (it moves weights), not of the equivalence
  if (method.find("awq") != std::string::npos)
    for (int i = 0; i < 4; ++i) o.calib.push_back(window(32));
  const std::string out = tmp(std::to_string(std::get<0>(GetParam())) + method + ".gguf");
  quantize_model(src, out, o);
  auto tr = load_model(out);

  // Non-trivial: the transform changed the weights it should have.
  const std::string q0 = io::block_tensor_name(0, "attn_q"), n0 = io::block_tensor_name(0, "attn_norm");
  const std::string up0 = io::block_tensor_name(0, "ffn_up");
  if (method.find("rotate") != std::string::npos) {
    EXPECT_GT(max_abs_diff(tensor_f32(*base, q0), tensor_f32(*tr, q0)), 1e-3) << "attn_q not rotated";
    if (method.find("awq") == std::string::npos)
      for (float g : tensor_f32(*tr, n0)) ASSERT_EQ(g, 1.0f) << "attn_norm not folded";
    EXPECT_NE(tr->find("output.weight"), nullptr) << "the head must be untied (or kept)";
  }
  if (method.find("awq") != std::string::npos) {
    const std::vector<float> g0 = tensor_f32(*base, n0), g1 = tensor_f32(*tr, n0);
    EXPECT_GT(max_abs_diff(g0, g1), 1e-3 * max_abs(g0)) << "attn_norm not rescaled";
    EXPECT_GT(max_abs_diff(tensor_f32(*base, up0), tensor_f32(*tr, up0)), 1e-6) << "ffn_up rows not rescaled";
  }

  const std::vector<int32_t> tokens = window(24);
  const std::vector<float> a = logits_of(src, tokens), b = logits_of(out, tokens);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_LE(max_abs_diff(a, b), 1e-4 * max_abs(a)) << method << " on " << c.model;
  fs::remove(out);
}

INSTANTIATE_TEST_SUITE_P(Models, TransformExact,
                         ::testing::Combine(::testing::Values(0, 1, 2),
                                            ::testing::Values("rotate+rtn", "awq+rtn", "rotate+awq+gptq")));

TEST(Rotation, OrthogonalAndNotTheIdentity) {
  for (int64_t n : {8, 64, 256, 12, 48}) {  // Hadamard sizes and random orthogonal ones
    const Rotation r(n, 3);
    EXPECT_EQ(r.is_hadamard(), (n & (n - 1)) == 0) << n;
    const std::vector<double> Q = r.dense();
    double off_identity = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0;
        for (int64_t k = 0; k < n; ++k) dot += Q[static_cast<size_t>(i * n + k)] * Q[static_cast<size_t>(j * n + k)];
        EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-5) << n;
        off_identity = std::max(off_identity, std::fabs(Q[static_cast<size_t>(i * n + j)] - (i == j ? 1.0 : 0.0)));
      }
    EXPECT_GT(off_identity, 0.1) << n;
    // apply_rows_inverse undoes apply_rows.
    std::vector<float> x(static_cast<size_t>(3 * n));
    std::mt19937 rng(1);
    std::normal_distribution<float> g;
    for (auto& v : x) v = g(rng);
    std::vector<float> y = x;
    r.apply_rows(y.data(), 3);
    r.apply_rows_inverse(y.data(), 3);
    EXPECT_LE(max_abs_diff(x, y), 1e-5) << n;
  }
}

// AWQ's search over alpha equals an exhaustive search over the same grid scored directly on the inputs X
// (||(Q(W diag s) diag s^-1 - W) X^T||^2 summed over the site's linears), on a small layer with outlier channels.
TEST(Awq, SearchEqualsExhaustiveGrid) {
  const int64_t n = 64, rows0 = 24, rows1 = 40, tokens = 256;
  std::mt19937 rng(11);
  std::normal_distribution<float> g;
  std::vector<float> X(static_cast<size_t>(tokens * n));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < n; ++j) X[static_cast<size_t>(t * n + j)] = g(rng) * (j % 9 == 0 ? 8.0f : 1.0f);
  std::vector<float> W0(static_cast<size_t>(rows0 * n)), W1(static_cast<size_t>(rows1 * n));
  for (auto& v : W0) v = g(rng);
  for (auto& v : W1) v = g(rng);
  SiteStats st;
  HessianAccumulator acc(n);
  acc.add(X.data(), tokens);
  st.hessian = acc.stats();
  st.mean_abs.assign(static_cast<size_t>(n), 0.0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < n; ++j) st.mean_abs[static_cast<size_t>(j)] += std::fabs(X[static_cast<size_t>(t * n + j)]) / tokens;
  auto fmt = formats::make_format("int3g32a");
  const int grid = 20;
  const awq::SiteChoice got = awq::search_site({W0.data(), W1.data()}, {rows0, rows1}, {fmt.get(), fmt.get()}, n, st,
                                               st.mean_abs, grid);
  // Exhaustive, independently: scales from the definition, loss from X.
  auto rtn = make_quantizer("rtn");
  int best = -1;
  double best_loss = 1e300;
  std::vector<double> losses;
  for (int a = 0; a < grid; ++a) {
    const double alpha = static_cast<double>(a) / grid;
    std::vector<double> s(static_cast<size_t>(n));
    double mx = 0, mn = 1e300;
    for (int64_t j = 0; j < n; ++j) {
      s[j] = std::pow(std::max(st.mean_abs[j], 1e-4), alpha);
      mx = std::max(mx, s[j]), mn = std::min(mn, s[j]);
    }
    for (auto& v : s) v /= std::sqrt(mx * mn);
    double loss = 0;
    for (auto [W, rows] : {std::pair{&W0, rows0}, std::pair{&W1, rows1}}) {
      std::vector<float> Ws(W->size());
      for (size_t e = 0; e < Ws.size(); ++e) Ws[e] = static_cast<float>((*W)[e] * s[e % n]);
      QuantResult q = rtn->quantize(Ws.data(), rows, n, *fmt, nullptr);
      for (int64_t t = 0; t < tokens; ++t)
        for (int64_t r = 0; r < rows; ++r) {
          double y = 0, yq = 0;
          for (int64_t j = 0; j < n; ++j) {
            const double x = X[static_cast<size_t>(t * n + j)];
            y += (*W)[static_cast<size_t>(r * n + j)] * x;
            yq += q.dequant[static_cast<size_t>(r * n + j)] / s[j] * x;
          }
          loss += (y - yq) * (y - yq);
        }
    }
    losses.push_back(loss);
    if (loss < best_loss) best_loss = loss, best = a;
  }
  EXPECT_EQ(got.alpha_index, best);
  EXPECT_GT(best, 0) << "outlier channels should make a non-trivial alpha win";
  // The two losses agree up to the 2/N normalisation of H.
  for (int a = 0; a < grid; ++a) EXPECT_NEAR(got.losses[a] * tokens / 2.0, losses[a], 1e-3 * losses[a]) << a;
}

TEST(Methods, BadCombinationsAreOneLineErrors) {
  EXPECT_THROW(parse_method("gptq+rtn"), Error);
  EXPECT_THROW(parse_method("awq+awq+gptq"), Error);
  EXPECT_THROW(parse_method("fancy"), Error);
  EXPECT_THROW(parse_method(""), Error);
  EXPECT_EQ(parse_method("gptq+awq+rotate").text, "rotate+awq+gptq");
  EXPECT_EQ(parse_method("awq").text, "awq+rtn");
  EXPECT_TRUE(parse_method("awq+rtn").needs_calibration);
  EXPECT_FALSE(parse_method("rotate+rtn").needs_calibration);
  EXPECT_TRUE(parse_method("gptaq").needs_fp_inputs);
  // Defaults: rtn without calibration (never a method that needs it), the measured choice with it.
  for (const char* f : {"int4g64a", "int3g32s", "q4_K", "gguf:Q4_K_M"}) {
    EXPECT_EQ(default_method(f, false), "rtn") << f;
    const MethodPlan p = parse_method(default_method(f, true));
    EXPECT_NE(p.solver->name, std::string("rtn")) << f << ": --calib without --method must not be plain RTN";
  }
  EXPECT_EQ(default_method("gguf:Q4_K_M", true), "gptaq");
  EXPECT_EQ(default_method("int3g64a", true), "awq+gptaq");
}

}  // namespace
}  // namespace lowbit::quant
