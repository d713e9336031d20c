// The Llama-family graph: embeddings -> n_layers x (RMSNorm, GQA attention with RoPE, RMSNorm, SwiGLU FFN)
// -> RMSNorm -> output head. One implementation for Llama 1/2/3, Mistral, Qwen2 (q/k/v bias), SmolLM, TinyLlama.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/threads.h"
#include "ops/ops.h"

namespace lowbit {

namespace {

// Small vectors (norms, biases, rope factors) are widened to f32 once.
std::vector<float> to_f32(const TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const auto* p = reinterpret_cast<const uint16_t*>(t.data);
  switch (t.dtype) {
    case DType::F32: std::memcpy(out.data(), t.data, out.size() * 4); break;
    case DType::F16: ops::f16_to_f32(p, out.data(), t.numel()); break;
    case DType::BF16: ops::bf16_to_f32(p, out.data(), t.numel()); break;
    default:
      fail(t.file, t.name, "dtype " + std::string(dtype_name(t.dtype)) + " is not supported for vectors");
  }
  return out;
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelConfig& c, const ModelFile& f) {
  const int half = c.rope_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i)
    inv[i] = static_cast<float>(1.0 / std::pow(static_cast<double>(c.rope_theta), 2.0 * i / c.rope_dim));
  const RopeScaling& s = c.rope_scaling;
  if (s.type == "linear") {
    for (float& v : inv) v /= s.factor;
  } else if (s.type == "llama3") {
    const double lo_wavelen = s.original_context / s.low_freq_factor;
    const double hi_wavelen = s.original_context / s.high_freq_factor;
    for (float& v : inv) {
      const double wavelen = 2.0 * M_PI / v;
      if (wavelen < hi_wavelen) continue;
      if (wavelen > lo_wavelen) {
        v = static_cast<float>(v / s.factor);
      } else {
        const double smooth = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        v = static_cast<float>((1 - smooth) * v / s.factor + smooth * v);
      }
    }
  } else if (s.type == "freq_factors") {
    std::vector<float> ff = to_f32(f.get("rope_freqs.weight"));
    for (int i = 0; i < half; ++i) inv[i] /= ff[i];
  }
  return inv;
}

namespace {

struct Layer {
  std::vector<float> attn_norm, ffn_norm, bq, bk, bv;
  ops::WeightView wq, wk, wv, wo, wgate, wup, wdown;
};

}  // namespace

struct Model::Impl {
  std::shared_ptr<const ModelFile> file;
  ModelConfig c;
  int max_ctx = 0;
  ops::WeightView tok_embd, output;
  std::vector<float> output_norm;
  std::vector<float> inv_freq;
  std::vector<Layer> layers;
  // KV cache: per layer, positions x kv_dim floats, grown on demand.
  std::vector<std::vector<float>> kcache, vcache;
  int cache_positions = 0;
  // Scratch for a batch of n tokens.
  std::vector<float> x, xb, q, k, v, att, ffg, ffu, scores;
  bool profiling = false;
  std::map<std::string, double> prof;

  struct Timer {
    Impl& m;
    const char* name;
    std::chrono::steady_clock::time_point t0;
    Timer(Impl& mm, const char* n) : m(mm), name(n), t0(std::chrono::steady_clock::now()) {}
    ~Timer() {
      if (m.profiling) m.prof[name] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
  };

  void ensure_cache(int positions) {
    if (positions <= cache_positions) return;
    int want = std::max(positions, std::min(max_ctx, std::max(2 * cache_positions, 256)));
    const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    for (int l = 0; l < c.n_layers; ++l) {
      kcache[l].resize(static_cast<size_t>(want) * kv_dim);
      vcache[l].resize(static_cast<size_t>(want) * kv_dim);
    }
    cache_positions = want;
  }

  void ensure_scratch(int n) {
    const size_t qd = static_cast<size_t>(c.n_heads) * c.head_dim;
    const size_t kvd = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    const size_t N = static_cast<size_t>(n);
    if (x.size() >= N * c.dim) return;
    x.resize(N * c.dim);
    xb.resize(N * std::max<size_t>(c.dim, qd));
    q.resize(N * qd);
    k.resize(N * kvd);
    v.resize(N * kvd);
    att.resize(N * qd);
    ffg.resize(N * c.ffn_dim);
    ffu.resize(N * c.ffn_dim);
  }

  void attention(int l, int n, int pos) {
    const int hd = c.head_dim;
    const int group = c.n_heads / c.n_kv_heads;
    const size_t qd = static_cast<size_t>(c.n_heads) * hd;
    const size_t kvd = static_cast<size_t>(c.n_kv_heads) * hd;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const float* K = kcache[l].data();
    const float* V = vcache[l].data();
    const int nthreads = num_threads();
    const int span = pos + n;  // longest attention span in this batch
    if (scores.size() < static_cast<size_t>(nthreads) * span) scores.resize(static_cast<size_t>(nthreads) * span);
    const int64_t jobs = static_cast<int64_t>(n) * c.n_heads;
    // Fork only when there is enough work: tiny models decode faster on one thread than through a barrier.
    const bool parallel = nthreads > 1 && jobs * static_cast<int64_t>(span) * hd >= (1 << 16);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (parallel)
    for (int64_t job = 0; job < jobs; ++job) {
      const int t = static_cast<int>(job / c.n_heads);
      const int h = static_cast<int>(job % c.n_heads);
      const int kvh = h / group;
      const int len = pos + t + 1;  // causal: positions 0 .. pos+t
      float* s = scores.data() + static_cast<size_t>(omp_get_thread_num()) * span;
      const float* qh = q.data() + t * qd + static_cast<size_t>(h) * hd;
      for (int p = 0; p < len; ++p) s[p] = ops::dot(qh, K + p * kvd + static_cast<size_t>(kvh) * hd, hd) * scale;
      ops::softmax(s, len);
      float* out = att.data() + t * qd + static_cast<size_t>(h) * hd;
      std::fill(out, out + hd, 0.0f);
      for (int p = 0; p < len; ++p) ops::axpy(s[p], V + p * kvd + static_cast<size_t>(kvh) * hd, out, hd);
    }
  }

  // One transformer block on the n hidden states in x (positions pos..pos+n-1), in place. capture, when set,
  // sees the input of every linear layer (for calibration).
  void layer(int l, int n, int pos, const Model::CaptureFn* capture) {
    const int dim = c.dim;
    const size_t qd = static_cast<size_t>(c.n_heads) * c.head_dim;
    const size_t kvd = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    auto cap = [&](LinearInput which, const float* in, int64_t cols) {
      if (capture && *capture) (*capture)(l, which, in, n, cols);
    };
    const Layer& L = layers[l];
    {
      Timer tm(*this, "norm");
      for (int t = 0; t < n; ++t)
        ops::rmsnorm(xb.data() + static_cast<size_t>(t) * dim, x.data() + static_cast<size_t>(t) * dim,
                     L.attn_norm.data(), dim, c.norm_eps);
    }
    {
      Timer tm(*this, "matmul");
      cap(LinearInput::Attention, xb.data(), dim);
      ops::matmul(L.wq, xb.data(), n, q.data());
      ops::matmul(L.wk, xb.data(), n, k.data());
      ops::matmul(L.wv, xb.data(), n, v.data());
    }
    {
      Timer tm(*this, "rope");
      for (int t = 0; t < n; ++t) {
        if (c.qkv_bias) {
          ops::axpy(1.0f, L.bq.data(), q.data() + t * qd, static_cast<int64_t>(qd));
          ops::axpy(1.0f, L.bk.data(), k.data() + t * kvd, static_cast<int64_t>(kvd));
          ops::axpy(1.0f, L.bv.data(), v.data() + t * kvd, static_cast<int64_t>(kvd));
        }
        ops::rope(q.data() + t * qd, c.n_heads, c.head_dim, c.rope_dim, pos + t, inv_freq.data(), c.rope_style);
        ops::rope(k.data() + t * kvd, c.n_kv_heads, c.head_dim, c.rope_dim, pos + t, inv_freq.data(), c.rope_style);
      }
      std::memcpy(kcache[l].data() + static_cast<size_t>(pos) * kvd, k.data(), n * kvd * sizeof(float));
      std::memcpy(vcache[l].data() + static_cast<size_t>(pos) * kvd, v.data(), n * kvd * sizeof(float));
    }
    {
      Timer tm(*this, "attention");
      attention(l, n, pos);
    }
    {
      Timer tm(*this, "matmul");
      cap(LinearInput::AttentionOutput, att.data(), static_cast<int64_t>(qd));
      ops::matmul(L.wo, att.data(), n, xb.data());
    }
    {
      Timer tm(*this, "norm");
      ops::axpy(1.0f, xb.data(), x.data(), static_cast<int64_t>(n) * dim);
      for (int t = 0; t < n; ++t)
        ops::rmsnorm(xb.data() + static_cast<size_t>(t) * dim, x.data() + static_cast<size_t>(t) * dim,
                     L.ffn_norm.data(), dim, c.norm_eps);
    }
    {
      Timer tm(*this, "matmul");
      cap(LinearInput::Ffn, xb.data(), dim);
      ops::matmul(L.wgate, xb.data(), n, ffg.data());
      ops::matmul(L.wup, xb.data(), n, ffu.data());
    }
    {
      Timer tm(*this, "silu");
      ops::silu_mul(ffg.data(), ffu.data(), static_cast<int64_t>(n) * c.ffn_dim);
    }
    {
      Timer tm(*this, "matmul");
      cap(LinearInput::FfnDown, ffg.data(), c.ffn_dim);
      ops::matmul(L.wdown, ffg.data(), n, xb.data());
    }
    ops::axpy(1.0f, xb.data(), x.data(), static_cast<int64_t>(n) * dim);
  }

  void forward(std::span<const int32_t> tokens, int pos, float* logits, bool all_logits) {
    const int n = static_cast<int>(tokens.size());
    if (n == 0) return;
    if (pos < 0 || pos + n > max_ctx)
      fail(file->path, "context", "positions " + std::to_string(pos) + ".." + std::to_string(pos + n - 1) +
                                      " exceed the context of " + std::to_string(max_ctx) + " tokens");
    for (int32_t id : tokens)
      if (id < 0 || id >= c.n_vocab)
        fail(file->path, "token id", std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(c.n_vocab) + ")");
    ensure_cache(pos + n);
    ensure_scratch(n);
    const int dim = c.dim;
    {
      Timer tm(*this, "embed");
      for (int t = 0; t < n; ++t) ops::get_row(tok_embd, tokens[t], x.data() + static_cast<size_t>(t) * dim);
    }
    for (int l = 0; l < c.n_layers; ++l) layer(l, n, pos, nullptr);
    const int first = all_logits ? 0 : n - 1;
    const int rows = n - first;
    {
      Timer tm(*this, "norm");
      for (int t = first; t < n; ++t)
        ops::rmsnorm(xb.data() + static_cast<size_t>(t - first) * dim, x.data() + static_cast<size_t>(t) * dim,
                     output_norm.data(), dim, c.norm_eps);
    }
    {
      Timer tm(*this, "output");
      ops::matmul(output, xb.data(), rows, logits);
    }
  }
};

Model::Model(std::shared_ptr<const ModelFile> file, int max_context) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.file = std::move(file);
  const ModelFile& f = *m.file;
  m.c = f.config;
  m.max_ctx = max_context > 0 ? max_context : m.c.context_length;
  if (m.max_ctx <= 0) m.max_ctx = 2048;
  m.tok_embd = ops::view_of(f.get("token_embd.weight"));
  m.output = m.c.tied_embeddings ? m.tok_embd : ops::view_of(f.get("output.weight"));
  m.output_norm = to_f32(f.get("output_norm.weight"));
  m.inv_freq = rope_inv_freq(m.c, f);
  m.layers.resize(m.c.n_layers);
  for (int l = 0; l < m.c.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    Layer& L = m.layers[l];
    L.attn_norm = to_f32(f.get(b + "attn_norm.weight"));
    L.ffn_norm = to_f32(f.get(b + "ffn_norm.weight"));
    L.wq = ops::view_of(f.get(b + "attn_q.weight"));
    L.wk = ops::view_of(f.get(b + "attn_k.weight"));
    L.wv = ops::view_of(f.get(b + "attn_v.weight"));
    L.wo = ops::view_of(f.get(b + "attn_output.weight"));
    L.wgate = ops::view_of(f.get(b + "ffn_gate.weight"));
    L.wup = ops::view_of(f.get(b + "ffn_up.weight"));
    L.wdown = ops::view_of(f.get(b + "ffn_down.weight"));
    if (m.c.qkv_bias) {
      L.bq = to_f32(f.get(b + "attn_q.bias"));
      L.bk = to_f32(f.get(b + "attn_k.bias"));
      L.bv = to_f32(f.get(b + "attn_v.bias"));
    }
  }
  m.kcache.resize(m.c.n_layers);
  m.vcache.resize(m.c.n_layers);
}

Model::~Model() = default;

const ModelConfig& Model::config() const { return impl_->c; }
const ModelFile& Model::file() const { return *impl_->file; }
int Model::max_context() const { return impl_->max_ctx; }

void Model::forward(std::span<const int32_t> tokens, int pos, float* logits, bool all_logits) {
  impl_->forward(tokens, pos, logits, all_logits);
}

void Model::embed(std::span<const int32_t> tokens, float* x) {
  Impl& m = *impl_;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < 0 || tokens[t] >= m.c.n_vocab)
      fail(m.file->path, "token id", std::to_string(tokens[t]) + " is outside the vocabulary");
    ops::get_row(m.tok_embd, tokens[t], x + t * static_cast<size_t>(m.c.dim));
  }
}

void Model::forward_layer(int l, float* x, int n, const CaptureFn& capture) {
  Impl& m = *impl_;
  if (l < 0 || l >= m.c.n_layers) fail(m.file->path, "layer", std::to_string(l) + " does not exist");
  if (n <= 0 || n > m.max_ctx)
    fail(m.file->path, "context", std::to_string(n) + " tokens exceed the context of " + std::to_string(m.max_ctx));
  m.ensure_cache(n);
  m.ensure_scratch(n);
  const size_t count = static_cast<size_t>(n) * m.c.dim;
  std::memcpy(m.x.data(), x, count * sizeof(float));
  m.layer(l, n, 0, &capture);
  std::memcpy(x, m.x.data(), count * sizeof(float));
}

void Model::replace_weight(const TensorInfo& t) {
  Impl& m = *impl_;
  ops::WeightView v = ops::view_of(t);
  auto set = [&](ops::WeightView& dst) {
    if (dst.rows != v.rows || dst.cols != v.cols)
      fail(t.file, t.name, "shape " + t.shape_str() + " does not match the model's weight");
    dst = v;
  };
  const std::string& n = t.name;
  if (n == "token_embd.weight") {
    const bool tied_output = m.c.tied_embeddings;
    set(m.tok_embd);
    if (tied_output) m.output = m.tok_embd;
    return;
  }
  if (n == "output.weight" && !m.c.tied_embeddings) return set(m.output);
  int l = -1;
  char role[64] = {0};
  if (std::sscanf(n.c_str(), "blk.%d.%63[a-z_].weight", &l, role) == 2 && l >= 0 && l < m.c.n_layers) {
    Layer& L = m.layers[l];
    const std::string r = role;
    if (r == "attn_q") return set(L.wq);
    if (r == "attn_k") return set(L.wk);
    if (r == "attn_v") return set(L.wv);
    if (r == "attn_output") return set(L.wo);
    if (r == "ffn_gate") return set(L.wgate);
    if (r == "ffn_up") return set(L.wup);
    if (r == "ffn_down") return set(L.wdown);
  }
  fail(t.file, n, "is not a weight matrix of the model");
}

uint64_t Model::weight_bytes_per_token() const {
  const Impl& m = *impl_;
  auto bytes = [](const ops::WeightView& w) { return static_cast<uint64_t>(w.rows) * w.row_bytes; };
  uint64_t total = bytes(m.output) + m.tok_embd.row_bytes;
  for (const Layer& L : m.layers)
    total += bytes(L.wq) + bytes(L.wk) + bytes(L.wv) + bytes(L.wo) + bytes(L.wgate) + bytes(L.wup) + bytes(L.wdown);
  return total;
}

void Model::enable_profile(bool on) { impl_->profiling = on; }

std::vector<std::pair<std::string, double>> Model::profile() const {
  return {impl_->prof.begin(), impl_->prof.end()};
}

void Model::reset_profile() { impl_->prof.clear(); }

}  // namespace lowbit
