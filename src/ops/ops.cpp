// ops: threading, BLAS and table set-up around the SIMD kernels of ops/kernels.cpp.
#include "ops/ops.h"

#include <cblas.h>
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "formats/format.h"
#include "formats/ggml.h"
#include "formats/intn.h"
#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "ops/ggml_dot.h"
#include "ops/kernels.h"

namespace lowbit::ops {

namespace {

size_t element_bytes(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16:
    case DType::BF16: return 2;
    default: return 0;
  }
}

// llama.cpp block types (and the other plain types ggml_decode_row widens).
bool is_ggml_block(DType t) { return dtype_info(t).block > 1 && formats::ggml_decodable(t); }

void check_dtype(const WeightView& w, const char* what) {
  if (w.intn == nullptr && element_bytes(w.dtype) == 0 && !is_ggml_block(w.dtype))
    fail("", what, "weight dtype " + std::string(dtype_name(w.dtype)) + " is not supported (f32, f16, bf16)");
}

// Below this many weight bytes a GEMV is not worth waking the thread team for.
constexpr uint64_t kMinParallelGemvBytes = 256 << 10;

// Runs fn(r0, r1) over rows [0, rows): on the calling thread when the work (`bytes` of weights) is too small to
// wake the thread team, else in chunks of whole 4-row groups (the kernels' row group). Decode: one contiguous chunk
// per thread. Batches (balance): 8 chunks per thread, taken as threads finish, so a core slowed by a neighbour
// costs one chunk's wait, not half the matrix's (pp512 at 2 threads with a busy loop sharing one core: 143-169
// against 115-123 t/s; decode did better with the fixed split, 19-23 against 17). Each row's result does not
// depend on which thread computes it.
template <typename Fn>
void split_rows(int64_t rows, uint64_t bytes, bool balance, const Fn& fn) {
  const int threads = num_threads();
  if (threads <= 1 || bytes < kMinParallelGemvBytes || rows < 8) {
    fn(int64_t{0}, rows);
    return;
  }
  const int64_t groups = (rows + 3) / 4;
  const int64_t chunks = std::min<int64_t>(groups, balance ? 8 * int64_t{threads} : threads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = std::min(rows, groups * c / chunks * 4), r1 = std::min(rows, groups * (c + 1) / chunks * 4);
    if (r1 > r0) fn(r0, r1);
  }
}

uint64_t matrix_bytes(const WeightView& w) { return static_cast<uint64_t>(w.rows) * w.row_bytes; }

// Decode on f32 / f16 / bf16 weights.
void gemv_parallel(const WeightView& w, const float* x, float* y) {
  split_rows(w.rows, matrix_bytes(w), false, [&](int64_t r0, int64_t r1) { gemv_rows(w, x, r0, r1, y + r0); });
}

// Packed intN decode: the activations are quantized once (on the calling thread, shared read-only), then rows are
// split as above.
void gemv_intn_parallel(const WeightView& w, const float* x, float* y) {
  thread_local detail::IntNActs acts;
  detail::quantize_acts_intn(*w.intn, x, w.cols, acts);
  const detail::IntNActs& a = acts;  // the calling thread's, not each worker's own thread_local
  split_rows(w.rows, matrix_bytes(w), false, [&](int64_t r0, int64_t r1) { detail::gemv_intn_rows(w, a, r0, r1, y + r0); });
}

// llama.cpp block types with a native kernel: activations quantized per token as llama.cpp does (ops/ggml_dot.h),
// rows split across threads; every token of a batch uses the same integer path, so prefill and decode agree.
void matmul_ggml(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  thread_local std::vector<detail::GgmlActs> acts;
  if (acts.size() < static_cast<size_t>(n_tokens)) acts.resize(static_cast<size_t>(n_tokens));
  // Batches read the GEMM layout (qt, dga). Token 0 first, on this thread: a bad shape throws here, not inside the
  // OpenMP team (where an exception would end the process).
  // (acts is this thread's thread_local: the team writes through a pointer to it.)
  const bool batch = n_tokens > 1;
  detail::GgmlActs* const a = acts.data();
  if (!batch) {
    detail::quantize_acts_ggml(w.dtype, x, w.cols, a[0]);
  } else if (!detail::ggml_batches_read_batched_acts(w.dtype)) {
    detail::quantize_acts_ggml(w.dtype, x, w.cols, a[0]);
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (num_threads() > 1 && n_tokens >= 8)
    for (int64_t t = 1; t < n_tokens; ++t) detail::quantize_acts_ggml(w.dtype, x + t * w.cols, w.cols, a[t]);
  } else {
    detail::quantize_acts_batched(w.dtype, x, w.cols, a[0]);
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (num_threads() > 1 && n_tokens >= 8)
    for (int64_t t = 1; t < n_tokens; ++t) detail::quantize_acts_batched(w.dtype, x + t * w.cols, w.cols, a[t]);
  }
  split_rows(w.rows, matrix_bytes(w) * static_cast<uint64_t>(n_tokens), n_tokens > 1,
             [&](int64_t r0, int64_t r1) { detail::gemm_ggml_rows(w, a, n_tokens, r0, r1, y + r0, w.rows); });
}

// The n_tokens rows of x (cols each) quantized into the GEMM layout under `rules` (one token per thread of the team
// for batches). Rows that are not whole blocks (intN weights of any length, Q8_0 rules) are zero-padded first: the
// padding's activations are zero.
detail::GgmlActs* quantize_batch(DType rules, const float* x, int64_t cols, int64_t n_tokens) {
  thread_local std::vector<detail::GgmlActs> acts;
  if (acts.size() < static_cast<size_t>(n_tokens)) acts.resize(static_cast<size_t>(n_tokens));
  detail::GgmlActs* const a = acts.data();
  const int64_t block = detail::ggml_block_values(rules);
  const int64_t padded = (cols + block - 1) / block * block;
  auto one = [&](int64_t t) {
    if (padded == cols) return detail::quantize_acts_batched(rules, x + t * cols, cols, a[t]);
    thread_local std::vector<float> row;
    row.assign(static_cast<size_t>(padded), 0.0f);
    std::copy(x + t * cols, x + (t + 1) * cols, row.begin());
    detail::quantize_acts_batched(rules, row.data(), padded, a[t]);
  };
  one(0);
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (num_threads() > 1 && n_tokens >= 8)
  for (int64_t t = 1; t < n_tokens; ++t) one(t);
  return a;
}

// Repacked weights (ops.h repack_for_kernels): decode and batches alike read activations in the GEMM layout.
void matmul_repacked(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  const RepackedMatrix& m = *w.repacked;
  detail::GgmlActs* const a = quantize_batch(m.acts, x, w.cols, n_tokens);
  split_rows(w.rows, matrix_bytes(w) * static_cast<uint64_t>(n_tokens), n_tokens > 1,
             [&](int64_t r0, int64_t r1) { detail::gemm_repacked_rows(w, a, n_tokens, r0, r1, y + r0, w.rows); });
}

// Types without a native kernel (IQ1/IQ2/IQ3, TQ, Q8_K ...): each row decoded to f32 and dotted.
// Decoding dominates (the i-quants' grids, bit fields and signs), so the rows are split across threads at any size
// a thread team pays for: each row's result is the same whichever thread computes it.
void gemv_decoded(const WeightView& w, const float* x, float* y) {
  split_rows(w.rows, matrix_bytes(w) * 8, false, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(w.cols));
    for (int64_t r = r0; r < r1; ++r) {
      get_row(w, r, row.data());
      y[r] = dot(row.data(), x, w.cols);
    }
  });
}

// Rows of W widened per SGEMM call in the F16/BF16 prefill path: about 4 MiB of f32 scratch, 16..512 rows
// (512 x 2048 measured ~15% faster than 256 x 2048 at batch 512: fewer, larger SGEMM calls).
int64_t panel_rows(int64_t cols) {
  const int64_t fit = (int64_t{4} << 20) / (4 * std::max<int64_t>(cols, 1));
  return std::clamp<int64_t>(fit / 16 * 16, 16, 512);
}

// Rows [r0, r0 + n) of w as f32, row-major with stride w.cols. Deliberately on the calling thread: an OpenMP
// team here would spin-wait against OpenBLAS's own pthread pool between panels (measured 5x slower on 2 cores).
void widen_rows(const WeightView& w, int64_t r0, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) get_row(w, r0 + i, out + i * w.cols);
}

}  // namespace

WeightView view_of(const TensorInfo& t) {
  if (t.shape.size() == 3) {  // merged experts {experts, rows, cols}: experts * rows rows (every format stores rows)
    TensorInfo flat = t;
    flat.shape = {t.shape[0] * t.shape[1], t.shape[2]};
    return view_of(flat);
  }
  if (!t.packed.empty()) {
    const formats::IntNFormat* f = nullptr;
    try {
      f = &formats::intn_format(t.packed);
    } catch (const Error& e) {
      fail(t.file, t.name, "packed format: " + e.message());
    }
    if (t.shape.size() != 2 || t.shape[0] < 0 || t.shape[1] < 1)
      fail(t.file, t.name, "expected a 2-D packed weight matrix, got shape " + t.shape_str());
    WeightView w;
    w.dtype = DType::I8;
    w.rows = t.shape[0];
    w.cols = t.shape[1];
    w.row_bytes = formats::row_bytes(*f, w.cols);
    w.intn = f;
    w.data = t.data;
    if (t.nbytes != static_cast<uint64_t>(w.rows) * w.row_bytes || (t.nbytes > 0 && t.data == nullptr))
      fail(t.file, t.name, "packed " + t.packed + " data holds " + std::to_string(t.nbytes) + " bytes, expected " +
                               std::to_string(static_cast<uint64_t>(w.rows) * w.row_bytes));
    return w;
  }
  if (is_ggml_block(t.dtype)) {
    if (t.shape.size() != 2) fail(t.file, t.name, "expected a 2-D weight matrix, got shape " + t.shape_str());
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const auto rb = dtype_row_bytes(t.dtype, static_cast<uint64_t>(std::max<int64_t>(cols, 0)));
    if (rows < 0 || cols < 0 || !rb)
      fail(t.file, t.name, "shape " + t.shape_str() + " does not fit type " + std::string(dtype_name(t.dtype)) +
                               " (rows must be whole blocks of " + std::to_string(dtype_info(t.dtype).block) + ")");
    if (t.nbytes < static_cast<uint64_t>(rows) * *rb || (t.nbytes > 0 && t.data == nullptr))
      fail(t.file, t.name, "holds " + std::to_string(t.nbytes) + " bytes but shape " + t.shape_str() + " of type " +
                               std::string(dtype_name(t.dtype)) + " needs " + std::to_string(rows * *rb));
    WeightView w;
    w.dtype = t.dtype;
    w.rows = rows;
    w.cols = cols;
    w.data = t.data;
    w.row_bytes = static_cast<size_t>(*rb);
    return w;
  }
  const size_t esize = element_bytes(t.dtype);
  if (esize == 0)
    fail(t.file, t.name,
         "dtype " + std::string(dtype_name(t.dtype)) + " is not supported by matmul (expected f32, f16 or bf16)");
  if (t.shape.size() != 2) fail(t.file, t.name, "expected a 2-D weight matrix, got shape " + t.shape_str());
  const int64_t rows = t.shape[0], cols = t.shape[1];
  if (rows < 0 || cols < 0) fail(t.file, t.name, "negative dimension in shape " + t.shape_str());
  const uint64_t need = static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols) * esize;
  if (t.nbytes < need)
    fail(t.file, t.name,
         "holds " + std::to_string(t.nbytes) + " bytes but shape " + t.shape_str() + " needs " + std::to_string(need));
  if (need > 0 && t.data == nullptr) fail(t.file, t.name, "tensor has no data");
  WeightView w;
  w.dtype = t.dtype;
  w.rows = rows;
  w.cols = cols;
  w.data = t.data;
  w.row_bytes = static_cast<size_t>(cols) * esize;
  return w;
}

void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  check_dtype(w, "matmul");
  if (n_tokens <= 0 || w.rows <= 0) return;
  if (w.cols <= 0) {
    std::fill(y, y + n_tokens * w.rows, 0.0f);
    return;
  }
  if (w.repacked) return matmul_repacked(w, x, n_tokens, y);
  if (is_ggml_block(w.dtype)) {
    if (detail::ggml_dot_supported(w.dtype)) return matmul_ggml(w, x, n_tokens, y);
    if (n_tokens == 1) return gemv_decoded(w, x, y);
  }
  if (n_tokens == 1) {
    if (w.intn)
      gemv_intn_parallel(w, x, y);
    else
      gemv_parallel(w, x, y);
    return;
  }
  const auto M = static_cast<blasint>(n_tokens), K = static_cast<blasint>(w.cols);
  if (deterministic_blas()) {  // fixed panels of weight rows, one single-threaded SGEMM each (quantize)
    const bool f32 = w.dtype == DType::F32 && !w.intn && w.row_bytes % sizeof(float) == 0;
    parallel_fixed_chunks(w.rows, 64, [&](int64_t r0, int64_t r1) {
      const int64_t p = r1 - r0;
      thread_local std::vector<float> panel;
      const float* B = reinterpret_cast<const float*>(w.data + static_cast<size_t>(r0) * w.row_bytes);
      blasint ldb = f32 ? static_cast<blasint>(w.row_bytes / sizeof(float)) : K;
      if (!f32) {
        panel.resize(static_cast<size_t>(p * w.cols));
        widen_rows(w, r0, p, panel.data());
        B = panel.data();
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, static_cast<blasint>(p), K, 1.0f, x, K, B, ldb, 0.0f,
                  y + r0, static_cast<blasint>(w.rows));
    });
    return;
  }
  if (w.dtype == DType::F32 && !w.intn && w.row_bytes % sizeof(float) == 0) {
    // Y (n x rows) = X (n x cols) * W^T, straight from the weight bytes.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, static_cast<blasint>(w.rows), K, 1.0f, x, K,
                reinterpret_cast<const float*>(w.data), static_cast<blasint>(w.row_bytes / sizeof(float)), 0.0f, y,
                static_cast<blasint>(w.rows));
    return;
  }
  // F16/BF16/packed: widen a panel of rows to f32, multiply it into its columns of Y, next panel. The scratch is
  // per thread and bounded by panel_rows(), never the whole matrix.
  const int64_t panel = std::min(panel_rows(w.cols), w.rows);
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(panel * w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += panel) {
    const int64_t p = std::min(panel, w.rows - r0);
    widen_rows(w, r0, p, scratch.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, static_cast<blasint>(p), K, 1.0f, x, K, scratch.data(), K,
                0.0f, y + r0, static_cast<blasint>(w.rows));
  }
}

void widen_vector(const TensorInfo& t, float* out) {
  const auto* p = reinterpret_cast<const uint16_t*>(t.data);
  switch (t.dtype) {
    case DType::F32: std::memcpy(out, t.data, static_cast<size_t>(t.numel()) * 4); break;
    case DType::F16: f16_to_f32(p, out, t.numel()); break;
    case DType::BF16: bf16_to_f32(p, out, t.numel()); break;
    default:
      fail(t.file, t.name, "dtype " + std::string(dtype_name(t.dtype)) + " is not supported for vectors");
  }
}

BlasOnCallingThread::BlasOnCallingThread() : saved_(openblas_get_num_threads()) {
  if (saved_ != 1) openblas_set_num_threads(1);
}

BlasOnCallingThread::~BlasOnCallingThread() {
  if (saved_ != 1) openblas_set_num_threads(saved_);
}

void get_row(const WeightView& w, int64_t r, float* out) {
  if (r < 0 || r >= w.rows)
    fail("", "get_row", "row " + std::to_string(r) + " is out of range [0, " + std::to_string(w.rows) + ")");
  const std::byte* p = w.data + static_cast<size_t>(r) * w.row_bytes;
  if (w.intn) return detail::decode_intn_row(*w.intn, p, w.cols, out);
  if (is_ggml_block(w.dtype)) return formats::ggml_decode_row(w.dtype, p, w.cols, out);
  switch (w.dtype) {
    case DType::F32: std::memcpy(out, p, static_cast<size_t>(w.cols) * sizeof(float)); return;
    case DType::F16: f16_to_f32(reinterpret_cast<const uint16_t*>(p), out, w.cols); return;
    case DType::BF16: bf16_to_f32(reinterpret_cast<const uint16_t*>(p), out, w.cols); return;
    default: check_dtype(w, "get_row");
  }
}

void rope(float* x, int n_heads, int head_dim, int rope_dim, int pos, const float* inv_freq, RopeStyle style) {
  if (rope_dim < 0 || rope_dim > head_dim)
    fail("", "rope", "rope_dim " + std::to_string(rope_dim) + " must be within [0, head_dim=" +
                         std::to_string(head_dim) + "]");
  const int half = rope_dim / 2;
  // cos/sin once per call, shared by all heads. The angle is formed in f32 (as llama.cpp and HF do).
  thread_local std::vector<float> cos_t, sin_t;
  const bool interleaved = style == RopeStyle::Interleaved;
  cos_t.resize(static_cast<size_t>(interleaved ? 2 * half : half));
  sin_t.resize(cos_t.size());
  for (int i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq[i];
    const float c = static_cast<float>(std::cos(static_cast<double>(angle)));
    const float s = static_cast<float>(std::sin(static_cast<double>(angle)));
    if (interleaved) {
      cos_t[2 * i] = cos_t[2 * i + 1] = c;
      sin_t[2 * i] = -s;
      sin_t[2 * i + 1] = s;
    } else {
      cos_t[i] = c;
      sin_t[i] = s;
    }
  }
  detail::rope_tables(x, n_heads, head_dim, rope_dim, cos_t.data(), sin_t.data(), style);
}

double measure_read_bandwidth(size_t bytes, int threads, int reps) {
  if (threads <= 0) threads = num_threads();
  reps = std::max(reps, 1);
  const size_t n = std::max<size_t>(bytes / sizeof(float), 1024);
  // 2 MiB aligned and huge-page backed where possible: fewer TLB misses, i.e. the real ceiling.
  constexpr size_t kAlign = size_t{2} << 20;
  const size_t alloc = (n * sizeof(float) + kAlign - 1) / kAlign * kAlign;
  std::unique_ptr<float, decltype(&std::free)> buf(static_cast<float*>(std::aligned_alloc(kAlign, alloc)), &std::free);
  if (!buf) fail("", "measure_read_bandwidth", "cannot allocate " + std::to_string(alloc) + " bytes");
  float* p = buf.get();
#ifdef MADV_HUGEPAGE
  ::madvise(p, alloc, MADV_HUGEPAGE);  // also where THP is "madvise" only; a failure just means 4 KiB pages
#endif
  // Written (not just mapped) so reads hit real memory rather than the shared zero page.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (size_t i = 0; i < n; ++i) p[i] = 1.0f;

  double best = std::numeric_limits<double>::infinity();
  volatile float sink = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + detail::parallel_stream_sum(p, n, threads);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return static_cast<double>(n * sizeof(float)) / best / 1e9;
}

}  // namespace lowbit::ops
