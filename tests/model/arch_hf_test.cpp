// Gemma 2, Gemma 3 and Phi-3 from their Hugging Face form, checked against the published modeling code's equations
// (transformers' modeling_gemma2.py / modeling_gemma3.py), written out below as a naive double-precision forward
// over the checkpoint's own tensor names and config keys -- nothing of lowbit's loaders, name tables or graph:
//   Gemma{2,3}RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w)  (the checkpoint stores w)
//   embeddings * hidden_size ** 0.5; scores * query_pre_attn_scalar ** -0.5; Gemma 2: tanh soft-caps on the scores
//   (attn_logit_softcapping) and the logits (final_logit_softcapping); sliding layers mask keys with q - k >= window
//   (Gemma 2: even layers; Gemma 3: (layer + 1) % sliding_window_pattern != 0); Gemma 3: q_norm / k_norm per head,
//   local layers' rotary base rope_local_base_freq, unscaled, global layers' rope_theta with rope_scaling;
//   input_layernorm -> attention -> post_attention_layernorm -> + residual -> pre_feedforward_layernorm ->
//   down(gelu_tanh(gate) * up) -> post_feedforward_layernorm -> + residual; rotate_half RoPE.
// Phi-3 (modeling_phi3.py): qkv_proj rows q | k | v, gate_up_proj rows gate | up (up * silu(gate)), LongRoPE
// inv_freq = 1 / (ext_factors * base^(2i/d)) with cos and sin times the attention factor.
// lowbit reading that directory must give the reference's logits, and its GGUF export the same logits again (1e-5).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>

#include "io/hf_testing.h"
#include "lowbit/error.h"
#include "lowbit/model.h"
#include "quant/quantize_model.h"
#include "quant/rotate/rotate.h"

namespace lowbit {
namespace {

using testing::json;
using testing::StTensor;

// A random HF checkpoint in memory: tensors by their HF names (row-major, torch's {out, in}), written as one
// safetensors file, and y = W x over them for the references below.
struct HfCheckpoint {
  std::map<std::string, std::vector<float>> w;
  std::map<std::string, std::vector<int64_t>> shape;
  std::mt19937 rng;

  void add(const std::string& name, std::vector<int64_t> s, float std, float mean = 0) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    std::vector<float>& v = w[name];
    v.resize(static_cast<size_t>(n));
    for (float& x : v) x = mean + std * nd(rng);
    shape[name] = s;
  }
  std::vector<StTensor> tensors(const std::string& prefix = "") const {
    std::vector<StTensor> ts;
    for (const auto& [name, v] : w) {
      StTensor t{prefix + name, "F32", shape.at(name), {}};
      t.bytes.resize(v.size() * 4);
      std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
      ts.push_back(std::move(t));
    }
    return ts;
  }
  std::vector<double> linear_of(const std::string& name, const std::vector<double>& x) const {
    const auto& W = w.at(name);
    const int64_t rows = shape.at(name)[0], cols = shape.at(name)[1];
    std::vector<double> y(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) s += static_cast<double>(W[r * cols + c]) * x[c];
      y[r] = s;
    }
    return y;
  }
};

struct HfGemma : HfCheckpoint {
  bool gemma3 = false;
  int dim = 64, layers = 2, heads = 4, kv = 2, head_dim = 32, ffn = 96, vocab = 50, window = 6, pattern = 3;
  double eps = 1e-6, attn_cap = 3.0, final_cap = 2.0, theta = 10000, local_theta = 100, linear = 4, scalar = 24;

  json config() const {
    json c = {{"hidden_size", dim}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
              {"num_key_value_heads", kv}, {"head_dim", head_dim}, {"intermediate_size", ffn},
              {"vocab_size", vocab}, {"rms_norm_eps", eps}, {"rope_theta", theta},
              {"max_position_embeddings", 256}, {"sliding_window", window}, {"query_pre_attn_scalar", scalar},
              {"hidden_activation", "gelu_pytorch_tanh"}, {"tie_word_embeddings", true}};
    if (gemma3) {
      c["model_type"] = "gemma3_text";
      c["architectures"] = {"Gemma3ForCausalLM"};
      c["sliding_window_pattern"] = pattern;
      c["rope_local_base_freq"] = local_theta;
      c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", linear}};
      c["final_logit_softcapping"] = nullptr;
      c["attn_logit_softcapping"] = nullptr;
    } else {
      c["model_type"] = "gemma2";
      c["architectures"] = {"Gemma2ForCausalLM"};
      c["attn_logit_softcapping"] = attn_cap;
      c["final_logit_softcapping"] = final_cap;
    }
    return c;
  }

  void build(uint32_t seed) {
    rng.seed(seed);
    add("model.embed_tokens.weight", {vocab, dim}, 0.3f);
    const int64_t qd = heads * head_dim, kvd = kv * head_dim;
    for (int l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      // Norm weights around 0: the checkpoint's w, used as (1 + w).
      for (const char* n : {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                            "post_feedforward_layernorm"})
        add(p + n + ".weight", {dim}, 0.3f);
      add(p + "self_attn.q_proj.weight", {qd, dim}, 0.4f);
      add(p + "self_attn.k_proj.weight", {kvd, dim}, 0.4f);
      add(p + "self_attn.v_proj.weight", {kvd, dim}, 0.2f);
      add(p + "self_attn.o_proj.weight", {dim, qd}, 0.2f);
      if (gemma3) {
        add(p + "self_attn.q_norm.weight", {head_dim}, 0.3f);
        add(p + "self_attn.k_norm.weight", {head_dim}, 0.3f);
      }
      add(p + "mlp.gate_proj.weight", {ffn, dim}, 0.2f);
      add(p + "mlp.up_proj.weight", {ffn, dim}, 0.2f);
      add(p + "mlp.down_proj.weight", {dim, ffn}, 0.2f);
    }
    add("model.norm.weight", {dim}, 0.3f);
  }

  // Gemma3ForConditionalGeneration's layout: the text model under language_model.model., its config under
  // text_config, a vision tower beside it.
  void write(const std::string& dir, bool multimodal = false) const {
    std::vector<StTensor> ts = tensors(multimodal ? "language_model." : "");
    json c = config();
    if (multimodal) {
      ts.push_back({"vision_tower.vision_model.post_layernorm.weight", "F32", {8}, std::vector<uint8_t>(32, 0)});
      ts.push_back({"multi_modal_projector.mm_soft_emb_norm.weight", "F32", {8}, std::vector<uint8_t>(32, 0)});
      c = {{"model_type", "gemma3"}, {"architectures", {"Gemma3ForConditionalGeneration"}}, {"text_config", c},
           {"vision_config", {{"hidden_size", 8}}}};
      c["text_config"].erase("architectures");
    }
    testing::write_file(dir + "/config.json", c.dump(2));
    testing::write_file(dir + "/model.safetensors", testing::make_safetensors(ts));
  }

  // --- the reference forward (double), every position from scratch ---
  std::vector<double> gemma_norm(const std::vector<double>& x, const std::string& name, size_t off = 0,
                                 size_t n = 0) const {
    if (n == 0) n = x.size();
    const auto& g = w.at(name);
    double ss = 0;
    for (size_t i = 0; i < n; ++i) ss += x[off + i] * x[off + i];
    const double inv = 1.0 / std::sqrt(ss / n + eps);
    std::vector<double> y = x;
    for (size_t i = 0; i < n; ++i) y[off + i] = x[off + i] * inv * (1.0 + g[i]);
    return y;
  }
  bool sliding(int l) const { return gemma3 ? (l + 1) % pattern != 0 : l % 2 == 0; }
  void rotate_half(std::vector<double>& v, size_t off, int pos, double base, double factor) const {
    const int half = head_dim / 2;
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(base, -2.0 * i / head_dim) / factor;
      const double a = v[off + i], b = v[off + i + half], cs = std::cos(pos * inv_freq), sn = std::sin(pos * inv_freq);
      v[off + i] = a * cs - b * sn;
      v[off + i + half] = b * cs + a * sn;
    }
  }

  std::vector<std::vector<double>> logits(const std::vector<int32_t>& tokens) const {
    const size_t n = tokens.size();
    std::vector<std::vector<double>> h(n, std::vector<double>(static_cast<size_t>(dim)));
    for (size_t t = 0; t < n; ++t)
      for (int i = 0; i < dim; ++i) h[t][i] = w.at("model.embed_tokens.weight")[tokens[t] * dim + i] * std::sqrt(double(dim));
    const int group = heads / kv;
    for (int l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      const double base = gemma3 && sliding(l) ? local_theta : theta;
      const double factor = gemma3 && !sliding(l) ? linear : 1.0;
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (size_t t = 0; t < n; ++t) {
        const auto x = gemma_norm(h[t], p + "input_layernorm.weight");
        q[t] = linear_of(p + "self_attn.q_proj.weight", x);
        k[t] = linear_of(p + "self_attn.k_proj.weight", x);
        v[t] = linear_of(p + "self_attn.v_proj.weight", x);
        for (int hh = 0; hh < heads; ++hh) {
          if (gemma3) q[t] = gemma_norm(q[t], p + "self_attn.q_norm.weight", hh * head_dim, head_dim);
          rotate_half(q[t], hh * head_dim, static_cast<int>(t), base, factor);
        }
        for (int hh = 0; hh < kv; ++hh) {
          if (gemma3) k[t] = gemma_norm(k[t], p + "self_attn.k_norm.weight", hh * head_dim, head_dim);
          rotate_half(k[t], hh * head_dim, static_cast<int>(t), base, factor);
        }
      }
      for (size_t t = 0; t < n; ++t) {
        std::vector<double> att(static_cast<size_t>(heads * head_dim), 0.0);
        for (int hh = 0; hh < heads; ++hh) {
          const int kh = hh / group;
          std::vector<double> s(t + 1, -INFINITY);
          double mx = -INFINITY;
          for (size_t j = 0; j <= t; ++j) {
            if (sliding(l) && static_cast<int>(t - j) >= window) continue;
            double d = 0;
            for (int i = 0; i < head_dim; ++i) d += q[t][hh * head_dim + i] * k[j][kh * head_dim + i];
            d *= std::pow(scalar, -0.5);
            if (!gemma3) d = std::tanh(d / attn_cap) * attn_cap;
            s[j] = d;
            mx = std::max(mx, d);
          }
          double z = 0;
          for (double& e : s) z += (e = std::exp(e - mx));
          for (size_t j = 0; j <= t; ++j)
            for (int i = 0; i < head_dim; ++i) att[hh * head_dim + i] += s[j] / z * v[j][kh * head_dim + i];
        }
        const auto o = gemma_norm(linear_of(p + "self_attn.o_proj.weight", att), p + "post_attention_layernorm.weight");
        for (int i = 0; i < dim; ++i) h[t][i] += o[i];
      }
      for (size_t t = 0; t < n; ++t) {
        const auto x = gemma_norm(h[t], p + "pre_feedforward_layernorm.weight");
        auto g = linear_of(p + "mlp.gate_proj.weight", x);
        const auto u = linear_of(p + "mlp.up_proj.weight", x);
        for (size_t i = 0; i < g.size(); ++i)
          g[i] = 0.5 * g[i] * (1 + std::tanh(std::sqrt(2 / M_PI) * (g[i] + 0.044715 * std::pow(g[i], 3)))) * u[i];
        const auto f = gemma_norm(linear_of(p + "mlp.down_proj.weight", g), p + "post_feedforward_layernorm.weight");
        for (int i = 0; i < dim; ++i) h[t][i] += f[i];
      }
    }
    std::vector<std::vector<double>> out(n);
    for (size_t t = 0; t < n; ++t) {
      out[t] = linear_of("model.embed_tokens.weight", gemma_norm(h[t], "model.norm.weight"));  // tied head
      if (!gemma3)
        for (double& x : out[t]) x = std::tanh(x / final_cap) * final_cap;
    }
    return out;
  }
};

std::vector<float> lowbit_logits(const std::string& path, const std::vector<int32_t>& tokens, int vocab) {
  Model m(load_model(path), 64);
  std::vector<float> out(tokens.size() * static_cast<size_t>(vocab));
  m.forward(tokens, 0, out.data(), /*all_logits=*/true);
  return out;
}

class GemmaHf : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("lowbit_gemma_hf_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_P(GemmaHf, LogitsFollowTheModelingCodeAndSurviveGgufExport) {
  HfGemma g;
  g.gemma3 = GetParam();
  g.layers = g.gemma3 ? 3 : 2;  // Gemma 3: two local layers, then a global one
  g.build(g.gemma3 ? 3 : 2);
  const std::string hf = (dir_ / "hf").string();
  std::filesystem::create_directories(hf);
  g.write(hf);
  std::vector<int32_t> tokens;
  for (int t = 0; t < 20; ++t) tokens.push_back((t * 7 + 3) % g.vocab);  // 20 positions, window 6

  auto file = load_model(hf);
  const ModelConfig& c = file->config;
  EXPECT_EQ(c.arch, g.gemma3 ? "gemma3" : "gemma2");
  EXPECT_TRUE(c.post_norms && c.embed_scale && c.gelu && c.tied_embeddings);
  EXPECT_EQ(c.qk_norm, g.gemma3);
  EXPECT_EQ(c.sliding_window, g.window);
  EXPECT_FLOAT_EQ(c.attn_scalar, static_cast<float>(g.scalar));

  const auto ref = g.logits(tokens);
  const auto got = lowbit_logits(hf, tokens, g.vocab);
  double max_ref = 0, max_err = 0;
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int i = 0; i < g.vocab; ++i) {
      max_ref = std::max(max_ref, std::fabs(ref[t][i]));
      max_err = std::max(max_err, std::fabs(ref[t][i] - got[t * g.vocab + i]));
    }
  std::printf("%s HF: max |logit| %.3f, max error against the modeling-code reference %.3g\n",
              g.gemma3 ? "gemma3" : "gemma2", max_ref, max_err);
  EXPECT_LT(max_err, 2e-5 * max_ref);

  // Each convention matters at this size: the reference with one of them dropped is far off.
  HfGemma no_offset = g;
  for (auto& [name, v] : no_offset.w)
    if (name.find("norm") != std::string::npos)
      for (float& x : v) x -= 1.0f;  // (1 + (w - 1)) = w: what a loader that forgot the 1 would compute
  const auto wrong = no_offset.logits(tokens);
  double wrong_err = 0;
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int i = 0; i < g.vocab; ++i) wrong_err = std::max(wrong_err, std::fabs(wrong[t][i] - got[t * g.vocab + i]));
  EXPECT_GT(wrong_err, 1e3 * max_err) << "the (1 + w) convention is not exercised";

  // GGUF has no key for query_pre_attn_scalar and llama.cpp derives it from the shape (head_dim here, 32): a
  // checkpoint with another value cannot be exported faithfully, and says so.
  const std::string gguf = (dir_ / "out.gguf").string();
  quant::QuantizeModelOptions qo;
  qo.keep = {"weight"};  // every tensor kept, in f32: the unquantized GGUF export
  qo.keep_dtype = DType::F32;
  std::string refusal;
  try {
    quant::quantize_model(hf, gguf, qo);
  } catch (const Error& e) {
    refusal = e.what();
  }
  EXPECT_NE(refusal.find("query_pre_attn_scalar"), std::string::npos) << refusal;
  EXPECT_FALSE(std::filesystem::exists(gguf));

  // With llama.cpp's value the GGUF export (norms holding 1 + w) gives the same logits.
  HfGemma g32 = g;
  g32.scalar = g.head_dim;
  const std::string hf32 = (dir_ / "hf32").string();
  std::filesystem::create_directories(hf32);
  g32.write(hf32);
  const auto got32 = lowbit_logits(hf32, tokens, g.vocab);
  quant::quantize_model(hf32, gguf, qo);
  const auto from_gguf = lowbit_logits(gguf, tokens, g.vocab);
  double gguf_err = 0;
  for (size_t i = 0; i < got32.size(); ++i) gguf_err = std::max(gguf_err, std::fabs(double(from_gguf[i]) - got32[i]));
  std::printf("HF against GGUF form: max difference %.3g\n", gguf_err);
  EXPECT_LE(gguf_err, 1e-5 * max_ref) << "HF and GGUF forms differ";
  auto gf = load_model(gguf);
  EXPECT_EQ(gf->config.arch, c.arch);
  EXPECT_EQ(gf->config.sliding_window, c.sliding_window);
  EXPECT_EQ(gf->config.swa_period, c.swa_period);
  EXPECT_FLOAT_EQ(gf->config.final_softcap, c.final_softcap);

  if (g.gemma3) {
    // The multimodal checkpoint: the same text model under language_model.model., config under text_config.
    const std::string mm = (dir_ / "mm").string();
    std::filesystem::create_directories(mm);
    g.write(mm, /*multimodal=*/true);
    EXPECT_EQ(lowbit_logits(mm, tokens, g.vocab), got);
  }
}

INSTANTIATE_TEST_SUITE_P(Arch, GemmaHf, ::testing::Bool(),
                         [](const auto& info) { return std::string(info.param ? "Gemma3" : "Gemma2"); });

// Phi-3: dim 64, 2 layers, 4 heads, 2 kv heads (GQA inside the fused qkv), ffn 96, LongRoPE from an original
// context of 16 up to 64.
struct HfPhi3 : HfCheckpoint {
  int dim = 64, layers = 2, heads = 4, kv = 2, head_dim = 16, ffn = 96, vocab = 50, original = 16, max_pos = 64;
  double eps = 1e-5, theta = 10000;
  std::vector<float> long_f, short_f;

  void build(uint32_t seed) {
    rng.seed(seed);
    add("model.embed_tokens.weight", {vocab, dim}, 1.0f);
    for (int l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      add(p + "input_layernorm.weight", {dim}, 0.2f, 1.0f);
      add(p + "post_attention_layernorm.weight", {dim}, 0.2f, 1.0f);
      add(p + "self_attn.qkv_proj.weight", {(heads + 2 * kv) * head_dim, dim}, 0.4f);
      add(p + "self_attn.o_proj.weight", {dim, heads * head_dim}, 0.2f);
      add(p + "mlp.gate_up_proj.weight", {2 * ffn, dim}, 0.2f);
      add(p + "mlp.down_proj.weight", {dim, ffn}, 0.2f);
    }
    add("model.norm.weight", {dim}, 0.2f, 1.0f);
    add("lm_head.weight", {vocab, dim}, 0.3f);
    for (int i = 0; i < head_dim / 2; ++i) {
      long_f.push_back(1.0f + 0.5f * i);
      short_f.push_back(1.0f + 0.05f * i);
    }
  }
  json config() const {
    return {{"model_type", "phi3"}, {"architectures", {"Phi3ForCausalLM"}}, {"hidden_size", dim},
            {"num_hidden_layers", layers}, {"num_attention_heads", heads}, {"num_key_value_heads", kv},
            {"intermediate_size", ffn}, {"vocab_size", vocab}, {"rms_norm_eps", eps}, {"rope_theta", theta},
            {"max_position_embeddings", max_pos}, {"original_max_position_embeddings", original},
            {"rope_scaling", {{"type", "longrope"}, {"long_factor", long_f}, {"short_factor", short_f}}},
            {"sliding_window", 2047}, {"tie_word_embeddings", false}, {"hidden_act", "silu"}};
  }
  void write(const std::string& dir) const {
    testing::write_file(dir + "/config.json", config().dump(2));
    testing::write_file(dir + "/model.safetensors", testing::make_safetensors(tensors()));
  }

  std::vector<double> norm(const std::vector<double>& x, const std::string& name) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w.at(name)[i];
    return y;
  }
  // Phi3LongRoPEScaledRotaryEmbedding with the factor list given (HF picks it by the current length).
  void rope(double* v, int pos, const std::vector<float>& ext) const {
    const double scale = static_cast<double>(max_pos) / original;
    const double af = std::sqrt(1 + std::log(scale) / std::log(static_cast<double>(original)));
    const int half = head_dim / 2;
    for (int i = 0; i < half; ++i) {
      const double inv_freq = 1.0 / (ext[i] * std::pow(theta, 2.0 * i / head_dim));
      const double cs = std::cos(pos * inv_freq) * af, sn = std::sin(pos * inv_freq) * af;
      const double a = v[i], b = v[i + half];
      v[i] = a * cs - b * sn;
      v[i + half] = b * cs + a * sn;
    }
  }
  std::vector<std::vector<double>> logits(const std::vector<int32_t>& tokens, const std::vector<float>& ext) const {
    const size_t n = tokens.size();
    const int qd = heads * head_dim, kvd = kv * head_dim, group = heads / kv;
    std::vector<std::vector<double>> h(n, std::vector<double>(static_cast<size_t>(dim)));
    for (size_t t = 0; t < n; ++t)
      for (int i = 0; i < dim; ++i) h[t][i] = w.at("model.embed_tokens.weight")[tokens[t] * dim + i];
    for (int l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      std::vector<std::vector<double>> qkv(n);
      for (size_t t = 0; t < n; ++t) {
        qkv[t] = linear_of(p + "self_attn.qkv_proj.weight", norm(h[t], p + "input_layernorm.weight"));
        for (int hh = 0; hh < heads; ++hh) rope(qkv[t].data() + hh * head_dim, static_cast<int>(t), ext);
        for (int hh = 0; hh < kv; ++hh) rope(qkv[t].data() + qd + hh * head_dim, static_cast<int>(t), ext);
      }
      for (size_t t = 0; t < n; ++t) {
        std::vector<double> att(static_cast<size_t>(qd), 0.0);
        for (int hh = 0; hh < heads; ++hh) {
          const int kh = hh / group;
          std::vector<double> s(t + 1);
          double mx = -INFINITY, z = 0;
          for (size_t j = 0; j <= t; ++j) {
            double d = 0;
            for (int i = 0; i < head_dim; ++i) d += qkv[t][hh * head_dim + i] * qkv[j][qd + kh * head_dim + i];
            s[j] = d / std::sqrt(double(head_dim));
            mx = std::max(mx, s[j]);
          }
          for (double& e : s) z += (e = std::exp(e - mx));
          for (size_t j = 0; j <= t; ++j)
            for (int i = 0; i < head_dim; ++i) att[hh * head_dim + i] += s[j] / z * qkv[j][qd + kvd + kh * head_dim + i];
        }
        const auto o = linear_of(p + "self_attn.o_proj.weight", att);
        for (int i = 0; i < dim; ++i) h[t][i] += o[i];
      }
      for (size_t t = 0; t < n; ++t) {
        const auto gu = linear_of(p + "mlp.gate_up_proj.weight", norm(h[t], p + "post_attention_layernorm.weight"));
        std::vector<double> a(static_cast<size_t>(ffn));
        for (int i = 0; i < ffn; ++i) a[i] = gu[ffn + i] * (gu[i] / (1 + std::exp(-gu[i])));  // up * silu(gate)
        const auto f = linear_of(p + "mlp.down_proj.weight", a);
        for (int i = 0; i < dim; ++i) h[t][i] += f[i];
      }
    }
    std::vector<std::vector<double>> out(n);
    for (size_t t = 0; t < n; ++t) out[t] = linear_of("lm_head.weight", norm(h[t], "model.norm.weight"));
    return out;
  }
};

double max_abs_diff(const std::vector<std::vector<double>>& ref, const std::vector<float>& got, int vocab,
                    double* max_ref = nullptr) {
  double err = 0, mr = 0;
  for (size_t t = 0; t < ref.size(); ++t)
    for (int i = 0; i < vocab; ++i) {
      mr = std::max(mr, std::fabs(ref[t][i]));
      err = std::max(err, std::fabs(ref[t][i] - got[t * vocab + i]));
    }
  if (max_ref) *max_ref = mr;
  return err;
}

std::vector<float> lowbit_logits_ctx(const std::string& path, const std::vector<int32_t>& tokens, int vocab, int ctx) {
  Model m(load_model(path), ctx);
  std::vector<float> out(tokens.size() * static_cast<size_t>(vocab));
  m.forward(tokens, 0, out.data(), /*all_logits=*/true);
  return out;
}

// HF picks LongRoPE's factors by the current length (long past the original context), llama.cpp and lowbit by the
// context the model is created with. The two agree where both pick the same set: a context of 64 (> 16) against
// HF's long factors, and 16 tokens in a context of 16 against its short ones.
TEST(Phi3Hf, LogitsFollowTheModelingCodeAndSurviveGgufExport) {
  HfPhi3 g;
  g.build(7);
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit_phi3_hf_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir / "hf");
  const std::string hf = (dir / "hf").string();
  g.write(hf);
  auto file = load_model(hf);
  EXPECT_EQ(file->config.arch, "phi3");
  EXPECT_TRUE(file->config.fused_qkv && file->config.fused_gate_up);
  EXPECT_EQ(file->config.rope_scaling.type, "longrope");
  std::vector<int32_t> tokens;
  for (int t = 0; t < 20; ++t) tokens.push_back((t * 11 + 5) % g.vocab);

  double max_ref = 0;
  const auto got_long = lowbit_logits_ctx(hf, tokens, g.vocab, 64);
  const double err_long = max_abs_diff(g.logits(tokens, g.long_f), got_long, g.vocab, &max_ref);
  const std::vector<int32_t> first16(tokens.begin(), tokens.begin() + 16);
  const auto got_short = lowbit_logits_ctx(hf, first16, g.vocab, 16);
  const double err_short = max_abs_diff(g.logits(first16, g.short_f), got_short, g.vocab);
  std::printf("phi3 HF: max |logit| %.3f, max error against the modeling-code reference %.3g (long), %.3g (short)\n",
              max_ref, err_long, err_short);
  EXPECT_LT(err_long, 2e-5 * max_ref);
  EXPECT_LT(err_short, 2e-5 * max_ref);
  EXPECT_GT(max_abs_diff(g.logits(tokens, g.short_f), got_long, g.vocab), 1e3 * err_long) << "factors not exercised";

  const std::string gguf = (dir / "out.gguf").string();
  quant::QuantizeModelOptions qo;
  qo.keep = {"weight"};
  qo.keep_dtype = DType::F32;
  quant::quantize_model(hf, gguf, qo);
  const auto from_gguf = lowbit_logits_ctx(gguf, tokens, g.vocab, 64);
  double gguf_err = 0;
  for (size_t i = 0; i < got_long.size(); ++i) gguf_err = std::max(gguf_err, std::fabs(double(from_gguf[i]) - got_long[i]));
  EXPECT_LE(gguf_err, 1e-5 * max_ref) << "HF and GGUF forms differ";
  auto gf = load_model(gguf);
  EXPECT_EQ(gf->config.rope_scaling.type, "longrope");
  EXPECT_EQ(gf->config.rope_scaling.original_context, g.original);
  EXPECT_NE(gf->find("blk.1.attn_qkv.weight"), nullptr);
  EXPECT_EQ(gf->find("blk.1.ffn_gate.weight"), nullptr);
  std::filesystem::remove_all(dir);
}

std::string load_error(const std::string& dir) {
  try {
    load_model(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Configs llama.cpp cannot run as written: one line naming config.json and the key.
TEST(ArchHfErrors, LayerTypesAndLongRopeFactors) {
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit_arch_err_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    HfGemma g;
    g.gemma3 = true;
    g.layers = 3;
    g.build(1);
    g.write(dir.string());
    json c = g.config();
    c["layer_types"] = {"sliding_attention", "full_attention", "full_attention"};  // period 2, then a global layer
    testing::write_file((dir / "config.json").string(), c.dump());
    const std::string msg = load_error(dir.string());
    EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layer_types[2]"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    c["layer_types"] = {"sliding_attention", "sliding_attention", "full_attention"};  // the pattern of 3: loads
    testing::write_file((dir / "config.json").string(), c.dump());
    EXPECT_EQ(load_error(dir.string()), "");
  }
  {
    HfPhi3 p;
    p.build(2);
    p.long_f.pop_back();
    p.write(dir.string());
    const std::string msg = load_error(dir.string());
    EXPECT_NE(msg.find("rope_scaling.long_factor"), std::string::npos) << msg;
    EXPECT_NE(msg.find("8 numbers"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  std::filesystem::remove_all(dir);
}

// A rotation of the residual stream cannot be folded through Gemma's post-norms: one clear error.
TEST(GemmaTransforms, ResidualRotationIsRefused) {
  HfGemma g;
  g.build(5);
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit_gemma_rot_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  g.write(dir.string());
  auto file = load_model(dir.string());
  std::string msg;
  try {
    quant::rotate_model(*file, quant::RotateOptions{});
  } catch (const Error& e) {
    msg = e.what();
  }
  std::filesystem::remove_all(dir);
  EXPECT_NE(msg.find("post-norms"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

}  // namespace
}  // namespace lowbit
