// GPTQ (Frantar et al. 2022): columns are quantized left to right and each column's rounding error is spread
// over the not-yet-quantized columns through the upper Cholesky factor U of H^-1 (H^-1 = U^T U):
//   err = (w_j - q_j) / U_jj,   w_k -= err * U_jk  (k > j).
// U comes from one Cholesky factorization and one triangular inverse (LAPACK potrf + trtri on the reversed H, see
// inverse_cholesky_upper), never from an explicit H^-1.
// Updates inside a lazy batch of block_size columns are applied immediately; the rest of the row gets them in one
// BLAS dgemm per batch. Rows are independent given U, so rows are processed in fixed chunks in parallel.
// U depends only on H and the options, so a call with the same H as the previous one on its thread (q, k and v
// read one input, as do gate and up) reuses it; the working matrices are kept per thread between calls.
//
// Format blocks: when the pass reaches the first column of a block, fmt.fit runs on that block's current
// (error-updated) weights; the batch width is a multiple of fmt.block() so a block never straddles two batches.
// act_order processes columns by decreasing diag(H); it uses static groups (all block params fitted on the original
// weights first), so the stored layout is exactly the plain one and needs no permutation at inference.
//
// detail::gptq_solve (gptq_core.h) is the whole method; GPTAQ (gptaq/) is the same pass started from other weights.
#include <cblas.h>
#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <bit>
#include <numeric>
#include <optional>
#include <span>

#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "ops/ops.h"
#include "quant/gptq_core.h"
#include "quant/quantizer.h"

extern "C" {
// LAPACK from OpenBLAS (Fortran symbols; no LAPACKE header on this system).
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info);
}

namespace lowbit::quant {
namespace {

using detail::MatD;
using detail::MatDMap;

// Per-thread working storage of solve(), grown to the largest layer seen and kept.
struct Scratch {
  std::vector<double> w;  // rows x cols: the weights, updated in place by the pass
  std::vector<double> h;  // cols x cols: permuted H, then U
  // h holds the U of the H and options with this key (the layers that read one input -- q, k and v; gate and
  // up -- share their H, so their U is computed once).
  std::optional<uint64_t> u_key;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// A 64-bit fingerprint of n doubles' bits: four multiply / xor-shift lanes (each step a bijection of the lane, so
// a single changed value always changes its lane), mixed at the end; ~10 GB/s, against a factorization that takes
// seconds. Two different Hessians share a key with probability ~2^-64.
uint64_t fingerprint(const double* p, size_t n, uint64_t seed) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t lane[4] = {seed ^ 0x243F6A8885A308D3ull, seed ^ 0x13198A2E03707344ull, seed ^ 0xA4093822299F31D0ull,
                      seed ^ 0x082EFA98EC4E6C89ull};
  auto step = [](uint64_t h, uint64_t w) {
    h = (h ^ w) * kMul;
    return h ^ (h >> 32);
  };
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int l = 0; l < 4; ++l) lane[l] = step(lane[l], std::bit_cast<uint64_t>(p[i + l]));
  for (; i < n; ++i) lane[0] = step(lane[0], std::bit_cast<uint64_t>(p[i]));
  uint64_t h = n;
  for (uint64_t v : lane) h = step(h, v) * kMul;
  return h ^ (h >> 29);
}

class GptqQuantizer final : public Quantizer {
 public:
  explicit GptqQuantizer(const QuantOptions& opts) : opts_(opts) {}
  std::string name() const override { return "gptq"; }

  QuantResult quantize(const float* W, int64_t rows, int64_t cols, const formats::Format& fmt,
                       const LayerStats* stats) const override {
    return solve(W, rows, cols, fmt, stats, "gptq", {});
  }

  QuantResult solve(const float* W, int64_t rows, int64_t cols, const formats::Format& fmt, const LayerStats* stats,
                    const char* who, const detail::GptqStartHook& start) const {
    QuantResult res;
    res.rows = rows;
    res.cols = cols;
    res.row_bytes = detail::checked_row_bytes(fmt, rows, cols, who);
    detail::check_finite(W, rows, cols, who);
    if (stats == nullptr) fail(who, "stats", "GPTQ needs the layer's input Hessian (calibration statistics)");
    if (stats->cols != cols || static_cast<int64_t>(stats->H.size()) != cols * cols)
      fail(who, "stats.cols", "does not match the weight matrix (" + std::to_string(stats->cols) + " vs " +
                                  std::to_string(cols) + ")");
    if (opts_.percdamp < 0) fail(who, "percdamp", "must be >= 0");
    const int64_t n = cols;
    const int64_t gb = fmt.block();
    const int64_t nblocks = formats::row_blocks(fmt, n);  // the last block may be partial
    auto blen = [&](int64_t k) { return std::min(gb, n - k * gb); };
    const bool static_groups = opts_.static_groups || opts_.act_order;

    // Working buffers, reused from call to call on this thread: on a VM that faults every fresh page in, a new
    // n x n matrix (254 MB at n = 5632) costs more than factoring it.
    Scratch& sc = scratch();

    // Dead columns (diag H == 0: the input is always zero): H_jj = 1, weight column zeroed (after the start hook,
    // which may still read them). Weights in double.
    const double* H = stats->H.data();
    std::vector<double> hdiag(static_cast<size_t>(n));
    std::vector<int64_t> dead;
    sc.w.resize(static_cast<size_t>(rows * n));
    MatDMap Wd(sc.w.data(), rows, n);
    Wd = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(W, rows, n)
             .cast<double>();
    for (int64_t j = 0; j < n; ++j) {
      hdiag[j] = H[j * n + j];
      if (hdiag[j] == 0.0) {
        hdiag[j] = 1.0;
        dead.push_back(j);
      }
    }
    // The fits' importance: given per column (an imatrix file), else diag(H) with --importance.
    std::vector<float> importance;
    if (!stats->importance.empty()) {
      if (static_cast<int64_t>(stats->importance.size()) != n)
        fail(who, "importance", std::to_string(stats->importance.size()) + " values for " + std::to_string(n) +
                                    " columns");
      importance = stats->importance;
    } else if (opts_.use_importance) {
      importance.resize(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) importance[j] = static_cast<float>(hdiag[j]);
    }

    // Column order.
    std::vector<int64_t> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    if (opts_.act_order)
      std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return hdiag[a] > hdiag[b]; });
    // The only n x n working matrix: permuted H, factored in place into U (a layer with 11008 inputs needs ~1 GB).
    // U depends only on H, percdamp and the column order (itself a function of H and act_order): when the previous
    // call on this thread had the same, its U is still in the scratch.
    const uint64_t u_key = fingerprint(H, static_cast<size_t>(n * n),
                                       std::bit_cast<uint64_t>(opts_.percdamp) ^ (opts_.act_order ? 1 : 0));
    const bool reuse_u = sc.u_key == u_key && sc.h.size() == static_cast<size_t>(n * n);
    sc.u_key.reset();
    sc.h.resize(static_cast<size_t>(n * n));
    MatDMap U(sc.h.data(), n, n);
    if (!reuse_u) {
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < n; ++j) U(i, j) = H[perm[i] * n + perm[j]];
        U(i, i) = hdiag[perm[i]];
      }
      inverse_cholesky_upper(U, who);
    }
    sc.u_key = u_key;
    if (start) start(Wd, U, perm);
    for (int64_t j : dead) Wd.col(j).setZero();

    // Each block's params: fitted up front (static groups, from the starting dead-zeroed weights) or during the
    // pass when it reaches the block's first column.
    std::vector<formats::BlockParams> params(static_cast<size_t>(rows * nblocks));
    if (static_groups) {
#pragma omp parallel for num_threads(lowbit::num_threads()) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<float> w(static_cast<size_t>(gb));
        for (int64_t k = 0; k < nblocks; ++k) {
          const int64_t len = blen(k);
          for (int64_t i = 0; i < len; ++i) w[i] = static_cast<float>(Wd(r, k * gb + i));
          params[r * nblocks + k] = formats::fit_block(fmt, std::span<const float>(w.data(), static_cast<size_t>(len)),
                                                       block_importance(importance, k, gb, len));
        }
      }
    }

    // The weights in pass order, in place (the static groups above were fitted in the original order).
    if (opts_.act_order) {
#pragma omp parallel for num_threads(lowbit::num_threads()) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<double> row(Wd.data() + r * n, Wd.data() + (r + 1) * n);
        for (int64_t j = 0; j < n; ++j) Wd(r, j) = row[static_cast<size_t>(perm[j])];
      }
    }
    MatDMap& Wp = Wd;

    const int vs = fmt.vector_size();  // > 1: vectors re-chosen at their first column (round_vector)
    // Lazy batch width: a multiple of the format block so a block's fit sees fully updated weights.
    int64_t B = std::max<int64_t>(1, opts_.block_size);
    B = std::max<int64_t>(gb, (B / gb) * gb);

    // Pre-rounding (updated) weights in original column order: encode() of them stores exactly the chosen values.
    // They are floats; they wait in res.dequant, which the encoding below overwrites block by block with the
    // decoded values after reading them.
    res.dequant.resize(static_cast<size_t>(rows * n));
    float* Wpre = res.dequant.data();
    // Rows per task: a fixed count (the dgemm of a chunk must not depend on the thread count, or neither would the
    // result), large enough that each batch's dgemm reuses a U panel over many rows. A task updates its rows of Wp
    // in place.
    const int64_t chunk = 64;
    const int64_t nchunks = (rows + chunk - 1) / chunk;
    ops::BlasOnCallingThread single;  // each task's dgemm on its own thread
#pragma omp parallel for num_threads(lowbit::num_threads()) schedule(dynamic)
    for (int64_t c = 0; c < nchunks; ++c) {
      const int64_t r0 = c * chunk;
      const int64_t nr = std::min(chunk, rows - r0);
      double* Wc = Wp.data() + r0 * n;  // nr rows, stride n
      MatD Err(nr, B);
      std::vector<float> wblk(static_cast<size_t>(gb));
      for (int64_t i1 = 0; i1 < n; i1 += B) {
        const int64_t i2 = std::min(i1 + B, n);
        const int64_t cnt = i2 - i1;
        for (int64_t i = i1; i < i2; ++i) {
          const int64_t col = perm[i];  // original column
          const int64_t blk = col / gb;
          const int idx = static_cast<int>(col % gb);
          if (!static_groups && idx == 0) {
            // (no permutation here: i == col) fit on the current weights of this block, for each row
            const int64_t len = blen(blk);
            for (int64_t r = 0; r < nr; ++r) {
              for (int64_t t = 0; t < len; ++t) wblk[t] = static_cast<float>(Wc[r * n + i + t]);
              params[(r0 + r) * nblocks + blk] =
                  formats::fit_block(fmt, std::span<const float>(wblk.data(), static_cast<size_t>(len)),
                                     block_importance(importance, blk, gb, len));
            }
          } else if (!static_groups && vs > 1 && idx % vs == 0 && idx + vs <= blen(blk)) {
            // A vector format: the next vector chosen on its current weights (the error of every earlier column,
            // this block's included, fed forward), at the block's fitted scales.
            // (The fit's importance weights the choice: on synth256 IQ2_XS it gave mean KLD 0.239, against 0.252
            // with uniform weights and 0.265 with GPTQ's own 1 / U_ii^2.)
            const std::span<const float> bimp = block_importance(importance, blk, gb, blen(blk));
            const std::span<const float> vimp = bimp.empty() ? bimp : bimp.subspan(static_cast<size_t>(idx), static_cast<size_t>(vs));
            for (int64_t r = 0; r < nr; ++r) {
              for (int64_t t = 0; t < vs; ++t) wblk[t] = static_cast<float>(Wc[r * n + i + t]);
              fmt.round_vector(std::span<const float>(wblk.data(), static_cast<size_t>(vs)), vimp, idx,
                               params[(r0 + r) * nblocks + blk]);
            }
          }
          const double d = U(i, i);
          const double* Ui = U.data() + i * n;
          for (int64_t r = 0; r < nr; ++r) {
            const formats::BlockParams& p = params[(r0 + r) * nblocks + blk];
            double* wr = Wc + r * n;
            const double w = wr[i];
            const float wf = static_cast<float>(w);
            const double q = fmt.round(wf, p, idx);
            Wpre[(r0 + r) * n + col] = wf;
            const double e = (w - q) / d;
            Err(r, i - i1) = e;
            ops::sub_scaled(e, Ui + i + 1, wr + i + 1, i2 - i - 1);
          }
        }
        // The rest of the row: W[:, i2:] -= Err * U[i1:i2, i2:].
        if (i2 < n)
          cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(nr), static_cast<blasint>(n - i2),
                      static_cast<blasint>(cnt), -1.0, Err.data(), static_cast<blasint>(B), U.data() + i1 * n + i2,
                      static_cast<blasint>(n), 1.0, Wc + i2, static_cast<blasint>(n));
      }
    }

    // Encode with the params each block was rounded under; decode for the f32 result (over the pre-rounding
    // weights of the same block, read first).
    res.data.resize(res.row_bytes * static_cast<size_t>(rows));
    const size_t bb = fmt.block_bytes();
#pragma omp parallel for num_threads(lowbit::num_threads()) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> w(static_cast<size_t>(gb));
      for (int64_t k = 0; k < nblocks; ++k) {
        const auto len = static_cast<size_t>(blen(k));
        float* blk = res.dequant.data() + r * n + k * gb;
        std::copy(blk, blk + len, w.begin());
        std::byte* out = res.data.data() + static_cast<size_t>(r) * res.row_bytes + static_cast<size_t>(k) * bb;
        formats::encode_block(fmt, std::span<const float>(w.data(), len), params[r * nblocks + k], out);
        formats::decode_block(fmt, out, std::span<float>(blk, len));
      }
    }
    return res;
  }

 private:
  static std::span<const float> block_importance(const std::vector<float>& imp, int64_t k, int64_t gb, int64_t len) {
    if (imp.empty()) return {};
    return std::span<const float>(imp.data() + k * gb, static_cast<size_t>(len));
  }

  // Upper Cholesky factor U of (H + damp I)^-1 = U^T U, in place, with LAPACK (OpenBLAS, threaded): one potrf and
  // one trtri, n^3 / 3 flops each (an explicit inverse, potri, and a second potrf of it cost twice that).
  // With R the reversal permutation, R A R = L L^T (potrf) gives A = V V^T for the upper triangular V = R L R, so
  // A^-1 = V^-T V^-1 and U = V^-1 = R L^-1 R: the upper Cholesky factor of A^-1, unique, so the same U as
  // factoring the inverse. Layout: the row-major buffer read as column-major is the same symmetric matrix, and
  // LAPACK's column-major lower triangle ('L') is our row-major upper one, so potrf('L') and trtri('L') leave
  // (L^-1)^T in our upper triangle while the strict lower triangle still holds the original matrix -- from which a
  // failed attempt is restored before retrying with ten times the damping.
  void inverse_cholesky_upper(MatDMap& A, const char* who) const {
    const int n = static_cast<int>(A.rows());
    const size_t nn = static_cast<size_t>(n) * static_cast<size_t>(n);
    std::reverse(A.data(), A.data() + nn);  // R A R: entry (i, j) moves to (n-1-i, n-1-j)
    const Eigen::VectorXd diag0 = A.diagonal();
    const double mean_diag = diag0.mean();
    double damp = opts_.percdamp * mean_diag;
    const char lower = 'L', non_unit = 'N';
    auto restore_upper = [&] {
      for (int i = 0; i < n; ++i)
        for (int j = i + 1; j < n; ++j) A(i, j) = A(j, i);
    };
    for (int attempt = 0; attempt < 6; ++attempt) {
      A.diagonal() = diag0.array() + damp;
      int info = 0;
      dpotrf_(&lower, &n, A.data(), &n, &info);
      if (info != 0) {
        restore_upper();
        damp = damp > 0 ? damp * 10.0 : 1e-6 * std::max(mean_diag, 1e-30);
        continue;
      }
      dtrtri_(&lower, &non_unit, &n, A.data(), &n, &info);
      if (info != 0)
        fail(who, "H", "the Cholesky factor of the Hessian is singular (raise percdamp, now " +
                           std::to_string(opts_.percdamp) + ")");
      // Our upper triangle holds X = (L^-1)^T; U(i, j) = L^-1(n-1-i, n-1-j) = X(n-1-j, n-1-i): transpose, then
      // reverse the buffer. The lower triangle is cleared first so the transpose carries zeros into the upper.
      for (int i = 0; i < n; ++i)
        for (int j = 0; j < i; ++j) A(i, j) = 0.0;
      transpose_in_place(A);
      std::reverse(A.data(), A.data() + nn);
      return;
    }
    fail(who, "H", "the Hessian is not positive definite even after dampening");
  }

  // Square transpose in tiles (a plain swap loop strides through a 1 GB matrix one cache line per element).
  static void transpose_in_place(MatDMap& A) {
    const int64_t n = A.rows();
    constexpr int64_t T = 32;
    for (int64_t bi = 0; bi < n; bi += T)
      for (int64_t bj = bi; bj < n; bj += T)
        for (int64_t i = bi; i < std::min(bi + T, n); ++i)
          for (int64_t j = (bi == bj ? i + 1 : bj); j < std::min(bj + T, n); ++j) std::swap(A(i, j), A(j, i));
  }

  QuantOptions opts_;
};

}  // namespace

std::unique_ptr<Quantizer> make_gptq_quantizer(const QuantOptions& opts) {
  return std::make_unique<GptqQuantizer>(opts);
}

QuantResult detail::gptq_solve(const float* W, int64_t rows, int64_t cols, const formats::Format& fmt,
                               const LayerStats* stats, const QuantOptions& opts, const char* who,
                               const GptqStartHook& start) {
  return GptqQuantizer(opts).solve(W, rows, cols, fmt, stats, who, start);
}

}  // namespace lowbit::quant
