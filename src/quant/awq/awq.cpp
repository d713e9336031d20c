// AWQ: per-channel scales folded into the producer of each site, and the clipping search (see awq.h).
#include "quant/awq/awq.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include "lowbit/error.h"
#include "lowbit/threads.h"

namespace lowbit::quant {

namespace awq {

std::vector<float> scales_for(const std::vector<double>& mean_abs, double alpha) {
  std::vector<float> s(mean_abs.size());
  double mx = 0, mn = std::numeric_limits<double>::infinity();
  std::vector<double> v(mean_abs.size());
  for (size_t j = 0; j < s.size(); ++j) {
    v[j] = std::pow(std::max(mean_abs[j], 1e-4), alpha);
    mx = std::max(mx, v[j]);
    mn = std::min(mn, v[j]);
  }
  const double norm = std::sqrt(mx * mn);
  for (size_t j = 0; j < s.size(); ++j) s[j] = static_cast<float>(v[j] / norm);
  return s;
}

double output_error(const float* W, const float* Q, int64_t rows, int64_t n, const std::vector<float>& H) {
  std::vector<float> E(static_cast<size_t>(rows * n)), EH(static_cast<size_t>(rows * n));
  for (size_t k = 0; k < E.size(); ++k) E[k] = W[k] - Q[k];
  // Rows in fixed chunks (thread-count independent, lowbit/threads.h), each chunk's sum kept apart and added in order.
  const int64_t chunk = 32;
  std::vector<double> part(static_cast<size_t>((rows + chunk - 1) / chunk), 0.0);
  parallel_fixed_chunks(rows, chunk, [&](int64_t r0, int64_t r1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(r1 - r0), static_cast<blasint>(n),
                static_cast<blasint>(n), 1.0f, E.data() + r0 * n, static_cast<blasint>(n), H.data(),
                static_cast<blasint>(n), 0.0f, EH.data() + r0 * n, static_cast<blasint>(n));
    double sum = 0;
    for (int64_t k = r0 * n; k < r1 * n; ++k) sum += static_cast<double>(E[static_cast<size_t>(k)]) * EH[static_cast<size_t>(k)];
    part[static_cast<size_t>(r0 / chunk)] = sum;
  });
  double total = 0;
  for (double v : part) total += v;
  return total;
}

SiteChoice search_site(const std::vector<const float*>& W, const std::vector<int64_t>& rows,
                       const std::vector<const formats::Format*>& fmts, int64_t n, const SiteStats& stats,
                       const std::vector<double>& mean_abs, int grid) {
  const std::vector<float> H(stats.hessian.H.begin(), stats.hessian.H.end());
  auto rtn = make_quantizer("rtn");
  SiteChoice best;
  double best_loss = std::numeric_limits<double>::infinity();
  for (int g = 0; g < grid; ++g) {
    const std::vector<float> s = scales_for(mean_abs, static_cast<double>(g) / grid);
    double loss = 0;
    for (size_t k = 0; k < W.size(); ++k) {
      const size_t count = static_cast<size_t>(rows[k] * n);
      std::vector<float> Ws(count);
      for (size_t e = 0; e < count; ++e) Ws[e] = W[k][e] * s[e % static_cast<size_t>(n)];
      QuantResult q = rtn->quantize(Ws.data(), rows[k], n, *fmts[k], nullptr);
      for (size_t e = 0; e < count; ++e) q.dequant[e] /= s[e % static_cast<size_t>(n)];
      loss += output_error(W[k], q.dequant.data(), rows[k], n, H);
    }
    best.losses.push_back(loss);
    if (loss < best_loss) {  // strict: ties keep the smaller alpha (alpha = 0 is plain RTN)
      best_loss = loss;
      best.alpha_index = g;
      best.scales = s;
    }
  }
  return best;
}

}  // namespace awq

namespace {

class Awq final : public BlockTransform {
 public:
  explicit Awq(const QuantOptions& q) : grid_(q.awq_grid), clip_(q.awq_clip), alpha_(q.awq_alpha) {
    if (grid_ < 1) fail("awq", "grid", "must be >= 1");
  }
  std::string name() const override { return "awq"; }

  void apply(BlockWork& w, std::string_view solver) const override {
    const ModelConfig& c = *w.config;
    for (const io::SiteRole& site : w.roles->sites) scale_site(w, site, c);
    if (clip_ && solver == "rtn")
      for (size_t i = 0; i < w.roles->block.size(); ++i) clip_linear(w, i);
  }

 private:
  void scale_site(BlockWork& w, const io::SiteRole& site, const ModelConfig& c) const {
    if (!site.scalable) return;  // the producer is a slice of a fused matrix (Phi-3): nothing to fold into
    SiteStats& st = w.sites[static_cast<int>(site.site)];
    const int64_t n = io::dim_size(c, site.width);
    if (st.hessian.cols != n || static_cast<int64_t>(st.mean_abs.size()) != n)
      fail("awq", std::string(site.name), "statistics of this input are missing");
    std::vector<const float*> W;
    std::vector<int64_t> rows;
    std::vector<const formats::Format*> fmts;
    for (std::string_view lin : site.linears) {
      const size_t i = w.index(lin);
      if (w.values[i].empty() || !w.formats[i]) continue;  // kept linears are scaled below but not scored
      W.push_back(w.values[i].data());
      rows.push_back(w.rows(i));
      fmts.push_back(w.formats[i].get());
    }
    if (W.empty()) return;
    std::vector<double> m = st.mean_abs;
    if (site.producer == io::Producer::HeadsOfValue) {
      // One scale per (KV head, d): average mean|x| over the query heads that read that value row.
      const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
      for (int kv = 0; kv < c.n_kv_heads; ++kv)
        for (int d = 0; d < hd; ++d) {
          double sum = 0;
          for (int g = 0; g < group; ++g) sum += st.mean_abs[static_cast<size_t>((kv * group + g) * hd + d)];
          for (int g = 0; g < group; ++g) m[static_cast<size_t>((kv * group + g) * hd + d)] = sum / group;
        }
    }
    awq::SiteChoice choice;
    if (alpha_ >= 0) {
      choice.scales = awq::scales_for(m, alpha_);
      choice.alpha_index = alpha_ > 0 ? 1 : 0;
    } else {
      choice = awq::search_site(W, rows, fmts, n, st, m, grid_);
    }
    const std::vector<float>& s = choice.scales;
    if (choice.alpha_index == 0) return;  // s == 1 up to rounding: leave the weights bit-exact
    // Fold: every linear reading the site W diag(s), the producer divided by s.
    for (std::string_view lin : site.linears) {
      std::vector<float>& v = w.at(lin);
      for (size_t e = 0; e < v.size(); ++e) v[e] *= s[e % static_cast<size_t>(n)];
    }
    std::vector<float>& p = w.at(site.producer_role);
    switch (site.producer) {
      case io::Producer::Norm:
        for (int64_t j = 0; j < n; ++j) p[j] /= s[j];
        break;
      case io::Producer::HeadsOfValue: {
        // value row (kv, d) is divided by the scale its group shares (the first query head's copy)
        const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
        const size_t bias = w.index(site.producer_role, "bias");
        for (int kv = 0; kv < c.n_kv_heads; ++kv)
          for (int d = 0; d < hd; ++d) {
            const float sc = s[static_cast<size_t>(kv * group * hd + d)];
            const int64_t row = static_cast<int64_t>(kv) * hd + d;
            for (int64_t k = 0; k < c.dim; ++k) p[static_cast<size_t>(row * c.dim + k)] /= sc;
            if (!w.values[bias].empty()) w.values[bias][static_cast<size_t>(row)] /= sc;
          }
        break;
      }
      case io::Producer::Elementwise: {
        const int64_t cols = static_cast<int64_t>(p.size()) / n;
        for (int64_t j = 0; j < n; ++j)
          for (int64_t k = 0; k < cols; ++k) p[static_cast<size_t>(j * cols + k)] /= s[j];
        break;
      }
    }
    // The site's input is now x / s: its statistics follow exactly.
    LayerStats& H = st.hessian;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) H.H[static_cast<size_t>(i * n + j)] /= static_cast<double>(s[i]) * s[j];
      H.act_sq_mean[i] /= static_cast<double>(s[i]) * s[i];
      st.mean_abs[i] /= s[i];
    }
  }

  // AutoAWQ's auto_clip on one linear: per (row, format block), the clamp range with the least block output error.
  void clip_linear(BlockWork& w, size_t i) const {
    const io::BlockTensorRole& role = w.roles->block[i];
    if (role.kind != io::TensorKind::Linear || role.feeds_scores || !w.formats[i] || w.values[i].empty()) return;
    const formats::Format& fmt = *w.formats[i];
    const SiteStats& st = w.sites[static_cast<int>(role.site)];
    const int64_t rows = w.rows(i), n = w.cols(i), b = fmt.block(), nblocks = formats::row_blocks(fmt, n);
    const std::vector<double>& H = st.hessian.H;
    std::vector<float>& W = w.values[i];
    const int steps = grid_ / 2 + 1;
#pragma omp parallel for num_threads(lowbit::num_threads()) schedule(dynamic, 8)
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> wc(static_cast<size_t>(b)), q(static_cast<size_t>(b));
      std::vector<std::byte> enc(fmt.block_bytes());
      for (int64_t k = 0; k < nblocks; ++k) {
        const int64_t len = std::min(b, n - k * b);
        float* wb = W.data() + r * n + k * b;
        float mx = 0;
        for (int64_t t = 0; t < len; ++t) mx = std::max(mx, std::fabs(wb[t]));
        if (mx == 0) continue;
        double best = std::numeric_limits<double>::infinity();
        float best_max = mx;
        for (int step = 0; step < steps; ++step) {
          const float lim = mx * (1.0f - static_cast<float>(step) / grid_);
          for (int64_t t = 0; t < len; ++t) wc[t] = std::clamp(wb[t], -lim, lim);
          const std::span<const float> span(wc.data(), static_cast<size_t>(len));
          const formats::BlockParams p = formats::fit_block(fmt, span, {});
          formats::encode_block(fmt, span, p, enc.data());
          formats::decode_block(fmt, enc.data(), std::span<float>(q.data(), static_cast<size_t>(len)));
          double err = 0;  // e^T H_bb e over the block's columns
          for (int64_t a = 0; a < len; ++a) {
            const double ea = static_cast<double>(q[a]) - wb[a];
            const double* Ha = H.data() + static_cast<size_t>((k * b + a) * n + k * b);
            double acc = 0;
            for (int64_t c2 = 0; c2 < len; ++c2) acc += Ha[c2] * (static_cast<double>(q[c2]) - wb[c2]);
            err += ea * acc;
          }
          if (err < best) best = err, best_max = lim;
        }
        if (best_max < mx)
          for (int64_t t = 0; t < len; ++t) wb[t] = std::clamp(wb[t], -best_max, best_max);
      }
    }
  }

  int grid_;
  bool clip_;
  double alpha_;
};

}  // namespace

std::unique_ptr<BlockTransform> make_awq_transform(const QuantOptions& q) { return std::make_unique<Awq>(q); }

}  // namespace lowbit::quant
