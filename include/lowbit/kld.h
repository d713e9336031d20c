// lowbit: compare a (quantized) model against its base over the same text, the way llama.cpp's
// `perplexity --kl-divergence` does, but in one pass with both models loaded (no base-logits file).
//
// Both models run over the llama.cpp perplexity windows (non-overlapping windows of ctx tokens, BOS first,
// predictions of the second half scored: positions ctx/2 .. ctx-2). Per scored position, with log-softmax
// computed in double over the full vocabulary:
//   nll_q, nll_b   -log p(target) under quant / base              -> PPL of each side, as perplexity_tokens()
//   kld            sum_i p_b(i) * (log p_b(i) - log p_q(i))       = KL(base || quant), exact (llama.cpp drops
//                                                                   terms with log p_b < -16 and stores the
//                                                                   base log-probs in 16 bits; we do neither)
//   dp             p_q(target) - p_b(target)                       -> mean Δp, RMS Δp (llama.cpp's "RMS Δp")
//   same top       argmax p_q == argmax p_b                        -> llama.cpp's "Same top p" (top-1 agreement)
// Uncertainties follow llama.cpp: mean ± sqrt(var / (n - 1)); the PPL ratio/difference use the covariance of
// the two nll series; RMS Δp's from the delta method; same top p ± sqrt(p (1 - p) / (n - 1)).
// Percentiles of the per-position KLD interpolate linearly between order statistics at q * (n - 1).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "lowbit/model.h"

namespace lowbit {

struct EvalOptions {
  int ctx = 512;
  int chunks = -1;  // <= 0: as many as the text holds
  // Called after each window with (chunk index, running mean KLD, running same-top fraction).
  std::function<void(int, double, double)> on_chunk;
};

struct EvalResult {
  int ctx = 0;
  int chunks = 0;
  int64_t text_tokens = 0;
  int64_t scored = 0;  // positions compared

  // Perplexity of each side (identical to perplexity_tokens() on the same tokens).
  double ppl_quant = 0, ppl_quant_stderr = 0;
  double ppl_base = 0, ppl_base_stderr = 0;
  double cor_ln_ppl = 0;                    // correlation of the two per-position nll series
  double ln_ppl_ratio = 0, ln_ppl_ratio_stderr = 0;  // mean(nll_q - nll_b)
  double ppl_ratio = 0, ppl_ratio_stderr = 0;        // PPL(quant) / PPL(base)
  double ppl_delta = 0, ppl_delta_stderr = 0;        // PPL(quant) - PPL(base)

  // KL(base || quant) per position, in nats.
  double kld_mean = 0, kld_stderr = 0;
  double kld_median = 0, kld_p90 = 0, kld_p99 = 0, kld_max = 0, kld_min = 0;

  // Top-1 agreement (llama.cpp "Same top p"), as a fraction in [0, 1].
  double same_top = 0, same_top_stderr = 0;

  // Δp = p_quant(target) - p_base(target), as fractions.
  double dp_mean = 0, dp_stderr = 0;
  double dp_rms = 0, dp_rms_stderr = 0;
  double dp_max_abs = 0;

  std::vector<double> running_kld;  // running mean KLD after each chunk
  double seconds = 0;
};

// Throws lowbit::Error when the vocabulary sizes differ, ctx exceeds either model's context, or the text is
// too short for one window. `quant` and `base` may be the same Model.
EvalResult evaluate_pair(Model& quant, Model& base, const std::vector<int32_t>& tokens, int32_t bos,
                         const EvalOptions& o);

// Exposed for tests: KL(p || q) for the softmaxes of two logit vectors, in double.
double kl_divergence(const float* base_logits, const float* quant_logits, int n_vocab);

}  // namespace lowbit
