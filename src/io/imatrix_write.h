// Writing llama.cpp importance matrices (what `lowbit imatrix` collects): the GGUF format of llama-imatrix since
// 2025 (what its default writes; llama-quantize of July 2026 reads it) and the legacy binary format (llama.cpp up to
// mid-2025, e.g. c392e509, whose llama-quantize reads only that). The layouts are described in io/imatrix.h's reader.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lowbit::io {

struct ImatrixSums {
  struct Entry {
    std::vector<double> sum_sq;  // width: sum over the tokens of x_j^2 (one matrix; dense models)
    int64_t tokens = 0;          // rows seen
    int64_t calls = 0;           // chunks that reached it (legacy "ncall")
  };
  std::map<std::string, Entry> entries;  // weight name ("blk.0.attn_q.weight") -> its input's statistics
  std::vector<std::string> datasets;     // the text file(s)
  int64_t chunk_count = 0;
  int64_t chunk_size = 0;
};

// GGUF: general.type = "imatrix", imatrix.datasets / chunk_count / chunk_size, per entry (sorted by name)
// "<name>.in_sum2" F32 [1, width] and "<name>.counts" F32 [1, 1]. Written atomically. Throws lowbit::Error.
void write_imatrix_gguf(const std::string& path, const ImatrixSums& s);
// Legacy: int32 n_entries, per entry int32 name_len, name, int32 ncall, int32 nval, nval float32 (sum / tokens *
// ncall); then int32 chunk_count, int32 dataset_len, dataset. Written to a temporary file, fsynced, renamed.
void write_imatrix_legacy(const std::string& path, const ImatrixSums& s);

}  // namespace lowbit::io
