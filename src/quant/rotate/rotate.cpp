// Rotations folded into the weights (see rotate.h).
#include "quant/rotate/rotate.h"

#include <omp.h>

#include <cblas.h>

#include <Eigen/Dense>
#include <map>
#include <cmath>
#include <cstring>
#include <random>

#include "io/arch.h"
#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "ops/ops.h"

namespace lowbit::quant {

namespace {

bool is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

// In-place unnormalised Walsh-Hadamard transform of n = 2^k values (Sylvester order: H_ij = (-1)^popcount(i & j)).
void fwht(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

// rows x cols -> cols x rows
std::vector<float> transposed(const float* w, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[static_cast<size_t>(c * rows + r)] = w[r * cols + c];
  return t;
}

}  // namespace

Rotation::Rotation(int64_t n, uint64_t seed) : n_(n) {
  if (n <= 0) fail("rotate", "size", "must be positive");
  std::mt19937_64 rng(seed);
  if (is_pow2(n)) {
    signs_.resize(static_cast<size_t>(n));
    for (auto& s : signs_) s = (rng() & 1) ? -1.0f : 1.0f;
    return;
  }
  // Random orthogonal: Q of the QR factorisation of a Gaussian matrix, columns sign-fixed by R's diagonal so the
  // distribution is uniform (Haar).
  std::normal_distribution<double> g;
  Eigen::MatrixXd A(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) A(i, j) = g(rng);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(A);
  Eigen::MatrixXd Q = qr.householderQ();
  const Eigen::MatrixXd R = qr.matrixQR().triangularView<Eigen::Upper>();
  for (int64_t j = 0; j < n; ++j)
    if (R(j, j) < 0) Q.col(j) *= -1.0;
  dense_.resize(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) dense_[static_cast<size_t>(i * n + j)] = static_cast<float>(Q(i, j));
}

void Rotation::apply_rows(float* w, int64_t rows) const { apply(w, rows, false); }
void Rotation::apply_rows_inverse(float* w, int64_t rows) const { apply(w, rows, true); }

// row * Q, or row * Q^T when inverse. Hadamard: Q = diag(signs) H / sqrt(n) with H symmetric, so Q^T = H diag(signs)
// / sqrt(n): the signs go before the transform for Q and after it for Q^T.
void Rotation::apply(float* w, int64_t rows, bool inverse) const {
  const float norm = 1.0f / std::sqrt(static_cast<float>(n_));
  if (is_hadamard()) {
#pragma omp parallel for num_threads(lowbit::num_threads()) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* x = w + r * n_;
      if (!inverse)
        for (int64_t j = 0; j < n_; ++j) x[j] *= signs_[j];
      fwht(x, n_);
      for (int64_t j = 0; j < n_; ++j) x[j] *= inverse ? norm * signs_[j] : norm;
    }
    return;
  }
  std::vector<float> out(static_cast<size_t>(rows * n_));
  parallel_fixed_chunks(rows, 64, [&](int64_t r0, int64_t r1) {  // thread-count independent (lowbit/threads.h)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, inverse ? CblasTrans : CblasNoTrans, static_cast<blasint>(r1 - r0),
                static_cast<blasint>(n_), static_cast<blasint>(n_), 1.0f, w + r0 * n_, static_cast<blasint>(n_),
                dense_.data(), static_cast<blasint>(n_), 0.0f, out.data() + r0 * n_, static_cast<blasint>(n_));
  });
  std::memcpy(w, out.data(), out.size() * sizeof(float));
}

std::vector<double> Rotation::dense() const {
  std::vector<float> eye(static_cast<size_t>(n_ * n_), 0.0f);
  for (int64_t i = 0; i < n_; ++i) eye[static_cast<size_t>(i * n_ + i)] = 1.0f;
  apply_rows(eye.data(), n_);  // row i of I Q = row i of Q
  return {eye.begin(), eye.end()};
}

std::shared_ptr<const ModelFile> rotate_model(const ModelFile& src, const RotateOptions& o) {
  const ModelConfig& c = src.config;
  const io::ArchRoles& roles = io::arch_roles(c);
  if ((o.residual && !roles.transforms.rotate_residual) || (o.heads && !roles.transforms.rotate_heads))
    fail(src.path, "--method rotate", "the " + std::string(roles.family) + " graph does not allow this rotation" +
                                               (o.residual && !roles.transforms.rotate_residual
                                                    ? " (its post-norms re-normalise what each block adds to the residual stream)"
                                                    : ""));
  auto out = std::make_shared<ModelFile>();
  out->path = src.path;
  out->format = src.format;
  out->config = c;
  out->config.tied_embeddings = false;
  out->tokenizer = src.tokenizer;
  out->metadata = src.metadata;

  // Every tensor widened to f32 (rotations touch nearly all of them).
  std::map<std::string, std::vector<float>> w;
  for (const TensorInfo& t : src.tensors) {
    std::vector<float>& v = w[t.name];
    v.resize(static_cast<size_t>(t.numel()));
    if (t.shape.size() == 2) {
      const ops::WeightView view = ops::view_of(t);
      for (int64_t r = 0; r < view.rows; ++r) ops::get_row(view, r, v.data() + r * view.cols);
    } else {
      ops::widen_vector(t, v.data());
    }
  }
  const std::string embd(roles.token_embd), head(roles.output), out_norm(roles.output_norm);
  if (c.tied_embeddings) w[head] = w[embd];

  const Rotation R1(c.dim, o.seed);
  const Rotation R2(c.head_dim, o.seed ^ 0x9e3779b97f4a7c15ull);
  auto scale_cols = [](std::vector<float>& m, const std::vector<float>& g) {
    const size_t n = g.size();
    for (size_t k = 0; k < m.size(); ++k) m[k] *= g[k % n];
  };
  auto reads_stream = [&](std::vector<float>& m, const std::vector<float>& g) {  // W diag(g) Q
    scale_cols(m, g);
    if (o.residual) R1.apply_rows(m.data(), static_cast<int64_t>(m.size()) / c.dim);
  };
  auto writes_stream = [&](std::vector<float>& m) {  // Q^T W  ==  (W^T Q)^T
    if (!o.residual) return;
    const int64_t cols = static_cast<int64_t>(m.size()) / c.dim;
    std::vector<float> t = transposed(m.data(), c.dim, cols);
    R1.apply_rows(t.data(), cols);
    m = transposed(t.data(), cols, c.dim);
  };
  auto ones = [](std::vector<float>& g) { std::fill(g.begin(), g.end(), 1.0f); };

  if (o.residual) R1.apply_rows(w[embd].data(), c.n_vocab);
  for (int l = 0; l < c.n_layers; ++l) {
    auto T = [&](std::string_view role, std::string_view suffix = "weight") -> std::vector<float>& {
      return w.at(io::block_tensor_name(l, role, suffix));
    };
    for (const io::SiteRole& s : roles.sites) {
      if (s.producer != io::Producer::Norm) continue;
      std::vector<float>& g = T(s.producer_role);
      for (std::string_view lin : s.linears) reads_stream(T(lin), o.residual ? g : std::vector<float>(g.size(), 1.0f));
      if (o.residual) ones(g);
    }
    if (o.heads) {
      const int64_t hd = c.head_dim;
      // value rows of each KV head: R2^T B  ==  (B^T R2)^T
      for (const io::SiteRole& s : roles.sites) {
        if (s.producer != io::Producer::HeadsOfValue) continue;
        std::vector<float>& v = T(s.producer_role);
        for (int h = 0; h < c.n_kv_heads; ++h) {
          float* B = v.data() + static_cast<size_t>(h) * hd * c.dim;
          std::vector<float> t = transposed(B, hd, c.dim);
          R2.apply_rows(t.data(), c.dim);
          const std::vector<float> back = transposed(t.data(), c.dim, hd);
          std::copy(back.begin(), back.end(), B);
        }
        if (c.qkv_bias) R2.apply_rows(T(s.producer_role, "bias").data(), c.n_kv_heads);
        // attention-output columns of each query head: contiguous hd-wide segments of every row
        for (std::string_view lin : s.linears) R2.apply_rows(T(lin).data(), static_cast<int64_t>(T(lin).size()) / hd);
      }
    }
    for (const io::BlockTensorRole& r : roles.block)  // linears writing the stream
      if (r.kind == io::TensorKind::Linear && r.rows == io::Dim::Model && io::present(c, r)) writes_stream(T(r.role));
  }
  if (o.residual) {
    reads_stream(w[head], w[out_norm]);
    ones(w[out_norm]);
  }

  auto add = [&](const TensorInfo& like, const std::string& name) {
    auto buf = std::make_shared<std::vector<std::byte>>(w[name].size() * sizeof(float));
    std::memcpy(buf->data(), w[name].data(), buf->size());
    w.erase(name);
    TensorInfo t = like;
    t.name = name;
    t.dtype = DType::F32;
    t.data = buf->data();
    t.nbytes = buf->size();
    t.packed.clear();
    t.file = src.path + " (rotated)";
    out->owned.push_back(buf);
    out->tensors.push_back(std::move(t));
  };
  for (const TensorInfo& t : src.tensors) {
    add(t, t.name);
    if (c.tied_embeddings && t.name == embd) add(t, head);
  }
  return out;
}

}  // namespace lowbit::quant
