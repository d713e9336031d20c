// lowbit's packed tensors inside a GGUF container. A tensor encoded in one of lowbit's own formats
// (formats/, e.g. "int4g64a") is stored as a plain GGUF I8 tensor of shape {rows, row_bytes}, so every GGUF
// tool can parse the file; the metadata keys
//     lowbit.tensor.<name>.format  string   the format name
//     lowbit.tensor.<name>.shape   [rows, cols] (u64 array)
// say how to read it. The loader decodes such tensors to f32 so the fp32 graph runs them unchanged.
#pragma once
#include <string>

#include "io/gguf.h"
#include "lowbit/model_file.h"

namespace lowbit::io {

std::string packed_format_key(const std::string& tensor);
std::string packed_shape_key(const std::string& tensor);

// Replaces every packed tensor of m by its f32 decoding (owned by m). Errors name the file, key and tensor.
void decode_packed_tensors(ModelFile& m, const GgufFile& f);

}  // namespace lowbit::io
