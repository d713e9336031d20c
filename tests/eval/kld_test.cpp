// evaluate_pair (lowbit eval): KL divergence, top-1 agreement and PPL of a model against its base, checked
// against a brute-force computation from Model::forward logits, perplexity_tokens(), and the CLI end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "lowbit/error.h"
#include "lowbit/kld.h"
#include "lowbit/perplexity.h"
#include "model/synthetic.h"
#include "test_util.h"

namespace lowbit {
namespace {

std::vector<int32_t> random_tokens(int n, int n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(0, n_vocab - 1);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = d(rng);
  return t;
}

// Softmax in long double, written independently of kld.cpp.
std::vector<long double> softmax(const float* l, int n) {
  std::vector<long double> p(n);
  long double mx = *std::max_element(l, l + n), z = 0;
  for (int i = 0; i < n; ++i) z += p[i] = std::exp(static_cast<long double>(l[i]) - mx);
  for (auto& x : p) x /= z;
  return p;
}

TEST(Kld, KlDivergenceOfTwoDistributions) {
  const float a[3] = {1.0f, 2.0f, 0.0f}, b[3] = {0.5f, 2.5f, -1.0f};
  auto p = softmax(a, 3), q = softmax(b, 3);
  long double want = 0;
  for (int i = 0; i < 3; ++i) want += p[i] * std::log(p[i] / q[i]);
  EXPECT_NEAR(kl_divergence(a, b, 3), static_cast<double>(want), 1e-12);
  EXPECT_EQ(kl_divergence(a, a, 3), 0.0);
}

TEST(Kld, ModelAgainstItselfIsExactlyZero) {
  auto file = test::synthetic_model(test::small_config());
  const auto tokens = random_tokens(100, 97, 7);
  Model a(file, 32), b(file, 32);
  EvalOptions o;
  o.ctx = 32;
  int calls = 0;
  o.on_chunk = [&](int c, double kld, double same) {
    EXPECT_EQ(c, calls++);
    EXPECT_EQ(kld, 0.0);
    EXPECT_EQ(same, 1.0);
  };
  for (Model* q : {&a, &b}) {  // the same Model object, and a second Model over the same weights
    calls = 0;
    EvalResult r = evaluate_pair(*q, a, tokens, 1, o);
    EXPECT_EQ(r.chunks, 3);
    EXPECT_EQ(calls, 3);
    EXPECT_EQ(r.scored, 3 * 15);
    EXPECT_EQ(r.kld_mean, 0.0);
    EXPECT_EQ(r.kld_max, 0.0);
    EXPECT_EQ(r.kld_min, 0.0);
    EXPECT_EQ(r.kld_stderr, 0.0);
    EXPECT_EQ(r.same_top, 1.0);
    EXPECT_EQ(r.ppl_delta, 0.0);
    EXPECT_EQ(r.ppl_ratio, 1.0);
    EXPECT_EQ(r.ln_ppl_ratio, 0.0);
    EXPECT_EQ(r.dp_rms, 0.0);
    EXPECT_EQ(r.dp_max_abs, 0.0);
    EXPECT_EQ(r.ppl_quant, r.ppl_base);
    EXPECT_NEAR(r.cor_ln_ppl, 1.0, 1e-12);
  }
}

TEST(Kld, PerturbedCopyMatchesBruteForce) {
  auto c = test::small_config();
  auto base_file = test::synthetic_model(c, DType::F32, 3);
  auto quant_file = test::synthetic_model(c, DType::BF16, 3);  // same weights rounded to bf16
  const int ctx = 24, chunks = 3, n_vocab = c.n_vocab;
  const auto tokens = random_tokens(ctx * chunks + 5, n_vocab, 11);
  const int32_t bos = 1;
  Model base(base_file, ctx), quant(quant_file, ctx);
  EvalOptions o;
  o.ctx = ctx;
  EvalResult r = evaluate_pair(quant, base, tokens, bos, o);
  ASSERT_EQ(r.chunks, chunks);

  // Brute force from the logits of each window.
  std::vector<double> kl, dp;
  double nq = 0, nb = 0;
  int same = 0;
  std::vector<float> lq(static_cast<size_t>(ctx) * n_vocab), lb(lq.size());
  for (int w = 0; w < chunks; ++w) {
    std::vector<int32_t> win(tokens.begin() + w * ctx, tokens.begin() + (w + 1) * ctx);
    win[0] = bos;
    quant.forward(win, 0, lq.data(), true);
    base.forward(win, 0, lb.data(), true);
    for (int j = ctx / 2; j < ctx - 1; ++j) {
      auto p = softmax(lb.data() + j * n_vocab, n_vocab), q = softmax(lq.data() + j * n_vocab, n_vocab);
      long double k = 0;
      for (int i = 0; i < n_vocab; ++i) k += p[i] * std::log(p[i] / q[i]);
      kl.push_back(static_cast<double>(k));
      const int t = win[j + 1];
      nq -= std::log(static_cast<double>(q[t]));
      nb -= std::log(static_cast<double>(p[t]));
      dp.push_back(static_cast<double>(q[t] - p[t]));
      same += std::max_element(p.begin(), p.end()) - p.begin() == std::max_element(q.begin(), q.end()) - q.begin();
    }
  }
  const double n = static_cast<double>(kl.size());
  ASSERT_EQ(r.scored, static_cast<int64_t>(kl.size()));
  double mean = 0, rms = 0;
  for (double k : kl) mean += k;
  mean /= n;
  for (double d : dp) rms += d * d;
  rms = std::sqrt(rms / n);
  EXPECT_GT(r.kld_mean, 1e-7);  // bf16 rounding changes the outputs
  EXPECT_NEAR(r.kld_mean, mean, 1e-9 * mean + 1e-13);
  std::sort(kl.begin(), kl.end());
  EXPECT_NEAR(r.kld_max, kl.back(), 1e-9 * kl.back() + 1e-13);
  EXPECT_NEAR(r.kld_min, kl.front(), 1e-9 * std::fabs(kl.front()) + 1e-13);
  const double med = 0.5 * (kl[kl.size() / 2 - 1] + kl[kl.size() / 2]);  // 33 positions: odd count
  EXPECT_NEAR(r.kld_median, kl.size() % 2 ? kl[kl.size() / 2] : med, 1e-9 * mean + 1e-13);
  EXPECT_NEAR(r.dp_rms, rms, 1e-9 * rms + 1e-13);
  EXPECT_NEAR(r.same_top, same / n, 1e-15);
  EXPECT_NEAR(r.ppl_quant, std::exp(nq / n), 1e-9 * r.ppl_quant);
  EXPECT_NEAR(r.ppl_base, std::exp(nb / n), 1e-9 * r.ppl_base);
  EXPECT_LE(r.kld_median, r.kld_p90);
  EXPECT_LE(r.kld_p90, r.kld_p99);
  EXPECT_LE(r.kld_p99, r.kld_max);

  // Each side's PPL is what perplexity_tokens() reports.
  PerplexityOptions po;
  po.ctx = ctx;
  PerplexityResult pq = perplexity_tokens(quant, tokens, bos, po), pb = perplexity_tokens(base, tokens, bos, po);
  EXPECT_DOUBLE_EQ(r.ppl_quant, pq.ppl);
  EXPECT_DOUBLE_EQ(r.ppl_quant_stderr, pq.ppl_stderr);
  EXPECT_DOUBLE_EQ(r.ppl_base, pb.ppl);
  EXPECT_DOUBLE_EQ(r.ppl_base_stderr, pb.ppl_stderr);
  EXPECT_DOUBLE_EQ(r.ppl_delta, pq.ppl - pb.ppl);
}

TEST(Kld, Errors) {
  auto c = test::small_config();
  auto base_file = test::synthetic_model(c);
  c.n_vocab = 98;
  auto other = test::synthetic_model(c);
  Model base(base_file, 32), quant(other, 32);
  EvalOptions o;
  o.ctx = 16;
  const auto tokens = random_tokens(64, 97, 1);
  try {
    evaluate_pair(quant, base, tokens, 1, o);
    FAIL() << "expected a vocabulary error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vocabulary"), std::string::npos) << e.what();
  }
  o.ctx = 64;  // more than the 32 positions the models were made for
  EXPECT_THROW(evaluate_pair(base, base, tokens, 1, o), Error);
  o.ctx = 16;
  EXPECT_THROW(evaluate_pair(base, base, std::vector<int32_t>(10, 2), 1, o), Error);
}

// ---- CLI end to end ----

struct CliRun {
  int code = -1;
  std::string out, err;
};

CliRun lowbit_cli(const std::string& args) {
  static int counter = 0;
  const auto err = std::filesystem::temp_directory_path() /
                   ("lowbit_eval_err_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
  const std::string cmd = std::string(LOWBIT_BINARY) + " " + args + " 2>" + err.string();
  CliRun r;
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.err = test::read_file(err.string());
  std::filesystem::remove(err);
  return r;
}

TEST(EvalCli, Stories260KGgufVsLlama2cIsIdentical) {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  LOWBIT_REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw");
  CliRun r = lowbit_cli("eval --json -m " + test::shared("models/stories260K/stories260K.bin") + " --base " +
                     test::shared("models/stories260K/stories260K.gguf") + " -f " +
                     test::shared("data/wikitext-2-raw/wiki.test.raw") + " --ctx 128 --chunks 4");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["chunks"], 4);
  EXPECT_EQ(j["scored"], 4 * 63);
  EXPECT_LT(std::fabs(j["kld_mean"].get<double>()), 1e-6);
  EXPECT_LT(j["kld_max"].get<double>(), 1e-5);
  EXPECT_EQ(j["same_top"].get<double>(), 1.0);
  EXPECT_NEAR(j["ppl_quant"].get<double>(), j["ppl_base"].get<double>(), 1e-4 * j["ppl_base"].get<double>());
  EXPECT_LT(j["dp_rms"].get<double>(), 1e-4);
}

TEST(EvalCli, TinyStories656KGgufVsHfDirectory) {
  LOWBIT_REQUIRE_SHARED("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  LOWBIT_REQUIRE_SHARED("models/TinyStories-656K/config.json");
  LOWBIT_REQUIRE_SHARED("data/wikitext-2-raw/wiki.test.raw.656K-charset");
  CliRun r = lowbit_cli("eval --json -m " + test::shared("models/TinyStories-656K") + " --base " +
                     test::shared("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf") + " -f " +
                     test::shared("data/wikitext-2-raw/wiki.test.raw.656K-charset") + " --ctx 128 --chunks 3");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["chunks"], 3);
  EXPECT_LT(std::fabs(j["kld_mean"].get<double>()), 1e-6);
  EXPECT_GT(j["same_top"].get<double>(), 0.99);
  EXPECT_NEAR(j["ppl_quant"].get<double>(), j["ppl_base"].get<double>(), 1e-4 * j["ppl_base"].get<double>());
}

TEST(EvalCli, MismatchedVocabularyIsOneCleanError) {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.gguf");
  LOWBIT_REQUIRE_SHARED("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf");
  LOWBIT_REQUIRE_SHARED("data/tinystories/sample-5-stories.txt");
  CliRun r = lowbit_cli("eval -m " + test::shared("models/stories260K/stories260K.gguf") + " --base " +
                     test::shared("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf") + " -f " +
                     test::shared("data/tinystories/sample-5-stories.txt"));
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("vocabulary"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("stories260K.gguf"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lowbit
