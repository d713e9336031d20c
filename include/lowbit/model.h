// lowbit: the Llama-family graph (Llama 1/2/3, Mistral, Qwen2, SmolLM, TinyLlama) as one graph with options:
// GQA/MQA, tied or separate output head, q/k/v bias, RoPE style and scaling. fp32 activations; weights are
// read in place from the model file (F32/F16/BF16). Batched prefill uses BLAS GEMM, decode a threaded GEMV.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "lowbit/model_file.h"

namespace lowbit {

// Inverse frequencies theta_i of the rotary embedding (rope_dim / 2 values) with the config's scaling applied
// ("freq_factors" reads the file's rope_freqs.weight; "longrope" its rope_factors_long.weight where `context`, the
// context the model runs with, exceeds the original one, else rope_factors_short.weight -- llama.cpp's rule).
std::vector<float> rope_inv_freq(const ModelConfig& c, const ModelFile& f, int context = 0);

// Which linear layers read a captured input: Attention feeds attn_q/k/v, AttentionOutput feeds attn_output,
// Ffn feeds ffn_gate/ffn_up, FfnDown feeds ffn_down. The values are the sites of the role table (io/arch.h).
enum class LinearInput { Attention = 0, AttentionOutput = 1, Ffn = 2, FfnDown = 3 };

class Model {
 public:
  // Sees the input rows (rows x cols, row-major) of a layer's linear layers during forward_layer.
  using CaptureFn = std::function<void(int layer, LinearInput which, const float* x, int64_t rows, int64_t cols)>;

  // max_context: positions the KV cache may hold (0: the model's context length). The cache grows on demand.
  explicit Model(std::shared_ptr<const ModelFile> file, int max_context = 0);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const;
  const ModelFile& file() const;
  int max_context() const;

  // Runs `tokens` at positions pos .. pos+n-1, appending their keys/values to the cache (positions >= pos are
  // overwritten). Writes logits for every position (n x n_vocab) when all_logits, else for the last one only.
  // Throws lowbit::Error for token ids outside the vocabulary or positions past max_context.
  void forward(std::span<const int32_t> tokens, int pos, float* logits, bool all_logits);

  // Calibration building blocks. embed: hidden states (n x dim) of the tokens. forward_layer: runs block l on
  // n_seq independent sequences of len tokens each (x: n_seq x len x dim, positions 0..len-1 in every sequence)
  // in place, batched: a chunk of whole sequences (up to ~4096 rows) goes through each matmul as one GEMM and
  // attention is GEMMs per (sequence, head). capture (may be empty) sees each linear layer's input once per chunk,
  // rows = the chunk's sequences x len, chunks in sequence order: over the call, every row once, in sequence
  // order (accumulate in the callback). The KV cache is not touched.
  // Running embed and every layer in turn equals forward() up to the final norm.
  void embed(std::span<const int32_t> tokens, float* x);
  void forward_layer(int l, float* x, int n_seq, int len, const CaptureFn& capture);
  // Runs block l on the sequences in x only as far as the input of `site`, hands it to capture and stops;
  // x is not modified. (One site of a fresh BlockPass.)
  void capture_site(int l, const float* x, int n_seq, int len, LinearInput site, const CaptureFn& capture);
  // The head on hidden states that came out of the last block: the final norm, then the output matrix.
  // x: n x dim, logits: n x n_vocab. (embed, forward_layer for every layer, then logits equals forward.)
  void logits(const float* x, int64_t n, float* logits);
  // Replaces a tensor (t.name canonical, same shape, F32/F16/BF16) by t's values: a weight matrix (e.g. its
  // quantized decoding; the caller keeps t's bytes alive while the model uses them) or a norm / bias vector
  // (copied), e.g. after an equivalence transform.
  void replace_weight(const TensorInfo& t);

  // Batched attention (forward_layer, BlockPass) as llama.cpp's CPU graph computes it with its default F16 KV cache
  // and without flash attention: q, k and v rounded to f16, and the softmax weights too before they multiply v.
  // For statistics meant to match llama.cpp's own (lowbit imatrix); off by default (f32 throughout).
  void set_f16_attention(bool on);

  // Bytes of weights one decode step reads (every matrix once, plus one embedding row).
  uint64_t weight_bytes_per_token() const;

  // The matrices repacked at load for this CPU's kernels (ops::repack_for_kernels; LOWBIT_REPACK=0 turns it off):
  // how many, their bytes, and the seconds it took.
  struct RepackStats {
    int matrices = 0;
    uint64_t bytes = 0;
    double seconds = 0;
  };
  RepackStats repack_stats() const;

  // Time spent per op kind since the last reset (for bench --profile). Off unless enabled.
  void enable_profile(bool on);
  std::vector<std::pair<std::string, double>> profile() const;  // op -> seconds
  void reset_profile();

 private:
  friend class BlockPass;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Block l of a model on n_seq sequences of len tokens (x: n_seq x len x dim, as forward_layer), run a site at a time
// for true-sequential calibration: run_to(site) takes each sequence from where the previous call left it to the
// input of `site` -- the linears it has passed computed with the weights they had then, the ones after with the
// model's weights now (replace_weight in between) -- so a block's matmuls run once in all, not once per site. It
// keeps what the rest of the block needs (the attention output, the residual stream after attention, the input of
// ffn_down: up to n_seq x len x (q dim + dim + ffn) floats). finish() completes the block. The result equals
// forward_layer's with each linear's weights as they were when the pass went through it. x must stay alive and
// unchanged until finish, which may write its output over it.
class BlockPass {
 public:
  BlockPass(Model& model, int l, const float* x, int n_seq, int len);
  // Sequences [s0, s0 + n): capture (may be empty) sees the input of every site after where each of them stands, up
  // to `site`, in chunks of whole sequences in sequence order. A sequence already at or past `site` is an error.
  void run_to(LinearInput site, int s0, int n, const Model::CaptureFn& capture);
  void run_to(LinearInput site, const Model::CaptureFn& capture) { run_to(site, 0, n_seq_, capture); }
  // Every sequence through the end of the block into out (n_seq x len x dim; may be x).
  void finish(float* out);

 private:
  void run(int stop_at, int s0, int n, const Model::CaptureFn* capture, float* out);
  Model& model_;
  int layer_, n_seq_, len_;
  const float* in_;
  std::vector<int> reached_;               // per sequence: the last site whose input it reached (-1: none)
  std::vector<float> att_, resid_, ffn_;  // n_seq x len x (q dim | dim | ffn): attention output, h, ffn_down input
};

}  // namespace lowbit
