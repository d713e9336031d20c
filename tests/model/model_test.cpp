// The Llama-family graph against an independent double-precision reference (synthetic configurations covering
// every option) and against reference logits from a float64 numpy forward pass of the real fixture models.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "io/loaders.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/sampler.h"
#include "lowbit/threads.h"
#include "model/reference_forward.h"
#include "model/synthetic.h"
#include "test_util.h"

namespace lowbit {
namespace {

using test::reference_forward;
using test::small_config;
using test::synthetic_model;

std::vector<int32_t> some_tokens(int n, int vocab, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Max |a - b| / max|b| over all positions.
double rel_err(const std::vector<float>& got, const std::vector<std::vector<double>>& want) {
  double num = 0, den = 0;
  const size_t vocab = want[0].size();
  for (size_t p = 0; p < want.size(); ++p)
    for (size_t i = 0; i < vocab; ++i) {
      num = std::max(num, std::abs(static_cast<double>(got[p * vocab + i]) - want[p][i]));
      den = std::max(den, std::abs(want[p][i]));
    }
  return num / den;
}

void check_against_reference(const ModelConfig& c, DType dt, double tol) {
  auto m = synthetic_model(c, dt);
  io::validate_model(*m);
  const auto tokens = some_tokens(11, c.n_vocab);
  const auto want = reference_forward(*m, tokens);
  Model model(m);
  std::vector<float> got(tokens.size() * c.n_vocab);
  model.forward(tokens, 0, got.data(), true);  // one batched prefill
  EXPECT_LT(rel_err(got, want), tol) << "batched prefill";
  // Token-by-token decode through the KV cache must agree as well.
  std::vector<float> step(tokens.size() * c.n_vocab);
  for (size_t p = 0; p < tokens.size(); ++p)
    model.forward(std::span<const int32_t>(&tokens[p], 1), static_cast<int>(p), step.data() + p * c.n_vocab, false);
  EXPECT_LT(rel_err(step, want), tol) << "decode";
}

TEST(ModelReference, LlamaGqa) { check_against_reference(small_config(), DType::F32, 1e-5); }

TEST(ModelReference, MultiQueryAndTiedHalfSplit) {
  ModelConfig c = small_config();
  c.n_kv_heads = 1;
  c.tied_embeddings = true;
  c.rope_style = RopeStyle::HalfSplit;
  check_against_reference(c, DType::F32, 1e-5);
}

TEST(ModelReference, Qwen2BiasAndMultiHead) {
  ModelConfig c = small_config();
  c.arch = "qwen2";
  c.n_kv_heads = 4;
  c.qkv_bias = true;
  c.rope_style = RopeStyle::HalfSplit;
  c.rope_theta = 1000000.0f;
  c.norm_eps = 1e-6f;
  check_against_reference(c, DType::F32, 1e-5);
}

TEST(ModelReference, RopeScalingLinearLlama3AndFreqFactors) {
  for (const char* type : {"linear", "llama3", "freq_factors"}) {
    ModelConfig c = small_config();
    c.rope_scaling.type = type;
    c.rope_scaling.factor = 8.0f;
    c.rope_scaling.low_freq_factor = 1.0f;
    c.rope_scaling.high_freq_factor = 4.0f;
    c.rope_scaling.original_context = 64;  // small, so all three llama3 bands occur with head_dim 16
    c.rope_theta = 500000.0f;
    SCOPED_TRACE(type);
    check_against_reference(c, DType::F32, 1e-5);
  }
}

TEST(ModelReference, PartialRopeDims) {
  ModelConfig c = small_config();
  c.rope_dim = 8;  // only the first 8 of 16 head dimensions rotate
  check_against_reference(c, DType::F32, 1e-5);
}

TEST(ModelReference, HalfPrecisionWeights) {
  check_against_reference(small_config(), DType::F16, 1e-5);
  check_against_reference(small_config(), DType::BF16, 1e-5);
}

TEST(ModelReference, ThreadCountDoesNotChangeLogits) {
  auto m = synthetic_model(small_config());
  const auto tokens = some_tokens(9, 97);
  std::vector<float> a(tokens.size() * 97), b(tokens.size() * 97);
  set_num_threads(1);
  Model(m).forward(tokens, 0, a.data(), true);
  set_num_threads(2);
  Model(m).forward(tokens, 0, b.data(), true);
  set_num_threads(0);
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5f * (1 + std::abs(a[i])));
}

TEST(ModelErrors, TokenOutOfVocabularyAndContextOverflow) {
  auto m = synthetic_model(small_config());
  Model model(m, 8);
  std::vector<float> logits(97);
  std::vector<int32_t> bad = {5, 97};
  EXPECT_THROW(model.forward(bad, 0, logits.data(), false), Error);
  std::vector<int32_t> ok = {1, 2};
  EXPECT_THROW(model.forward(ok, 7, logits.data(), false), Error);
}

// ---- Real fixture models against the float64 numpy reference logits.

void check_reference_logits(const std::string& model_rel, const std::string& logits_rel,
                            const std::vector<int32_t>& ids, double tol) {
  LOWBIT_REQUIRE_SHARED(model_rel);
  LOWBIT_REQUIRE_SHARED(logits_rel);
  auto file = load_model(test::shared(model_rel));
  const int vocab = file->config.n_vocab;
  const auto want = test::read_f32(test::shared(logits_rel));
  ASSERT_EQ(want.size(), ids.size() * vocab);
  Model model(file);
  std::vector<float> got(ids.size() * vocab);
  model.forward(ids, 0, got.data(), true);
  double maxabs = 0, maxref = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    maxabs = std::max(maxabs, std::abs(static_cast<double>(got[i]) - want[i]));
    maxref = std::max(maxref, std::abs(static_cast<double>(want[i])));
  }
  EXPECT_LT(maxabs / maxref, tol) << "max abs diff " << maxabs << " (max |logit| " << maxref << ")";
}

const std::vector<int32_t> kStories260KIds = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395,
                                              317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292, 411, 426};
const std::vector<int32_t> k656KIds = {1, 80, 147, 201, 282, 215, 286, 598, 1662, 887, 610, 57, 10};

TEST(ModelFixtures, Stories260KLlama2cMatchesNumpyLogits) {
  check_reference_logits("models/stories260K/stories260K.bin", "reference/logits/stories260K.logits.f32",
                         kStories260KIds, 1e-4);
}

TEST(ModelFixtures, Stories260KGgufMatchesNumpyLogits) {
  check_reference_logits("models/stories260K/stories260K.gguf", "reference/logits/stories260K.logits.f32",
                         kStories260KIds, 1e-4);
}

TEST(ModelFixtures, TinyStories656KSafetensorsMatchesNumpyLogits) {
  check_reference_logits("models/TinyStories-656K", "reference/logits/TinyStories-656K.logits.f32", k656KIds, 1e-4);
}

TEST(ModelFixtures, TinyStories656KGgufMatchesNumpyLogits) {
  check_reference_logits("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf",
                         "reference/logits/TinyStories-656K.logits.f32", k656KIds, 1e-4);
}

// The same weights in different containers must give the same logits (to 1e-5).
void check_same_logits(const std::string& a_rel, const std::string& b_rel, const std::vector<int32_t>& ids) {
  LOWBIT_REQUIRE_SHARED(a_rel);
  LOWBIT_REQUIRE_SHARED(b_rel);
  auto fa = load_model(test::shared(a_rel));
  auto fb = load_model(test::shared(b_rel));
  ASSERT_EQ(fa->config.n_vocab, fb->config.n_vocab);
  const size_t n = ids.size() * fa->config.n_vocab;
  std::vector<float> la(n), lb(n);
  Model(fa).forward(ids, 0, la.data(), true);
  Model(fb).forward(ids, 0, lb.data(), true);
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(la[i], lb[i], 1e-5 * (1 + std::abs(la[i]))) << "at " << i;
}

TEST(ModelFixtures, Stories260KGgufEqualsLlama2c) {
  check_same_logits("models/stories260K/stories260K.gguf", "models/stories260K/stories260K.bin", kStories260KIds);
}

TEST(ModelFixtures, TinyStories656KGgufEqualsSafetensors) {
  check_same_logits("models/TinyStories-656K-gguf/TinyStories-656K-f32.gguf", "models/TinyStories-656K", k656KIds);
}

// The reference README: the argmax at each of the first 25 positions is the next id (the model's own greedy story).
TEST(ModelFixtures, Stories260KGreedyFollowsItsStory) {
  LOWBIT_REQUIRE_SHARED("models/stories260K/stories260K.bin");
  auto file = load_model(test::shared("models/stories260K/stories260K.bin"));
  Model model(file);
  std::vector<float> logits(kStories260KIds.size() * 512);
  model.forward(kStories260KIds, 0, logits.data(), true);
  for (size_t p = 0; p + 2 < kStories260KIds.size(); ++p)
    EXPECT_EQ(argmax(logits.data() + p * 512, 512), kStories260KIds[p + 1]) << "position " << p;
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// The calibration building blocks: embed + forward_layer for every layer, then the output norm and head,
// reproduce forward(); capture sees each linear's input with the right shape; replace_weight swaps a matrix.
TEST(ModelLayers, LayerByLayerEqualsForwardAndCaptures) {
  auto m = synthetic_model(small_config());
  const ModelConfig& c = m->config;
  const auto tokens = some_tokens(10, c.n_vocab);
  Model model(m);
  std::vector<float> want(tokens.size() * c.n_vocab);
  model.forward(tokens, 0, want.data(), true);

  std::vector<float> x(tokens.size() * c.dim);
  model.embed(tokens, x.data());
  std::map<LinearInput, int> seen;
  for (int l = 0; l < c.n_layers; ++l)
    model.forward_layer(l, x.data(), 1, static_cast<int>(tokens.size()),
                        [&](int layer, LinearInput which, const float* in, int64_t rows, int64_t cols) {
                          EXPECT_EQ(layer, l);
                          EXPECT_EQ(rows, static_cast<int64_t>(tokens.size()));
                          EXPECT_EQ(cols, which == LinearInput::FfnDown ? c.ffn_dim
                                          : which == LinearInput::AttentionOutput ? c.n_heads * c.head_dim
                                                                                  : c.dim);
                          EXPECT_TRUE(std::isfinite(in[rows * cols - 1]));
                          seen[which]++;
                        });
  EXPECT_EQ(seen.size(), 4u);
  for (const auto& [k, v] : seen) EXPECT_EQ(v, c.n_layers);
  for (size_t p = 0; p < tokens.size(); ++p) {
    std::vector<double> h(x.begin() + p * c.dim, x.begin() + (p + 1) * c.dim);
    auto logits = test::ref_linear(m->get("output.weight"), test::ref_rmsnorm(h, m->get("output_norm.weight"), c.norm_eps));
    for (int i = 0; i < c.n_vocab; ++i) ASSERT_NEAR(logits[i], want[p * c.n_vocab + i], 1e-4) << p << "," << i;
  }
}

// forward_layer on many sequences at once (chunked GEMMs, attention GEMMs per sequence and head) against one
// sequence at a time and against forward(): the same hidden states (1e-5 relative), the same captured rows in
// sequence order. 30 sequences of 150 tokens are 4500 rows: more than one chunk, and 150 queries are two full
// attention tiles and a partial one.
TEST(ModelLayers, BatchedForwardLayerEqualsOneSequenceAtATime) {
  for (int kv_heads : {2, 1, 4}) {
    SCOPED_TRACE("kv heads " + std::to_string(kv_heads));
    ModelConfig cfg = small_config();
    cfg.n_kv_heads = kv_heads;
    cfg.context_length = 256;
    auto m = synthetic_model(cfg);
    const ModelConfig& c = m->config;
    const int n_seq = 30, len = 150;
    const size_t count = static_cast<size_t>(len) * c.dim;
    std::vector<std::vector<int32_t>> toks;
    for (int s = 0; s < n_seq; ++s) toks.push_back(some_tokens(len, c.n_vocab, 100 + s));
    Model model(m);
    std::vector<float> batched(n_seq * count);
    for (int s = 0; s < n_seq; ++s) model.embed(toks[s], batched.data() + s * count);
    std::vector<float> single = batched;
    using Captured = std::map<LinearInput, std::vector<float>>;
    auto collect = [](Captured& into, int& calls) {
      return [&into, &calls](int, LinearInput which, const float* in, int64_t rows, int64_t cols) {
        into[which].insert(into[which].end(), in, in + rows * cols);
        ++calls;
      };
    };
    // Max |a - b| / max |b|.
    auto rel = [](const std::vector<float>& a, const std::vector<float>& b) {
      double num = 0, den = 0;
      for (size_t i = 0; i < b.size(); ++i) {
        num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
        den = std::max(den, std::abs(static_cast<double>(b[i])));
      }
      return num / den;
    };
    for (int l = 0; l < c.n_layers; ++l) {
      Captured cap_b, cap_s;
      int calls_b = 0, calls_s = 0;
      model.forward_layer(l, batched.data(), n_seq, len, collect(cap_b, calls_b));
      for (int s = 0; s < n_seq; ++s) model.forward_layer(l, single.data() + s * count, 1, len, collect(cap_s, calls_s));
      EXPECT_EQ(calls_b, 2 * 4) << "4500 rows run as two chunks";
      EXPECT_LT(rel(batched, single), 1e-5) << "layer " << l;
      ASSERT_EQ(cap_b.size(), 4u);
      for (const auto& [which, rows] : cap_s) {
        ASSERT_EQ(cap_b[which].size(), rows.size());
        EXPECT_LT(rel(cap_b[which], rows), 1e-5) << "site " << static_cast<int>(which);
      }
    }
    // The batched result, through the output norm and head, is forward()'s logits for each sequence.
    std::vector<float> logits(static_cast<size_t>(len) * c.n_vocab);
    for (int s : {0, 17, 29}) {
      model.forward(toks[s], 0, logits.data(), true);
      std::vector<float> got;
      for (int p = 0; p < len; ++p) {
        std::vector<double> h(batched.begin() + s * count + p * c.dim, batched.begin() + s * count + (p + 1) * c.dim);
        for (double v : test::ref_linear(m->get("output.weight"), test::ref_rmsnorm(h, m->get("output_norm.weight"), c.norm_eps)))
          got.push_back(static_cast<float>(v));
      }
      EXPECT_LT(rel(got, logits), 1e-5) << "sequence " << s;
    }
  }
}

// capture_site runs only as far as the input of its site: it captures the sites before it and that one (the same
// rows forward_layer captures), never a later one, and leaves x as it was.
TEST(ModelLayers, CaptureSiteStopsAtItsSite) {
  auto m = synthetic_model(small_config());
  const ModelConfig& c = m->config;
  const int n_seq = 5, len = 12;
  std::vector<float> x(static_cast<size_t>(n_seq) * len * c.dim);
  for (int s = 0; s < n_seq; ++s) Model(m).embed(some_tokens(len, c.n_vocab, 40 + s), x.data() + s * len * c.dim);
  Model model(m);
  std::map<LinearInput, std::vector<float>> full;
  std::vector<float> y = x;
  model.forward_layer(1, y.data(), n_seq, len, [&](int, LinearInput which, const float* in, int64_t rows, int64_t cols) {
    full[which].insert(full[which].end(), in, in + rows * cols);
  });
  const LinearInput sites[] = {LinearInput::Attention, LinearInput::AttentionOutput, LinearInput::Ffn,
                               LinearInput::FfnDown};
  for (LinearInput site : sites) {
    SCOPED_TRACE("site " + std::to_string(static_cast<int>(site)));
    std::vector<LinearInput> order;
    std::map<LinearInput, std::vector<float>> got;
    const std::vector<float> before = x;
    model.capture_site(1, x.data(), n_seq, len, site, [&](int layer, LinearInput which, const float* in, int64_t rows, int64_t cols) {
      EXPECT_EQ(layer, 1);
      EXPECT_EQ(rows, static_cast<int64_t>(n_seq) * len);
      order.push_back(which);
      got[which].assign(in, in + rows * cols);
    });
    EXPECT_EQ(x, before);
    ASSERT_EQ(order.size(), static_cast<size_t>(site) + 1);
    for (size_t k = 0; k < order.size(); ++k) EXPECT_EQ(order[k], sites[k]);
    for (const auto& [which, rows] : got) EXPECT_EQ(rows, full[which]);
  }
}

// BlockPass: each run_to continues from where the sequences stand, with the weights of the linears passed as they
// were then and the later ones as they are now; the rows it captures and the block's output equal those of a
// model that recomputes the block from its input with the same weights (capture_site, forward_layer), bit for bit.
// Sequences go in two groups that stand at different sites at times; a site already passed is an error.
TEST(ModelLayers, BlockPassContinuesFromItsLastSite) {
  auto m = synthetic_model(small_config());
  const ModelConfig& c = m->config;
  const int n_seq = 5, len = 12, l = 1;
  const size_t count = static_cast<size_t>(len) * c.dim;
  std::vector<float> x(static_cast<size_t>(n_seq) * count);
  for (int s = 0; s < n_seq; ++s) Model(m).embed(some_tokens(len, c.n_vocab, 60 + s), x.data() + s * count);
  Model staged(m), fresh(m);
  std::vector<std::vector<float>> kept;  // the replacement weights' values
  auto perturb = [&](const char* role) {  // the same new values into both models
    TensorInfo t = m->get("blk.1." + std::string(role) + ".weight");
    const float* v = reinterpret_cast<const float*>(t.data);
    std::vector<float>& w = kept.emplace_back(v, v + t.numel());
    for (size_t i = 0; i < w.size(); ++i) w[i] = 0.8f * w[i] + 0.01f * static_cast<float>(i % 7);
    t.data = reinterpret_cast<const std::byte*>(w.data());
    staged.replace_weight(t);
    fresh.replace_weight(t);
  };
  const std::pair<int, int> groups[] = {{0, 2}, {2, 3}};
  auto collect = [](std::map<LinearInput, std::vector<float>>& into) {
    return [&into](int, LinearInput which, const float* in, int64_t rows, int64_t cols) {
      into[which].insert(into[which].end(), in, in + rows * cols);
    };
  };
  BlockPass pass(staged, l, x.data(), n_seq, len);
  // group 0 reaches attn_output's input while group 1 is still at the block's start
  std::map<LinearInput, std::vector<float>> got, want;
  pass.run_to(LinearInput::AttentionOutput, 0, 2, collect(got));
  fresh.capture_site(l, x.data(), 2, len, LinearInput::AttentionOutput, collect(want));
  EXPECT_EQ(got, want);
  perturb("attn_q");
  perturb("attn_v");
  perturb("attn_output");
  // group 0 continues (its q/k/v ran with the old weights), group 1 starts with the new ones
  for (LinearInput site : {LinearInput::Ffn, LinearInput::FfnDown}) {
    SCOPED_TRACE("site " + std::to_string(static_cast<int>(site)));
    got.clear();
    for (auto [s0, n] : groups) {
      std::map<LinearInput, std::vector<float>> g, w;
      pass.run_to(site, s0, n, collect(g));
      if (s0 == 0) {  // the reference for group 0: the old q/k/v weights are gone; compare the sites after
        EXPECT_EQ(g.count(LinearInput::Attention), 0u);
        EXPECT_EQ(g.count(LinearInput::AttentionOutput), 0u);
      } else {  // group 1 captures only the sites it had not reached
        fresh.capture_site(l, x.data() + s0 * count, n, len, site, collect(w));
        EXPECT_EQ(g.size(), site == LinearInput::Ffn ? 3u : 1u);
        for (const auto& [which, rows] : g) EXPECT_EQ(rows, w[which]);
      }
      for (auto& [which, rows] : g) got[which].insert(got[which].end(), rows.begin(), rows.end());
    }
    perturb(site == LinearInput::Ffn ? "ffn_up" : "ffn_down");
  }
  std::vector<float> out(x.size());
  pass.finish(out.data());
  // The block outputs: finish() ran all five sequences as one chunk after the groups ran apart, and BLAS may round a
  // row differently in products of another height, so these compare to float rounding (the weights changed by 20%).
  auto near = [&](const std::vector<float>& want, size_t from, size_t to) {
    float worst = 0, scale = 0;
    for (size_t i = from; i < to; ++i) {
      worst = std::max(worst, std::fabs(want[i] - out[i]));
      scale = std::max(scale, std::fabs(want[i]));
    }
    return worst <= 1e-5f * scale;
  };
  std::vector<float> ref = x;
  fresh.forward_layer(l, ref.data(), n_seq, len, {});
  EXPECT_TRUE(near(ref, 2 * count, x.size())) << "group 1's block output";
  EXPECT_THROW(pass.run_to(LinearInput::FfnDown, {}), Error);
  EXPECT_THROW(pass.finish(out.data()), Error);
  // Group 0: its q/k/v ran with the original weights, attn_output and the FFN with the new ones -- a model that has
  // exactly those weights gives the same output.
  Model mixed(m);
  ASSERT_EQ(kept.size(), 5u);
  for (size_t k = 2; k < kept.size(); ++k) {
    const char* roles[] = {"attn_output", "ffn_up", "ffn_down"};
    TensorInfo t = m->get("blk.1." + std::string(roles[k - 2]) + ".weight");
    t.data = reinterpret_cast<const std::byte*>(kept[k].data());
    mixed.replace_weight(t);
  }
  std::vector<float> ref0 = x;
  mixed.forward_layer(l, ref0.data(), n_seq, len, {});
  EXPECT_TRUE(near(ref0, 0, 2 * count)) << "group 0's block output";
  EXPECT_FALSE(near(ref, 0, 2 * count)) << "group 0 ran q/k/v with the old weights";
  BlockPass other(staged, l, x.data(), n_seq, len);
  other.run_to(LinearInput::Ffn, {});
  EXPECT_THROW(other.run_to(LinearInput::Attention, 0, 1, {}), Error);
  EXPECT_THROW(other.run_to(LinearInput::FfnDown, 4, 2, {}), Error);  // past the last sequence
}

TEST(ModelLayers, ReplaceWeight) {
  auto m = synthetic_model(small_config());
  const auto tokens = some_tokens(6, 97);
  Model model(m);
  std::vector<float> a(tokens.size() * 97), b(a.size()), z(a.size());
  model.forward(tokens, 0, a.data(), true);
  TensorInfo copy = m->get("blk.1.ffn_down.weight");  // same bytes: logits must not move
  model.replace_weight(copy);
  model.forward(tokens, 0, b.data(), true);
  EXPECT_EQ(a, b);
  std::vector<float> zeros(static_cast<size_t>(copy.numel()), 0.0f);
  copy.data = reinterpret_cast<const std::byte*>(zeros.data());
  copy.dtype = DType::F32;
  copy.nbytes = zeros.size() * 4;
  model.replace_weight(copy);
  model.forward(tokens, 0, z.data(), true);
  EXPECT_NE(a, z);
  TensorInfo wrong = m->get("blk.0.attn_q.weight");
  wrong.name = "blk.0.attn_k.weight";  // 64 rows where attn_k has 32
  EXPECT_THROW(model.replace_weight(wrong), Error);
  wrong.name = "blk.9.attn_q.weight";
  EXPECT_THROW(model.replace_weight(wrong), Error);
}

}  // namespace
}  // namespace lowbit
