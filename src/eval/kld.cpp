#include "lowbit/kld.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "lowbit/error.h"

namespace lowbit {

namespace {

// Per-row log-softmax normaliser: log p_i = (l_i - mx) - log_z. Same arithmetic as token_nll() so the nll of
// the target matches perplexity_tokens() bit for bit.
struct RowNorm {
  float mx;
  double log_z;
  int argmax;
};

RowNorm row_norm(const float* l, int n) {
  RowNorm r{l[0], 0.0, 0};
  for (int i = 1; i < n; ++i)
    if (l[i] > r.mx) r.mx = l[i], r.argmax = i;
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(l[i]) - r.mx);
  r.log_z = std::log(sum);
  return r;
}

double kl_rows(const float* b, const RowNorm& nb, const float* q, const RowNorm& nq, int n) {
  double kl = 0;
  for (int i = 0; i < n; ++i) {
    const double lpb = (static_cast<double>(b[i]) - nb.mx) - nb.log_z;
    const double lpq = (static_cast<double>(q[i]) - nq.mx) - nq.log_z;
    kl += std::exp(lpb) * (lpb - lpq);
  }
  return kl;
}

// Linear interpolation between order statistics at q * (n - 1); v sorted ascending, non-empty.
double quantile(const std::vector<double>& v, double q) {
  const double x = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(x);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (x - static_cast<double>(i)) * (v[i + 1] - v[i]);
}

// (mean, sqrt(var / (n - 1))) from sums, as llama.cpp's mean_and_uncertainty.
std::pair<double, double> mean_unc(double sum, double sum2, int64_t n) {
  const double m = sum / static_cast<double>(n);
  const double var = sum2 / static_cast<double>(n) - m * m;
  return {m, (var > 0 && n > 1) ? std::sqrt(var / static_cast<double>(n - 1)) : 0.0};
}

}  // namespace

double kl_divergence(const float* base_logits, const float* quant_logits, int n_vocab) {
  return kl_rows(base_logits, row_norm(base_logits, n_vocab), quant_logits, row_norm(quant_logits, n_vocab), n_vocab);
}

EvalResult evaluate_pair(Model& quant, Model& base, const std::vector<int32_t>& tokens, int32_t bos,
                         const EvalOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const int ctx = o.ctx;
  const int n_vocab = base.config().n_vocab;
  if (quant.config().n_vocab != n_vocab)
    fail(quant.file().path, "n_vocab",
         "the model has a vocabulary of " + std::to_string(quant.config().n_vocab) + " tokens but the base " +
             base.file().path + " has " + std::to_string(n_vocab) + "; both must share one vocabulary");
  if (ctx < 4) fail("", "--ctx", "context must be at least 4 tokens, got " + std::to_string(ctx));
  for (Model* m : {&quant, &base})
    if (ctx > m->max_context())
      fail(m->file().path, "--ctx",
           std::to_string(ctx) + " exceeds the model's context of " + std::to_string(m->max_context()));
  const int64_t max_chunks = static_cast<int64_t>(tokens.size()) / ctx;
  if (max_chunks < 1)
    fail("", "text", "the text has " + std::to_string(tokens.size()) + " tokens; at least " + std::to_string(ctx) +
                         " are needed for one window of --ctx " + std::to_string(ctx));
  const int chunks = static_cast<int>(o.chunks > 0 ? std::min<int64_t>(o.chunks, max_chunks) : max_chunks);
  const int first = ctx / 2;
  const int per = ctx - 1 - first;

  EvalResult r;
  r.ctx = ctx;
  r.chunks = chunks;
  r.text_tokens = static_cast<int64_t>(tokens.size());
  std::vector<float> lq(static_cast<size_t>(ctx) * n_vocab), lb(lq.size());
  std::vector<int32_t> window(ctx);
  std::vector<double> kld_all;
  kld_all.reserve(static_cast<size_t>(chunks) * per);
  std::vector<double> nq(per), nb(per), kl(per), dp(per);
  std::vector<char> same(per);
  double s_nq = 0, s_nq2 = 0, s_nb = 0, s_nb2 = 0, s_nqb = 0, s_kl = 0, s_kl2 = 0, s_dp = 0, s_dp2 = 0, s_dp4 = 0;
  int64_t n_same = 0, count = 0;
  for (int c = 0; c < chunks; ++c) {
    std::copy(tokens.begin() + static_cast<std::ptrdiff_t>(c) * ctx,
              tokens.begin() + static_cast<std::ptrdiff_t>(c + 1) * ctx, window.begin());
    if (bos >= 0) window[0] = bos;
    quant.forward(window, 0, lq.data(), true);
    base.forward(window, 0, lb.data(), true);
#pragma omp parallel for schedule(static)
    for (int k = 0; k < per; ++k) {
      const int j = first + k;
      const float* q = lq.data() + static_cast<size_t>(j) * n_vocab;
      const float* b = lb.data() + static_cast<size_t>(j) * n_vocab;
      const int32_t t = window[j + 1];
      const RowNorm rq = row_norm(q, n_vocab), rb = row_norm(b, n_vocab);
      nq[k] = rq.log_z - (static_cast<double>(q[t]) - rq.mx);
      nb[k] = rb.log_z - (static_cast<double>(b[t]) - rb.mx);
      kl[k] = kl_rows(b, rb, q, rq, n_vocab);
      dp[k] = std::exp(-nq[k]) - std::exp(-nb[k]);
      same[k] = rq.argmax == rb.argmax;
    }
    // Accumulate in position order (deterministic, and the same order as perplexity_tokens()).
    for (int k = 0; k < per; ++k) {
      s_nq += nq[k], s_nq2 += nq[k] * nq[k];
      s_nb += nb[k], s_nb2 += nb[k] * nb[k];
      s_nqb += nq[k] * nb[k];
      s_kl += kl[k], s_kl2 += kl[k] * kl[k];
      const double d2 = dp[k] * dp[k];
      s_dp += dp[k], s_dp2 += d2, s_dp4 += d2 * d2;
      r.dp_max_abs = std::max(r.dp_max_abs, std::fabs(dp[k]));
      n_same += same[k];
      kld_all.push_back(kl[k]);
      ++count;
    }
    r.running_kld.push_back(s_kl / static_cast<double>(count));
    if (o.on_chunk) o.on_chunk(c, r.running_kld.back(), static_cast<double>(n_same) / static_cast<double>(count));
  }
  const double n = static_cast<double>(count);
  r.scored = count;

  const auto [mq, uq] = mean_unc(s_nq, s_nq2, count);
  const auto [mb, ub] = mean_unc(s_nb, s_nb2, count);
  r.ppl_quant = std::exp(mq);
  r.ppl_quant_stderr = r.ppl_quant * uq;
  r.ppl_base = std::exp(mb);
  r.ppl_base_stderr = r.ppl_base * ub;
  const double var_q = s_nq2 / n - mq * mq, var_b = s_nb2 / n - mb * mb;
  const double cov = s_nqb / n - mq * mb;
  r.cor_ln_ppl = (var_q > 0 && var_b > 0) ? cov / std::sqrt(var_q * var_b) : 1.0;
  const double cov_unc = count > 1 ? cov / (n - 1) : 0.0;  // covariance of the two means
  r.ln_ppl_ratio = mq - mb;
  r.ln_ppl_ratio_stderr = std::sqrt(std::max(0.0, uq * uq + ub * ub - 2.0 * cov_unc));
  r.ppl_ratio = std::exp(r.ln_ppl_ratio);
  r.ppl_ratio_stderr = r.ppl_ratio * r.ln_ppl_ratio_stderr;
  r.ppl_delta = r.ppl_quant - r.ppl_base;
  const double ppl_cov = r.ppl_quant * r.ppl_base * cov_unc;
  r.ppl_delta_stderr = std::sqrt(std::max(
      0.0, r.ppl_quant_stderr * r.ppl_quant_stderr + r.ppl_base_stderr * r.ppl_base_stderr - 2.0 * ppl_cov));

  std::tie(r.kld_mean, r.kld_stderr) = mean_unc(s_kl, s_kl2, count);
  std::sort(kld_all.begin(), kld_all.end());
  r.kld_min = kld_all.front();
  r.kld_max = kld_all.back();
  r.kld_median = quantile(kld_all, 0.5);
  r.kld_p90 = quantile(kld_all, 0.9);
  r.kld_p99 = quantile(kld_all, 0.99);

  r.same_top = static_cast<double>(n_same) / n;
  r.same_top_stderr = count > 1 ? std::sqrt(r.same_top * (1.0 - r.same_top) / (n - 1)) : 0.0;

  std::tie(r.dp_mean, r.dp_stderr) = mean_unc(s_dp, s_dp2, count);
  const auto [mse, mse_unc] = mean_unc(s_dp2, s_dp4, count);
  r.dp_rms = std::sqrt(mse);
  r.dp_rms_stderr = r.dp_rms > 0 ? 0.5 * mse_unc / r.dp_rms : 0.0;

  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace lowbit
