// lowbit ops (floor 2): the numeric kernels the model graph calls. Highway SIMD with runtime dispatch,
// multi-threaded with OpenMP (thread count from lowbit::num_threads()), scalar references in ops/reference.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "lowbit/dtype.h"
#include "lowbit/model_file.h"

namespace lowbit::formats {
class IntNFormat;
}

namespace lowbit::ops {

// A weight matrix {rows, cols} stored row-major (each row contiguous along cols), as in every model file.
struct WeightView {
  DType dtype = DType::F32;  // F32, F16, BF16, or I8 for packed weights (intn set)
  int64_t rows = 0;
  int64_t cols = 0;
  const std::byte* data = nullptr;
  size_t row_bytes = 0;      // stride between rows
  // Packed lowbit intN weights: each row is formats::row_blocks(cols) encoded blocks (formats/intn.h).
  const formats::IntNFormat* intn = nullptr;
  // A copy of the weights repacked for the AVX-512 VNNI kernels (repack_for_kernels), or null. When set, matmul
  // reads it instead of data (get_row still decodes data). Owned by whoever made it (the Model).
  const struct RepackedMatrix* repacked = nullptr;
};
// Checks the dtype is supported and the tensor is 2-D, or 3-D {experts, rows, cols} (then experts * rows rows).
WeightView view_of(const TensorInfo& t);

// Weights repacked at load for the kernels of this CPU: 4-bit codes (8-bit for Q8_0 / int8) in the int8 GEMM's unit
// layout (ops/ggml_dot.h), every 16 units' scales (and mins) as f32 beside their codes, each row a whole number
// of 64-byte vectors. Decode then reads one aligned stream per row with no header decoding, and prefill unpacks
// a panel with two instructions per vector. Types: Q4_0, Q4_1, IQ4_NL, Q4_K, IQ4_XS, Q8_0 and lowbit int4 / int8
// with 32..128-value groups, on the AVX-512 VNNI path; anything else returns null (and matmul keeps data).
struct RepackedMatrix;
struct RepackedDeleter {
  void operator()(RepackedMatrix* m) const;
};
using RepackedPtr = std::unique_ptr<RepackedMatrix, RepackedDeleter>;
RepackedPtr repack_for_kernels(const WeightView& w);
size_t repacked_bytes(const RepackedMatrix& m);

// Y[t, r] = sum_c W[r, c] * X[t, c] for t < n_tokens. X is n_tokens x cols, Y is n_tokens x rows (row-major).
// n_tokens == 1: multi-threaded SIMD GEMV straight from the weight bytes (memory-bound decode path). For packed
//                intN weights the activations are quantized to int16 once per call, per weight block
//                (d = max|x| / (127 * 256), q = round(x / d)), and each block's dot is an integer dot product:
//                y_r = sum over blocks of scale * (d * sum(code * q) - offset * d * sum(q))  (gemv_intn_ref).
// n_tokens > 1 : llama.cpp types and repacked weights: the int8 GEMM (ops/ggml_dot.h); otherwise BLAS SGEMM
//                (F16/BF16/packed weights are decoded to f32 in panels, never the whole matrix).
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y);

// While alive, OpenBLAS runs every call on the calling thread: for BLAS calls made by the threads of an OpenMP team,
// where OpenBLAS's own pthread pool would otherwise be woken by each of them at once (oversubscribing the cores and
// serialising on its server lock). Restores the previous OpenBLAS thread count. Not for concurrent use from threads
// that call BLAS outside such a team (the setting is process-wide).
class BlasOnCallingThread {
 public:
  BlasOnCallingThread();
  ~BlasOnCallingThread();
  BlasOnCallingThread(const BlasOnCallingThread&) = delete;
  BlasOnCallingThread& operator=(const BlasOnCallingThread&) = delete;

 private:
  int saved_;
};

// Single-threaded GEMV over a row range [r0, r1): y[r - r0] for r in range. Building block of matmul.
void gemv_rows(const WeightView& w, const float* x, int64_t r0, int64_t r1, float* y);

// A whole F32 / F16 / BF16 tensor (norms, biases: any shape) widened to f32; other dtypes are an error.
void widen_vector(const TensorInfo& t, float* out);

// Row r of w widened to f32 (embedding lookup).
void get_row(const WeightView& w, int64_t r, float* out);

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i]
void rmsnorm(float* out, const float* x, const float* weight, int64_t n, float eps);
// In place numerically stable softmax.
void softmax(float* x, int64_t n);
// gate[i] = silu(gate[i]) * up[i]
void silu_mul(float* gate, const float* up, int64_t n);
// gate[i] = gelu(gate[i]) * up[i], GELU's tanh approximation (Gemma's gelu_pytorch_tanh)
void gelu_mul(float* gate, const float* up, int64_t n);
float dot(const float* a, const float* b, int64_t n);
// y[i] += a * x[i]
void axpy(float a, const float* x, float* y, int64_t n);
// y[i] -= a * x[i] in double (GPTQ's updates inside a lazy batch). Fused where the CPU has FMA, so the last bit
// depends on the CPU (as OpenBLAS's dgemm does), never on the thread count.
void sub_scaled(double a, const double* x, double* y, int64_t n);
// Widen a run of f16 / bf16 values to f32.
void f16_to_f32(const uint16_t* in, float* out, int64_t n);
void bf16_to_f32(const uint16_t* in, float* out, int64_t n);

// Rotary embedding on n_heads heads of head_dim floats each (contiguous), at position pos.
// inv_freq has rope_dim/2 entries (already including any rope scaling). Only the first rope_dim
// dimensions of each head rotate.
void rope(float* x, int n_heads, int head_dim, int rope_dim, int pos, const float* inv_freq, RopeStyle style);

// Measures the machine's read bandwidth in GB/s (1e9 bytes/s): streaming reduction over a buffer of
// `bytes` (much larger than the caches) with `threads` threads, best of `reps`.
double measure_read_bandwidth(size_t bytes, int threads, int reps = 5);

// The SIMD target Highway chose at run time ("AVX3_ZEN4", "AVX3_DL", "AVX2", ...).
const char* simd_target();
// The kernel paths the dispatch chose for llama.cpp block types and for lowbit's intN formats: "avx512-vnni" (the
// hand-written AVX-512 VNNI/VBMI kernels, on AVX3_DL or any better target), "highway" (portable SIMD) or "scalar".
const char* ggml_kernel_path();
const char* intn_kernel_path();

}  // namespace lowbit::ops
