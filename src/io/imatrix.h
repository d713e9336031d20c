// llama.cpp importance matrices ("imatrix" files, written by llama-imatrix) in both of their formats:
//  - legacy binary (llama.cpp up to mid-2025, e.g. commit c392e509), little-endian:
//      int32 n_entries
//      n_entries x { int32 name_len, name bytes, int32 ncall, int32 nval, nval x float32 sums }
//      optional: int32 chunk_count, int32 dataset_len, dataset bytes
//    where sums[j] is (sum of x_j^2 over the tokens) / tokens * ncall; llama-quantize divides by ncall again.
//  - GGUF (llama-imatrix since 2025): per weight matrix "<name>.in_sum2" (F32, n_expert x width: the sum of x_j^2)
//    and "<name>.counts" (F32, n_expert: the tokens seen); keys imatrix.datasets (array of strings),
//    imatrix.chunk_count and imatrix.chunk_size (u32).
// The result is what llama-quantize feeds its quantizers: per matrix name, one importance per input column
// (per expert), normalised exactly as llama-quantize does (legacy: v / ncall when ncall > 0, float division;
// GGUF: sums / count per expert, 1 where the count is 0).
// Every rejected file is one lowbit::Error line naming the file, the entry and field, and what was expected:
// truncation, sizes that run past the end of the file, negative or non-finite values, a GGUF in_sum2 without its
// counts (or the reverse), sizes that do not divide into the counts, missing metadata.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lowbit::io {

struct Imatrix {
  std::string path;
  std::string format;  // "legacy" or "gguf"
  // Matrix name ("blk.0.attn_q.weight") -> importance of each input column, n_expert * width values
  // (expert e's at [e * width, (e + 1) * width)); dense models have n_expert = 1.
  std::map<std::string, std::vector<float>> entries;
  std::vector<std::string> datasets;  // the text(s) the statistics were collected on, as recorded
  int64_t chunk_count = 0;            // chunks of text seen (0: not recorded)
  int64_t chunk_size = 0;             // tokens per chunk (GGUF only; 0: not recorded)
  uint64_t checksum = 0;              // FNV-1a of the file's bytes (the run fingerprint of quantize --resume)
};

// Reads either format (GGUF when the file starts with "GGUF"). Throws lowbit::Error.
Imatrix load_imatrix(const std::string& path);

}  // namespace lowbit::io
