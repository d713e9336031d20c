// lowbit's packed tensors inside a GGUF container. A tensor encoded in one of lowbit's own formats
// (formats/, e.g. "int4g64a") is stored as a plain GGUF I8 tensor of shape {rows, row_bytes}, so every GGUF
// tool can parse the file; the metadata keys
//     lowbit.tensor.<name>.format  string   the format name
//     lowbit.tensor.<name>.shape   [rows, cols] (u64 array)
// say how to read it. The loader keeps the bytes as stored and gives such a tensor its logical shape {rows, cols},
// dtype I8 and `packed` = the format name; ops::view_of turns it into a WeightView the matmul kernels compute on
// directly (and ops::get_row decodes a row).
#pragma once
#include <string>

#include "io/gguf.h"
#include "lowbit/model_file.h"

namespace lowbit::io {

std::string packed_format_key(const std::string& tensor);
std::string packed_shape_key(const std::string& tensor);

// Marks every packed tensor of m (format, logical shape), after checking its keys and byte size. Errors name the
// file, key and tensor.
void annotate_packed_tensors(ModelFile& m, const GgufFile& f);

}  // namespace lowbit::io
