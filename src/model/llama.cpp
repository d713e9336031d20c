// The transformer graph: embeddings -> n_layers x (RMSNorm, GQA attention with RoPE, RMSNorm, gated FFN) ->
// RMSNorm -> output head. One implementation for every architecture descriptor (io/arch.h): Llama 1/2/3, Mistral,
// Qwen2 (q/k/v bias), Qwen3 (q/k norms), SmolLM, TinyLlama, Gemma 2 (soft-caps, post-norms, alternating sliding
// window, GeGLU, scaled embeddings) and Gemma 3 (q/k norms, 5 local : 1 global layers with their own RoPE base).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/threads.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "io/arch.h"
#include "ops/ops.h"

namespace lowbit {

namespace {

// Queries per attention GEMM tile: a tile multiplies only the keys up to its last query, so a causal window costs
// about half of its square plus one tile's triangle.
constexpr int kAttnTile = 64;
// Rows (tokens over all sequences) that forward_layer / capture_site run through a block at once.
constexpr int64_t kCalibChunkRows = 4096;

// Small vectors (norms, biases, rope factors) are widened to f32 once.
std::vector<float> to_f32(const TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  ops::widen_vector(t, out.data());
  return out;
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelConfig& c, const ModelFile& f, int context) {
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
  } else if (s.type == "freq_factors" || s.type == "longrope") {
    const bool long_factors = (context > 0 ? context : c.context_length) > s.original_context;
    std::vector<float> ff = to_f32(f.get(s.type == "freq_factors" ? "rope_freqs.weight"
                                         : long_factors          ? "rope_factors_long.weight"
                                                                 : "rope_factors_short.weight"));
    for (int i = 0; i < half; ++i) inv[i] /= ff[i];
  }
  return inv;
}

namespace {

// A block's tensors, indexed by their row in the architecture's role table (io/arch.h): matrices are views into
// the model file (or a replacement), norms and biases are widened to f32.
struct Layer {
  std::vector<ops::WeightView> mat;      // [roles.block.size()], set for Linear roles present in the file
  std::vector<std::vector<float>> vec;   // [roles.block.size()], set for Norm / Bias roles present in the file
  // The matrices the graph multiplies by: mat's, or row slices of a fused one (Phi-3's attn_qkv -> q | k | v,
  // ffn_up -> gate | up). Repacked for the kernels at load.
  ops::WeightView q, k, v, o, gate, up, down;
  // MoE: the router (n_experts rows), each expert's matrices (row slices of the merged 3-D tensors) and the shared
  // expert's (gate, up, down in the dense views above).
  ops::WeightView router;
  std::vector<ops::WeightView> gate_e, up_e, down_e;  // [n_experts]
};


// Rows [r0, r0 + n) of w: a view of the same bytes (every format stores whole rows).
ops::WeightView row_slice(const ops::WeightView& w, int64_t r0, int64_t n) {
  ops::WeightView s = w;
  s.data = w.data + static_cast<size_t>(r0) * w.row_bytes;
  s.rows = n;
  s.repacked = nullptr;
  return s;
}

// Row indices of the roles the graph computes with.
struct RoleIndex {
  size_t attn_norm, q, k, v, qkv, bq, bk, bv, q_norm, k_norm, o, attn_post_norm, ffn_norm, gate, up, down, ffn_post_norm;
  size_t router, gate_exps, up_exps, down_exps, shexp_gate, gate_shexp, up_shexp, down_shexp;
  explicit RoleIndex(const io::ArchRoles& a) {
    auto at = [&](std::string_view role, std::string_view suffix) {
      const io::BlockTensorRole* r = io::find_role(a, role, suffix);
      if (!r) fail("model", std::string(role), "missing from the architecture's role table");
      return static_cast<size_t>(r - a.block.data());
    };
    attn_norm = at("attn_norm", "weight"), q = at("attn_q", "weight"), k = at("attn_k", "weight");
    v = at("attn_v", "weight"), bq = at("attn_q", "bias"), bk = at("attn_k", "bias"), bv = at("attn_v", "bias");
    q_norm = at("attn_q_norm", "weight"), k_norm = at("attn_k_norm", "weight");
    o = at("attn_output", "weight"), ffn_norm = at("ffn_norm", "weight"), gate = at("ffn_gate", "weight");
    up = at("ffn_up", "weight"), down = at("ffn_down", "weight");
    attn_post_norm = at("post_attention_norm", "weight"), ffn_post_norm = at("post_ffw_norm", "weight");
    qkv = at("attn_qkv", "weight");
    router = at("ffn_gate_inp", "weight"), gate_exps = at("ffn_gate_exps", "weight");
    up_exps = at("ffn_up_exps", "weight"), down_exps = at("ffn_down_exps", "weight");
    shexp_gate = at("ffn_gate_inp_shexp", "weight"), gate_shexp = at("ffn_gate_shexp", "weight");
    up_shexp = at("ffn_up_shexp", "weight"), down_shexp = at("ffn_down_shexp", "weight");
  }
};

}  // namespace

struct Model::Impl {
  std::shared_ptr<const ModelFile> file;
  ModelConfig c;
  const io::ArchRoles* roles = nullptr;
  std::unique_ptr<RoleIndex> ri;
  int max_ctx = 0;
  ops::WeightView tok_embd, output;
  std::vector<float> output_norm;
  std::vector<float> inv_freq;
  std::vector<float> inv_freq_local;  // local (sliding-window) layers' frequencies where they have their own base
  const float* freqs_of(int l) const {
    return c.is_local(l) && !inv_freq_local.empty() ? inv_freq_local.data() : inv_freq.data();
  }
  // Attention score scale: 1 / sqrt(query_pre_attn_scalar), which is head_dim unless a Gemma config says otherwise.
  // LongRoPE's attention factor multiplies cos and sin, so q and k: the scores by its square.
  float score_scale() const {
    const float af = c.rope_scaling.attn_factor;
    return af * af / std::sqrt(c.attn_scalar > 0 ? c.attn_scalar : static_cast<float>(c.head_dim));
  }
  // Keys a query at position p of layer l sees: positions [first_key(l, p), p].
  int first_key(int l, int p) const { return c.is_local(l) ? std::max(0, p - c.sliding_window + 1) : 0; }
  // Gemma 2's attention soft-cap on a row of scores.
  void softcap(float* s, int n, float cap) const {
    if (cap <= 0) return;
    const float inv = 1.0f / cap;
    for (int i = 0; i < n; ++i) s[i] = cap * std::tanh(s[i] * inv);
  }
  std::vector<Layer> layers;
  // KV cache: per layer, positions x kv_dim floats, grown on demand.
  std::vector<std::vector<float>> kcache, vcache;
  int cache_positions = 0;
  // Scratch for a batch of n tokens.
  std::vector<float> x, xb, q, k, v, att, ffg, ffu, scores;
  bool profiling = false;
  bool f16_attention = false;  // set_f16_attention
  std::map<std::string, double> prof;
  std::vector<ops::RepackedPtr> repacks;  // storage behind the views' repacked pointers
  Model::RepackStats repack_stats;

  // Repacks every block matrix and the output head for the kernels of this CPU where it has a layout for them.
  void repack_weights() {
    const char* env = std::getenv("LOWBIT_REPACK");
    if (env && std::string(env) == "0") return;
    const auto t0 = std::chrono::steady_clock::now();
    auto one = [&](ops::WeightView& w) {
      if (w.rows <= 0 || w.data == nullptr) return;
      ops::RepackedPtr r = ops::repack_for_kernels(w);
      if (!r) return;
      w.repacked = r.get();
      // The original bytes are no longer read by matmul: drop their pages from the resident set (a mapped file
      // re-reads them if get_row ever needs them).
      for (const auto& map : file->mappings) map->release(w.data, static_cast<uint64_t>(w.rows) * w.row_bytes);
      repack_stats.matrices += 1;
      repack_stats.bytes += ops::repacked_bytes(*r);
      repacks.push_back(std::move(r));
    };
    for (Layer& L : layers)
      for (ops::WeightView* w : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down}) one(*w);
    for (Layer& L : layers)
      for (auto* set : {&L.gate_e, &L.up_e, &L.down_e})
        for (ops::WeightView& w : *set) one(w);
    one(output);  // a view of its own even when tied to the embedding (get_row reads tok_embd's data)
    repack_stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

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

  // Block l on n_seq sequences of len tokens from `in`, in chunks of sequences (bounded scratch); out (may be null)
  // receives the block's output; stop_at >= 0 stops each chunk after that site's input was captured.
  void run_sequences(int l, const float* in, float* out, int n_seq, int len, const Model::CaptureFn& capture,
                     int stop_at) {
    check_layer_call(l, n_seq, len);
    const size_t count = static_cast<size_t>(len) * c.dim;
    const int chunk = chunk_seqs(n_seq, len);
    for (int s0 = 0; s0 < n_seq; s0 += chunk) {
      const int ns = std::min(chunk, n_seq - s0);
      ensure_scratch(ns * len);
      std::memcpy(x.data(), in + s0 * count, ns * count * sizeof(float));
      layer(l, ns, len, 0, /*use_cache=*/false, &capture, stop_at);
      if (out) std::memcpy(out + s0 * count, x.data(), ns * count * sizeof(float));
    }
  }

  void check_layer_call(int l, int n_seq, int len) {
    if (l < 0 || l >= c.n_layers) fail(file->path, "layer", std::to_string(l) + " does not exist");
    if (len <= 0 || len > max_ctx || n_seq < 0)
      fail(file->path, "context", std::to_string(len) + " tokens exceed the context of " + std::to_string(max_ctx));
  }

  // Sequences of len tokens that go through a block together in forward_layer / capture_site: as many as fit in
  // kCalibChunkRows rows (at least one), so the block's matmuls are few large GEMMs while the scratch stays bounded
  // (~80 KiB per row at dim 2048 / ffn 5632).
  int chunk_seqs(int n_seq, int len) const {
    return std::clamp(static_cast<int>(kCalibChunkRows / len), 1, std::max(n_seq, 1));
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

  // fn(t) for rows t < n of row_elems values each: on the thread team where a prefill batch makes it worth a fork
  // (norms, RoPE, SwiGLU and residual adds were 2-3% of pp512 at one thread, serial), else on this thread. Each row
  // is computed the same way either way, so results do not depend on the thread count.
  template <class Fn>
  void for_rows(int n, int64_t row_elems, const Fn& fn) {
    const int nthreads = num_threads();
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > 1 && n * row_elems >= (1 << 15))
    for (int t = 0; t < n; ++t) fn(t);
  }

  // Attention of n tokens at positions pos..pos+n-1 over the KV cache, one dot / axpy per (token, head, position):
  // forward()'s decode path (n == 1).
  void attention_rows(int l, int n, int pos) {
    const int hd = c.head_dim;
    const int group = c.n_heads / c.n_kv_heads;
    const size_t qd = static_cast<size_t>(c.n_heads) * hd;
    const size_t kvd = static_cast<size_t>(c.n_kv_heads) * hd;
    const float scale = score_scale();
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
      const int len = pos + t + 1;  // causal: positions first .. pos+t
      const int first = first_key(l, pos + t);
      float* s = scores.data() + static_cast<size_t>(omp_get_thread_num()) * span;
      const float* qh = q.data() + t * qd + static_cast<size_t>(h) * hd;
      for (int p = first; p < len; ++p) s[p] = ops::dot(qh, K + p * kvd + static_cast<size_t>(kvh) * hd, hd) * scale;
      softcap(s + first, len - first, c.attn_softcap);
      ops::softmax(s + first, len - first);
      float* out = att.data() + t * qd + static_cast<size_t>(h) * hd;
      std::fill(out, out + hd, 0.0f);
      for (int p = first; p < len; ++p) ops::axpy(s[p], V + p * kvd + static_cast<size_t>(kvh) * hd, out, hd);
    }
  }

  // Attention as GEMMs: n_seq sequences of len queries each (rows of q / att in sequence order) at positions
  // pos..pos+len-1, over keys / values at positions 0..pos+len-1 of each sequence, read from K / V (rows of kvd
  // floats, seq_stride rows per sequence). Per (sequence, head, tile of kAttnTile queries): S = scale * Q K^T over
  // the keys up to the tile's last query, causal mask, row-wise softmax, O = P V. GQA: head h reads kv head
  // h / (n_heads / n_kv_heads). One job per tile on an OpenMP team, each GEMM on its own thread (see
  // ops::BlasOnCallingThread); a job's result does not depend on the thread count. f16: llama.cpp's F16 KV cache
  // (the softmax weights rounded to f16 too; q / k / v are rounded by the caller).
  void attention_gemm(int l, int n_seq, int len, int pos, const float* K, const float* V, size_t seq_stride, bool f16) {
    const int hd = c.head_dim;
    const int group = c.n_heads / c.n_kv_heads;
    const size_t qd = static_cast<size_t>(c.n_heads) * hd;
    const size_t kvd = static_cast<size_t>(c.n_kv_heads) * hd;
    const float scale = score_scale();
    const int nthreads = num_threads();
    const int tiles = (len + kAttnTile - 1) / kAttnTile;
    const size_t tile_scores = static_cast<size_t>(kAttnTile) * (pos + len);
    if (scores.size() < nthreads * tile_scores) scores.resize(nthreads * tile_scores);
    const int64_t jobs = static_cast<int64_t>(n_seq) * c.n_heads * tiles;
    ops::BlasOnCallingThread single;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads) if (nthreads > 1 && jobs > 1)
    for (int64_t job = 0; job < jobs; ++job) {
      const int s = static_cast<int>(job / (static_cast<int64_t>(c.n_heads) * tiles));
      const int h = static_cast<int>(job / tiles % c.n_heads);
      const int tile = tiles - 1 - static_cast<int>(job % tiles);  // the longest spans first: better balance
      const int t0 = tile * kAttnTile, rows = std::min(kAttnTile, len - t0), span = pos + t0 + rows;
      const size_t kv_off = static_cast<size_t>(s) * seq_stride * kvd + static_cast<size_t>(h / group) * hd;
      const size_t q_off = (static_cast<size_t>(s) * len + t0) * qd + static_cast<size_t>(h) * hd;
      float* S = scores.data() + static_cast<size_t>(omp_get_thread_num()) * tile_scores;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, span, hd, scale, q.data() + q_off,
                  static_cast<blasint>(qd), K + kv_off, static_cast<blasint>(kvd), 0.0f, S, span);
      for (int i = 0; i < rows; ++i) {
        float* row = S + static_cast<size_t>(i) * span;
        const int visible = pos + t0 + i + 1;  // causal: keys first .. pos+t0+i (a sliding window starts later)
        const int first = first_key(l, pos + t0 + i);
        softcap(row + first, visible - first, c.attn_softcap);
        ops::softmax(row + first, visible - first);
        if (f16)
          for (int p = first; p < visible; ++p) row[p] = f16_to_f32(f32_to_f16(row[p]));  // KQ to F16 for V KQ
        std::fill(row, row + first, 0.0f);
        std::fill(row + visible, row + span, 0.0f);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, span, 1.0f, S, span, V + kv_off,
                  static_cast<blasint>(kvd), 0.0f, att.data() + q_off, static_cast<blasint>(qd));
    }
  }

  // The calibration path's attention (pos 0, each sequence's own keys and values in the scratch).
  void attention_sequences(int l, int n_seq, int len) {
    if (f16_attention) {  // llama.cpp: K and V in its F16 cache, Q converted to F16 for K Q
      auto to_f16 = [](float* a, size_t count) {
        for (size_t i = 0; i < count; ++i) a[i] = f16_to_f32(f32_to_f16(a[i]));
      };
      const size_t rows = static_cast<size_t>(n_seq) * len;
      to_f16(q.data(), rows * c.n_heads * c.head_dim);
      to_f16(k.data(), rows * c.n_kv_heads * c.head_dim);
      to_f16(v.data(), rows * c.n_kv_heads * c.head_dim);
    }
    attention_gemm(l, n_seq, len, 0, k.data(), v.data(), static_cast<size_t>(len), f16_attention);
  }

  // One transformer block on n_seq sequences of len hidden states each in x (rows in sequence order, positions
  // pos..pos+len-1 in every sequence), in place. use_cache (forward(), n_seq == 1): the keys / values go into the KV
  // cache at pos and attention reads the cache, token by token; otherwise (calibration, pos == 0) attention runs as
  // GEMMs over each sequence's own keys / values in the scratch and the cache is left alone. capture, when set, sees
  // the input of every linear layer (for calibration). stop_at >= 0: return right after the input of that site (a
  // LinearInput) has been captured. resume_after >= 0 (BlockPass): the block already ran through that site's input,
  // and the scratch holds what the rest needs -- x the block input and att the attention output after
  // AttentionOutput; x the residual stream after attention (h) from Ffn on, and ffg the input of ffn_down after
  // FfnDown; sites up to resume_after are not captured again.
  void layer(int l, int n_seq, int len, int pos, bool use_cache, const Model::CaptureFn* capture, int stop_at = -1,
             int resume_after = -1) {
    const int dim = c.dim;
    const int n = n_seq * len;
    const size_t qd = static_cast<size_t>(c.n_heads) * c.head_dim;
    const size_t kvd = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
    constexpr int kAttn = static_cast<int>(LinearInput::Attention), kAttnOut = static_cast<int>(LinearInput::AttentionOutput),
                  kFfn = static_cast<int>(LinearInput::Ffn), kFfnDown = static_cast<int>(LinearInput::FfnDown);
    auto cap = [&](LinearInput which, const float* in, int64_t cols) {
      if (static_cast<int>(which) > resume_after && capture && *capture) (*capture)(l, which, in, n, cols);
    };
    const Layer& L = layers[l];
    auto norm_rows = [&](const std::vector<float>& weight) {  // xb = RMSNorm(x) row by row
      Timer tm(*this, "norm");
      for_rows(n, dim, [&](int t) {
        ops::rmsnorm(xb.data() + static_cast<size_t>(t) * dim, x.data() + static_cast<size_t>(t) * dim, weight.data(),
                     dim, c.norm_eps);
      });
    };
    // x += xb (the residual stream); with post-norms (Gemma) xb is RMS-normalised by `post` first.
    auto add_rows = [&](size_t post) {
      Timer tm(*this, "norm");
      for_rows(n, dim, [&](int t) {
        float* row = xb.data() + static_cast<size_t>(t) * dim;
        if (c.post_norms) ops::rmsnorm(row, row, L.vec[post].data(), dim, c.norm_eps);
        ops::axpy(1.0f, row, x.data() + static_cast<size_t>(t) * dim, dim);
      });
    };
    if (resume_after < kAttnOut) {
      norm_rows(L.vec[ri->attn_norm]);
      {
        Timer tm(*this, "matmul");
        cap(LinearInput::Attention, xb.data(), dim);
        if (stop_at == kAttn) return;
        ops::matmul(L.q, xb.data(), n, q.data());
        ops::matmul(L.k, xb.data(), n, k.data());
        ops::matmul(L.v, xb.data(), n, v.data());
      }
      {
        Timer tm(*this, "rope");
        for_rows(n, static_cast<int64_t>(qd + 2 * kvd), [&](int t) {
          if (c.qkv_bias) {
            ops::axpy(1.0f, L.vec[ri->bq].data(), q.data() + t * qd, static_cast<int64_t>(qd));
            ops::axpy(1.0f, L.vec[ri->bk].data(), k.data() + t * kvd, static_cast<int64_t>(kvd));
            ops::axpy(1.0f, L.vec[ri->bv].data(), v.data() + t * kvd, static_cast<int64_t>(kvd));
          }
          if (c.qk_norm) {  // Qwen3: each head of q and k RMS-normalised with its own weights, before RoPE
            float* qt = q.data() + t * qd;
            float* kt = k.data() + t * kvd;
            for (int h = 0; h < c.n_heads; ++h)
              ops::rmsnorm(qt + h * c.head_dim, qt + h * c.head_dim, L.vec[ri->q_norm].data(), c.head_dim, c.norm_eps);
            for (int h = 0; h < c.n_kv_heads; ++h)
              ops::rmsnorm(kt + h * c.head_dim, kt + h * c.head_dim, L.vec[ri->k_norm].data(), c.head_dim, c.norm_eps);
          }
          const int p = pos + t % len;
          ops::rope(q.data() + t * qd, c.n_heads, c.head_dim, c.rope_dim, p, freqs_of(l), c.rope_style);
          ops::rope(k.data() + t * kvd, c.n_kv_heads, c.head_dim, c.rope_dim, p, freqs_of(l), c.rope_style);
        });
        if (use_cache) {
          std::memcpy(kcache[l].data() + static_cast<size_t>(pos) * kvd, k.data(), n * kvd * sizeof(float));
          std::memcpy(vcache[l].data() + static_cast<size_t>(pos) * kvd, v.data(), n * kvd * sizeof(float));
        }
      }
      {
        Timer tm(*this, "attention");
        // forward(): decode reads the cache token by token; a prefill batch runs GEMMs over the cache (its scores
        // differ from decode's in float rounding only: tests/eval compare the two paths' perplexity and KLD).
        if (use_cache && n == 1)
          attention_rows(l, n, pos);
        else if (use_cache)
          attention_gemm(l, 1, n, pos, kcache[l].data(), vcache[l].data(), 0, /*f16=*/false);
        else
          attention_sequences(l, n_seq, len);
      }
      cap(LinearInput::AttentionOutput, att.data(), static_cast<int64_t>(qd));
      if (stop_at == kAttnOut) return;
    }
    if (resume_after < kFfn) {
      {
        Timer tm(*this, "matmul");
        ops::matmul(L.o, att.data(), n, xb.data());
      }
      add_rows(ri->attn_post_norm);
    }
    if (resume_after < kFfnDown && c.n_experts > 0) {  // the sparse FFN: no per-site captures past its input
      norm_rows(L.vec[ri->ffn_norm]);
      cap(LinearInput::Ffn, xb.data(), dim);
      if (stop_at == kFfn) return;
      moe_ffn(L, n);
      add_rows(ri->ffn_post_norm);
      return;
    }
    if (resume_after < kFfnDown) {
      norm_rows(L.vec[ri->ffn_norm]);
      {
        Timer tm(*this, "matmul");
        cap(LinearInput::Ffn, xb.data(), dim);
        if (stop_at == kFfn) return;
        ops::matmul(L.gate, xb.data(), n, ffg.data());
        ops::matmul(L.up, xb.data(), n, ffu.data());
      }
      {
        Timer tm(*this, "silu");
        const size_t f = static_cast<size_t>(c.ffn_dim);
        for_rows(n, c.ffn_dim, [&](int t) {
          if (c.gelu) ops::gelu_mul(ffg.data() + t * f, ffu.data() + t * f, c.ffn_dim);
          else ops::silu_mul(ffg.data() + t * f, ffu.data() + t * f, c.ffn_dim);
        });
      }
      cap(LinearInput::FfnDown, ffg.data(), c.ffn_dim);
      if (stop_at == kFfnDown) return;
    }
    {
      Timer tm(*this, "matmul");
      ops::matmul(L.down, ffg.data(), n, xb.data());
    }
    add_rows(ri->ffn_post_norm);
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
      for (int t = 0; t < n; ++t) embed_row(tokens[t], x.data() + static_cast<size_t>(t) * dim);
    }
    for (int l = 0; l < c.n_layers; ++l) layer(l, 1, n, pos, /*use_cache=*/true, nullptr);
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
      final_softcap(logits, static_cast<int64_t>(rows) * c.n_vocab);
    }
  }

  // The sparse FFN on the n normed rows in xb, its output into xb: per token the router's softmax over the experts,
  // the n_experts_used largest (renormalised to sum 1 where the architecture does, llama.cpp's clamp of the sum
  // at 6.1e-5 included); per expert one batch of the tokens that chose it (gate, up, SwiGLU, down), added with
  // their weights; Qwen2-MoE's shared expert on every token, scaled by sigmoid(ffn_gate_inp_shexp . x).
  void moe_ffn(const Layer& L, int n) {
    Timer tm(*this, "moe");
    const int E = c.n_experts, K = c.n_experts_used, dim = c.dim;
    const int64_t f = c.expert_ffn_dim;
    std::vector<float> probs(static_cast<size_t>(n) * E);  // [n, E]
    ops::matmul(L.router, xb.data(), n, probs.data());
    std::vector<std::vector<std::pair<int, float>>> routed(E);  // expert -> (token, weight)
    std::vector<int> order(E);
    for (int t = 0; t < n; ++t) {
      float* p = probs.data() + static_cast<size_t>(t) * E;
      ops::softmax(p, E);
      for (int e = 0; e < E; ++e) order[e] = e;
      std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int a, int b) { return p[a] > p[b]; });
      float sum = 0;
      for (int j = 0; j < K; ++j) sum += p[order[j]];
      const float scale = c.experts_renorm ? 1.0f / std::max(sum, 6.103515625e-5f) : 1.0f;
      for (int j = 0; j < K; ++j) routed[order[j]].push_back({t, p[order[j]] * scale});
    }
    std::vector<float> out(static_cast<size_t>(n) * dim, 0.0f), xs, g, u, y;
    for (int e = 0; e < E; ++e) {
      const auto& toks = routed[e];
      const int m = static_cast<int>(toks.size());
      if (m == 0) continue;
      xs.resize(static_cast<size_t>(m) * dim), g.resize(static_cast<size_t>(m) * f), u.resize(g.size());
      y.resize(static_cast<size_t>(m) * dim);
      for (int i = 0; i < m; ++i)
        std::memcpy(xs.data() + static_cast<size_t>(i) * dim, xb.data() + static_cast<size_t>(toks[i].first) * dim,
                    dim * sizeof(float));
      ops::matmul(L.gate_e[e], xs.data(), m, g.data());
      ops::matmul(L.up_e[e], xs.data(), m, u.data());
      for (int i = 0; i < m; ++i) ops::silu_mul(g.data() + static_cast<size_t>(i) * f, u.data() + static_cast<size_t>(i) * f, f);
      ops::matmul(L.down_e[e], g.data(), m, y.data());
      for (int i = 0; i < m; ++i)
        ops::axpy(toks[i].second, y.data() + static_cast<size_t>(i) * dim,
                  out.data() + static_cast<size_t>(toks[i].first) * dim, dim);
    }
    if (c.shared_ffn_dim > 0) {
      const int64_t fs = c.shared_ffn_dim;
      g.resize(static_cast<size_t>(n) * fs), u.resize(g.size()), y.resize(static_cast<size_t>(n) * dim);
      ops::matmul(L.gate, xb.data(), n, g.data());
      ops::matmul(L.up, xb.data(), n, u.data());
      for (int t = 0; t < n; ++t) ops::silu_mul(g.data() + static_cast<size_t>(t) * fs, u.data() + static_cast<size_t>(t) * fs, fs);
      ops::matmul(L.down, g.data(), n, y.data());
      for (int t = 0; t < n; ++t) {
        const float z = ops::dot(L.vec[ri->shexp_gate].data(), xb.data() + static_cast<size_t>(t) * dim, dim);
        ops::axpy(1.0f / (1.0f + std::exp(-z)), y.data() + static_cast<size_t>(t) * dim,
                  out.data() + static_cast<size_t>(t) * dim, dim);
      }
    }
    std::memcpy(xb.data(), out.data(), out.size() * sizeof(float));
  }

  // The views the graph multiplies by, from the file's matrices (slices of the fused ones).
  void compute_views(Layer& L) const {
    const int64_t qd = static_cast<int64_t>(c.n_heads) * c.head_dim, kvd = static_cast<int64_t>(c.n_kv_heads) * c.head_dim;
    if (c.fused_qkv) {
      L.q = row_slice(L.mat[ri->qkv], 0, qd);
      L.k = row_slice(L.mat[ri->qkv], qd, kvd);
      L.v = row_slice(L.mat[ri->qkv], qd + kvd, kvd);
    } else {
      L.q = L.mat[ri->q], L.k = L.mat[ri->k], L.v = L.mat[ri->v];
    }
    L.o = L.mat[ri->o];
    if (c.n_experts > 0) {
      L.router = L.mat[ri->router];
      const int64_t f = c.expert_ffn_dim;
      L.gate_e.resize(c.n_experts), L.up_e.resize(c.n_experts), L.down_e.resize(c.n_experts);
      for (int e = 0; e < c.n_experts; ++e) {
        L.gate_e[e] = row_slice(L.mat[ri->gate_exps], e * f, f);
        L.up_e[e] = row_slice(L.mat[ri->up_exps], e * f, f);
        L.down_e[e] = row_slice(L.mat[ri->down_exps], e * static_cast<int64_t>(c.dim), c.dim);
      }
      // the shared expert, if any, in the dense slots
      L.gate = L.mat[ri->gate_shexp], L.up = L.mat[ri->up_shexp], L.down = L.mat[ri->down_shexp];
      return;
    }
    if (c.fused_gate_up) {
      L.gate = row_slice(L.mat[ri->up], 0, c.ffn_dim);
      L.up = row_slice(L.mat[ri->up], c.ffn_dim, c.ffn_dim);
    } else {
      L.gate = L.mat[ri->gate], L.up = L.mat[ri->up];
    }
    L.down = L.mat[ri->down];
  }

  // Row `token` of the embedding, times sqrt(dim) where the architecture scales it (Gemma; in f32 as llama.cpp).
  void embed_row(int32_t token, float* out) const {
    ops::get_row(tok_embd, token, out);
    if (!c.embed_scale) return;
    const float s = std::sqrt(static_cast<float>(c.dim));
    for (int i = 0; i < c.dim; ++i) out[i] *= s;
  }

  // Gemma 2's final logit soft-cap.
  void final_softcap(float* logits, int64_t count) const {
    if (c.final_softcap <= 0) return;
    const float cap = c.final_softcap, inv = 1.0f / cap;
    for (int64_t i = 0; i < count; ++i) logits[i] = cap * std::tanh(logits[i] * inv);
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
  m.inv_freq = rope_inv_freq(m.c, f, m.max_ctx);
  if (m.c.rope_theta_local > 0 && m.c.sliding_window > 0) {  // Gemma 3's local layers: their own base, unscaled
    ModelConfig local = m.c;
    local.rope_theta = m.c.rope_theta_local;
    local.rope_scaling = RopeScaling{};
    m.inv_freq_local = rope_inv_freq(local, f);
  }
  m.roles = &io::arch_roles(m.c);
  m.ri = std::make_unique<RoleIndex>(*m.roles);
  m.layers.resize(m.c.n_layers);
  const auto& block = m.roles->block;
  for (int l = 0; l < m.c.n_layers; ++l) {
    Layer& L = m.layers[l];
    L.mat.resize(block.size());
    L.vec.resize(block.size());
    for (size_t i = 0; i < block.size(); ++i) {
      if (!io::present(m.c, block[i])) continue;
      const TensorInfo& t = f.get(io::block_tensor_name(l, block[i].role, block[i].suffix));
      if (block[i].kind == io::TensorKind::Linear) L.mat[i] = ops::view_of(t);
      else L.vec[i] = to_f32(t);
    }
    m.compute_views(L);
  }
  m.kcache.resize(m.c.n_layers);
  m.vcache.resize(m.c.n_layers);
  m.repack_weights();
}

Model::RepackStats Model::repack_stats() const { return impl_->repack_stats; }

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
    m.embed_row(tokens[t], x + t * static_cast<size_t>(m.c.dim));
  }
}

void Model::forward_layer(int l, float* x, int n_seq, int len, const CaptureFn& capture) {
  impl_->run_sequences(l, x, x, n_seq, len, capture, -1);
}

void Model::logits(const float* x, int64_t n, float* logits) {
  Impl& m = *impl_;
  const int64_t dim = m.c.dim;
  constexpr int64_t kRows = 512;  // normed rows per matmul: bounded scratch whatever n is
  std::vector<float> normed(static_cast<size_t>(std::min(n, kRows) * dim));
  for (int64_t r0 = 0; r0 < n; r0 += kRows) {
    const int64_t rows = std::min(kRows, n - r0);
    for (int64_t t = 0; t < rows; ++t)
      ops::rmsnorm(normed.data() + t * dim, x + (r0 + t) * dim, m.output_norm.data(), static_cast<int>(dim), m.c.norm_eps);
    ops::matmul(m.output, normed.data(), static_cast<int>(rows), logits + r0 * m.c.n_vocab);
    m.final_softcap(logits + r0 * m.c.n_vocab, rows * m.c.n_vocab);
  }
}

void Model::capture_site(int l, const float* x, int n_seq, int len, LinearInput site, const CaptureFn& capture) {
  BlockPass(*this, l, x, n_seq, len).run_to(site, capture);
}

BlockPass::BlockPass(Model& model, int l, const float* x, int n_seq, int len)
    : model_(model), layer_(l), n_seq_(n_seq), len_(len), in_(x) {
  model_.impl_->check_layer_call(l, n_seq, len);
  reached_.assign(static_cast<size_t>(n_seq), -1);
}

void BlockPass::run_to(LinearInput site, int s0, int n, const Model::CaptureFn& capture) {
  if (s0 < 0 || n < 0 || s0 + n > n_seq_)
    fail("BlockPass", "sequences", std::to_string(s0) + ".." + std::to_string(s0 + n) + " outside 0.." + std::to_string(n_seq_));
  run(static_cast<int>(site), s0, n, &capture, nullptr);
}

void BlockPass::finish(float* out) { run(-1, 0, n_seq_, nullptr, out); }

// Chunks of whole sequences that stand at the same site (at most chunk_seqs of them): the saved state goes into the
// scratch, the block runs from there to stop_at (-1: the end), and what later calls need is saved again.
void BlockPass::run(int stop_at, int s0, int n, const Model::CaptureFn* capture, float* out) {
  Model::Impl& m = *model_.impl_;
  const ModelConfig& c = m.c;
  const size_t len = static_cast<size_t>(len_);
  const size_t dim = static_cast<size_t>(c.dim), qd = static_cast<size_t>(c.n_heads) * c.head_dim,
               ffn = static_cast<size_t>(c.ffn_dim);
  constexpr int kAttnOut = static_cast<int>(LinearInput::AttentionOutput), kFfn = static_cast<int>(LinearInput::Ffn),
                kFfnDown = static_cast<int>(LinearInput::FfnDown), kDone = kFfnDown + 1;
  const int target = stop_at < 0 ? kDone : stop_at;
  const int chunk = m.chunk_seqs(n_seq_, len_);
  for (int a = s0; a < s0 + n;) {
    const int from = reached_[a];
    if (from >= target)
      fail("BlockPass", "site", "sequence " + std::to_string(a) + " is already past " +
                                    (stop_at < 0 ? std::string("the block's end") : "site " + std::to_string(stop_at)));
    int b = a + 1;
    while (b < s0 + n && b - a < chunk && reached_[b] == from) ++b;
    const size_t rows = static_cast<size_t>(b - a) * len, first = static_cast<size_t>(a) * len;
    m.ensure_scratch(static_cast<int>(rows));
    auto grow = [&](std::vector<float>& v, size_t width) {
      if (v.empty()) v.resize(static_cast<size_t>(n_seq_) * len * width);
    };
    if (from < kFfn) std::memcpy(m.x.data(), in_ + first * dim, rows * dim * sizeof(float));
    else std::memcpy(m.x.data(), resid_.data() + first * dim, rows * dim * sizeof(float));
    if (from == kAttnOut) std::memcpy(m.att.data(), att_.data() + first * qd, rows * qd * sizeof(float));
    if (from == kFfnDown) std::memcpy(m.ffg.data(), ffn_.data() + first * ffn, rows * ffn * sizeof(float));
    m.layer(layer_, b - a, len_, 0, /*use_cache=*/false, capture, stop_at, from);
    if (stop_at == kAttnOut) {
      grow(att_, qd);
      std::memcpy(att_.data() + first * qd, m.att.data(), rows * qd * sizeof(float));
    }
    if (stop_at >= kFfn) {
      grow(resid_, dim);
      std::memcpy(resid_.data() + first * dim, m.x.data(), rows * dim * sizeof(float));
    }
    if (stop_at == kFfnDown) {
      grow(ffn_, ffn);
      std::memcpy(ffn_.data() + first * ffn, m.ffg.data(), rows * ffn * sizeof(float));
    }
    if (out) std::memcpy(out + first * dim, m.x.data(), rows * dim * sizeof(float));
    for (int s = a; s < b; ++s) reached_[s] = target;
    a = b;
  }
  // The attention outputs are not read once every sequence is past ffn_norm.
  if (!att_.empty() && *std::min_element(reached_.begin(), reached_.end()) >= kFfn) std::vector<float>().swap(att_);
}

void Model::replace_weight(const TensorInfo& t) {
  Impl& m = *impl_;
  auto set = [&](ops::WeightView& dst) {
    const ops::WeightView v = ops::view_of(t);
    if (dst.rows != v.rows || dst.cols != v.cols)
      fail(t.file, t.name, "shape " + t.shape_str() + " does not match the model's weight");
    dst = v;
  };
  const std::string& n = t.name;
  if (n == m.roles->token_embd) {
    const bool tied_output = m.c.tied_embeddings;
    set(m.tok_embd);
    if (tied_output) m.output = m.tok_embd;
    return;
  }
  if (n == m.roles->output && !m.c.tied_embeddings) return set(m.output);
  if (n == m.roles->output_norm) {
    if (t.numel() != m.c.dim) fail(t.file, n, "shape " + t.shape_str() + " does not match the model's vector");
    m.output_norm = to_f32(t);
    return;
  }
  if (auto ref = io::parse_block_tensor(*m.roles, n); ref && ref->layer < m.c.n_layers && io::present(m.c, *ref->role)) {
    Layer& L = m.layers[ref->layer];
    const size_t i = static_cast<size_t>(ref->role - m.roles->block.data());
    if (ref->role->kind == io::TensorKind::Linear) {
      set(L.mat[i]);
      return m.compute_views(L);
    }
    if (t.shape != io::shape_of(m.c, *ref->role))
      fail(t.file, n, "shape " + t.shape_str() + " does not match the model's vector");
    L.vec[i] = to_f32(t);
    return;
  }
  fail(t.file, n, "is not a weight of the model");
}

uint64_t Model::weight_bytes_per_token() const {
  const Impl& m = *impl_;
  auto bytes = [](const ops::WeightView& w) {  // what matmul reads: the repacked copy where there is one
    return w.repacked ? static_cast<uint64_t>(ops::repacked_bytes(*w.repacked)) : static_cast<uint64_t>(w.rows) * w.row_bytes;
  };
  uint64_t total = bytes(m.output) + m.tok_embd.row_bytes;
  for (const Layer& L : m.layers) {
    for (const ops::WeightView* w : {&L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down})
      if (w->rows > 0) total += bytes(*w);
    // MoE: the router and the experts a token uses (on average n_experts_used of n_experts)
    if (m.c.n_experts > 0) {
      total += bytes(L.router);
      uint64_t experts = 0;
      for (const auto* set : {&L.gate_e, &L.up_e, &L.down_e})
        for (const ops::WeightView& w : *set) experts += bytes(w);
      total += experts * static_cast<uint64_t>(m.c.n_experts_used) / static_cast<uint64_t>(m.c.n_experts);
    }
  }
  return total;
}

void Model::enable_profile(bool on) { impl_->profiling = on; }

void Model::set_f16_attention(bool on) { impl_->f16_attention = on; }

std::vector<std::pair<std::string, double>> Model::profile() const {
  return {impl_->prof.begin(), impl_->prof.end()};
}

void Model::reset_profile() { impl_->prof.clear(); }

}  // namespace lowbit
