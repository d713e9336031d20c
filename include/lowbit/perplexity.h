// lowbit: perplexity the way llama.cpp's perplexity tool measures it: tokenize the whole text (with BOS),
// cut it into non-overlapping windows of ctx tokens, put BOS first in each window, and score the predictions
// of the second half of each window (positions ctx/2 .. ctx-2 predicting the next token).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lowbit/model.h"
#include "lowbit/tokenizer.h"

namespace lowbit {

struct PerplexityOptions {
  int ctx = 512;
  int chunks = -1;  // <= 0: as many as the text holds
  // Tokens per forward call (<= 0: the whole window at once). 1 runs every token through the decode path
  // (GEMV on the weights as stored) instead of the batched prefill path.
  int batch = 0;
  // Called after each window with (chunk index, running PPL).
  std::function<void(int, double)> on_chunk;
};

struct PerplexityResult {
  int ctx = 0;
  int chunks = 0;
  int64_t text_tokens = 0;   // tokens in the whole text
  int64_t scored = 0;        // predictions scored
  double ppl = 0;
  double ppl_stderr = 0;     // llama.cpp's estimate: ppl * sqrt(var(nll) / (count - 1))
  double mean_nll = 0;
  std::vector<double> running;  // running PPL after each chunk
  double seconds = 0;
};

// Throws lowbit::Error when the text is too short for one window.
PerplexityResult perplexity(Model& model, const Tokenizer& tok, const std::string& text, const PerplexityOptions& o);

// Same, on already tokenized text.
PerplexityResult perplexity_tokens(Model& model, const std::vector<int32_t>& tokens, int32_t bos,
                                   const PerplexityOptions& o);

// Mean of -log softmax(logits)[target] helper exposed for tests: log-sum-exp computed in double.
double token_nll(const float* logits, int n_vocab, int32_t target);

}  // namespace lowbit
