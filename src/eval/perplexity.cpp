#include "lowbit/perplexity.h"

#include <chrono>
#include <cmath>

#include "lowbit/error.h"

namespace lowbit {

double token_nll(const float* logits, int n_vocab, int32_t target) {
  float mx = logits[0];
  for (int i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return std::log(sum) - (static_cast<double>(logits[target]) - mx);
}

PerplexityResult perplexity_tokens(Model& model, const std::vector<int32_t>& tokens, int32_t bos,
                                   const PerplexityOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const int ctx = o.ctx;
  if (ctx < 4) fail("", "--ctx", "context must be at least 4 tokens, got " + std::to_string(ctx));
  if (ctx > model.max_context())
    fail(model.file().path, "--ctx",
         std::to_string(ctx) + " exceeds the model's context of " + std::to_string(model.max_context()));
  const int64_t max_chunks = static_cast<int64_t>(tokens.size()) / ctx;
  if (max_chunks < 1)
    fail("", "text", "the text has " + std::to_string(tokens.size()) + " tokens; at least " + std::to_string(ctx) +
                         " are needed for one window of --ctx " + std::to_string(ctx));
  const int chunks = static_cast<int>(o.chunks > 0 ? std::min<int64_t>(o.chunks, max_chunks) : max_chunks);
  const int n_vocab = model.config().n_vocab;
  const int first = ctx / 2;

  PerplexityResult r;
  r.ctx = ctx;
  r.chunks = chunks;
  r.text_tokens = static_cast<int64_t>(tokens.size());
  std::vector<float> logits(static_cast<size_t>(ctx) * n_vocab);
  std::vector<int32_t> window(ctx);
  double nll = 0, nll2 = 0;
  int64_t count = 0;
  for (int c = 0; c < chunks; ++c) {
    std::copy(tokens.begin() + static_cast<std::ptrdiff_t>(c) * ctx,
              tokens.begin() + static_cast<std::ptrdiff_t>(c + 1) * ctx, window.begin());
    if (bos >= 0) window[0] = bos;
    const int step = o.batch > 0 ? std::min(o.batch, ctx) : ctx;
    for (int p = 0; p < ctx; p += step) {
      const int len = std::min(step, ctx - p);
      model.forward(std::span<const int32_t>(window.data() + p, static_cast<size_t>(len)), p,
                    logits.data() + static_cast<size_t>(p) * n_vocab, true);
    }
    for (int j = first; j < ctx - 1; ++j) {
      const double v = token_nll(logits.data() + static_cast<size_t>(j) * n_vocab, n_vocab, window[j + 1]);
      nll += v;
      nll2 += v * v;
      ++count;
    }
    r.running.push_back(std::exp(nll / static_cast<double>(count)));
    if (o.on_chunk) o.on_chunk(c, r.running.back());
  }
  r.scored = count;
  r.mean_nll = nll / static_cast<double>(count);
  r.ppl = std::exp(r.mean_nll);
  double var = nll2 / static_cast<double>(count) - r.mean_nll * r.mean_nll;
  r.ppl_stderr = (var > 0 && count > 1) ? r.ppl * std::sqrt(var / static_cast<double>(count - 1)) : 0.0;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

PerplexityResult perplexity(Model& model, const Tokenizer& tok, const std::string& text, const PerplexityOptions& o) {
  std::vector<int32_t> tokens = tok.encode(text, tok.add_bos());
  return perplexity_tokens(model, tokens, tok.add_bos() ? tok.bos() : -1, o);
}

}  // namespace lowbit
