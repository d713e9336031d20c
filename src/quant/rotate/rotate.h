// QuaRot-style rotations folded into the weights (weight-only, offline): the method "rotate".
//
// R1 rotates the residual stream: with every RMSNorm weight folded into the linears that read it (the norm
// becomes all ones, and RMSNorm commutes with an orthogonal Q because it only divides by ||x||), the stream
// h' = Q^T h runs through the same graph when
//   token_embd' = E Q,  W' = W diag(g) Q for every linear reading a norm (q/k/v, gate/up, the output head),
//   W' = Q^T W for every linear writing the stream (attn_output, ffn_down).
// R2 rotates each attention head's value space: value rows of every KV head become R2^T v (and the v bias), and
// the attention-output columns of every query head W_o[:, head] R2, exactly, because attention mixes value rows
// with scalar weights.
// The result is again a plain Llama graph (norm weights of ones), so llama.cpp loads it unchanged. A tied output
// head is untied (the head is E diag(g_out) Q, the embedding E Q): the file grows by one vocab x dim matrix.
//
// Q is a randomized Hadamard matrix H diag(signs) / sqrt(n) when n is a power of two (applied with the fast
// Walsh-Hadamard transform), else a random orthogonal matrix (QR of a Gaussian): rotation spreads outlier
// channels over all channels, which helps per-channel and very low-bit formats most.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "lowbit/model_file.h"

namespace lowbit::quant {

struct RotateOptions {
  uint64_t seed = 0;
  bool residual = true;  // R1
  bool heads = true;     // R2
};

// An orthogonal n x n rotation applied to row vectors: row w -> w Q.
class Rotation {
 public:
  Rotation(int64_t n, uint64_t seed);
  int64_t size() const { return n_; }
  bool is_hadamard() const { return dense_.empty(); }
  // Each of the rows (rows x n, row-major) becomes row * Q.
  void apply_rows(float* w, int64_t rows) const;
  // Each of the rows becomes row * Q^T (the inverse).
  void apply_rows_inverse(float* w, int64_t rows) const;
  // Q as a dense matrix (row-major, n x n), for tests.
  std::vector<double> dense() const;

 private:
  void apply(float* w, int64_t rows, bool inverse) const;
  int64_t n_;
  std::vector<float> signs_;   // Hadamard: Q = diag(signs) H / sqrt(n)
  std::vector<float> dense_;   // otherwise: Q, row-major
};

// The model with R1 / R2 folded in, every tensor f32 in memory (the source is not modified). Throws when the
// architecture does not allow the rotation.
std::shared_ptr<const ModelFile> rotate_model(const ModelFile& src, const RotateOptions& o);

}  // namespace lowbit::quant
