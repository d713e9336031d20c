#include "calib/imatrix_collect.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "io/arch.h"
#include "lowbit/error.h"

namespace lowbit::calib {

io::ImatrixSums collect_imatrix(Model& model, const std::vector<int32_t>& tokens, const ImatrixOptions& o,
                                const std::function<void(int, int)>& progress) {
  const ModelConfig& c = model.config();
  if (o.chunk_size < 2) fail(o.dataset, "chunk size", "must be at least 2 tokens");
  const int64_t fit = static_cast<int64_t>(tokens.size()) / o.chunk_size;
  const int n_chunks = static_cast<int>(o.chunks < 0 ? fit : std::min<int64_t>(o.chunks, fit));
  if (n_chunks < 1)
    fail(o.dataset, "text", std::to_string(tokens.size()) + " tokens hold no chunk of " + std::to_string(o.chunk_size));
  const io::ArchRoles& roles = io::arch_roles(c);
  io::ImatrixSums s;
  s.datasets = {o.dataset};
  s.chunk_count = n_chunks;
  s.chunk_size = o.chunk_size;
  // Chunks go through the blocks in groups (bounded activations: group x chunk_size x dim floats).
  const int group = std::max(1, 8192 / o.chunk_size);
  const size_t len = static_cast<size_t>(o.chunk_size), dim = static_cast<size_t>(c.dim);
  std::vector<float> x;
  // One float accumulator per (layer, site), added to row by row in token order with a fused multiply-add:
  // llama-imatrix's own arithmetic (Stats::values is float, `values[j] += x[j]*x[j]` per row, contracted to an FMA
  // in its -march=native build), so the file carries the same rounding as llama.cpp's, not only the same sums.
  // The linears of a site read the same rows: each gets the site's sums.
  std::map<std::pair<int, int>, std::vector<float>> acc;
  std::map<std::pair<int, int>, int64_t> rows_seen;
  for (int g0 = 0; g0 < n_chunks; g0 += group) {
    const int n = std::min(group, n_chunks - g0);
    x.assign(static_cast<size_t>(n) * len * dim, 0.0f);
    for (int k = 0; k < n; ++k) {
      std::vector<int32_t> chunk(tokens.begin() + static_cast<int64_t>(g0 + k) * o.chunk_size,
                                 tokens.begin() + static_cast<int64_t>(g0 + k + 1) * o.chunk_size);
      if (o.bos >= 0) chunk[0] = o.bos;
      model.embed(chunk, x.data() + static_cast<size_t>(k) * len * dim);
    }
    for (int l = 0; l < c.n_layers; ++l)
      model.forward_layer(l, x.data(), n, o.chunk_size, [&](int layer, LinearInput which, const float* in, int64_t rows, int64_t cols) {
        const std::pair<int, int> key{layer, static_cast<int>(which)};
        std::vector<float>& a = acc[key];
        if (a.empty()) a.assign(static_cast<size_t>(cols), 0.0f);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < cols; ++j) {
            const float v = in[r * cols + j];
            a[static_cast<size_t>(j)] = std::fma(v, v, a[static_cast<size_t>(j)]);
          }
        rows_seen[key] += rows;
      });
    if (progress) progress(g0 + n, n_chunks);
  }
  for (const auto& [key, a] : acc)
    for (std::string_view lin : roles.sites[static_cast<size_t>(key.second)].linears) {
      io::ImatrixSums::Entry& e = s.entries[io::block_tensor_name(key.first, lin)];
      e.sum_sq.assign(a.begin(), a.end());
      e.tokens = rows_seen[key];
    }
  for (auto& [name, e] : s.entries) e.calls = n_chunks;
  return s;
}

}  // namespace lowbit::calib
