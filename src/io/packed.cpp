#include "io/packed.h"

#include "formats/format.h"
#include "formats/intn.h"
#include "lowbit/error.h"

namespace lowbit::io {

std::string packed_format_key(const std::string& tensor) { return "lowbit.tensor." + tensor + ".format"; }
std::string packed_shape_key(const std::string& tensor) { return "lowbit.tensor." + tensor + ".shape"; }

void annotate_packed_tensors(ModelFile& m, const GgufFile& f) {
  for (TensorInfo& t : m.tensors) {
    const std::string fkey = packed_format_key(t.name);
    auto fname = f.get_string(fkey);
    if (!fname) continue;
    std::unique_ptr<formats::Format> fmt;
    try {
      // Only lowbit's own formats are packed; llama.cpp's types are stored as their own GGUF types.
      fmt = formats::make_intn_format(*fname);
    } catch (const Error& e) {
      fail(f.path(), fkey, e.message());
    }
    const std::string skey = packed_shape_key(t.name);
    auto shape = f.get_numbers(skey);
    // [rows, cols], or [experts, rows, cols] for merged MoE experts (stored as experts * rows rows)
    if (!shape || (shape->size() != 2 && shape->size() != 3))
      fail(f.path(), skey, "expected [rows, cols] or [experts, rows, cols] for packed tensor '" + t.name + "'");
    for (double d : *shape)
      if (!(d >= 1 && d < 1e9)) fail(f.path(), skey, "absurd shape for packed tensor '" + t.name + "'");
    const bool merged = shape->size() == 3;
    const int64_t experts = merged ? static_cast<int64_t>((*shape)[0]) : 1;
    const int64_t rows = experts * static_cast<int64_t>((*shape)[merged ? 1 : 0]);
    const int64_t cols = static_cast<int64_t>(shape->back());
    const size_t rb = formats::row_bytes(*fmt, cols);
    if (t.dtype != DType::I8 || t.shape.size() != 2 || t.shape[0] != rows || t.shape[1] != static_cast<int64_t>(rb))
      fail(f.path(), "tensor '" + t.name + "'",
           "packed " + *fname + " data must be i8 [" + std::to_string(rows) + ", " + std::to_string(rb) + "], found " +
               std::string(dtype_name(t.dtype)) + " " + t.shape_str());
    t.packed = *fname;  // the bytes stay as stored: the ops layer computes on them (ops::view_of)
    t.stored_bytes = t.nbytes;
    t.shape = merged ? std::vector<int64_t>{experts, rows / experts, cols} : std::vector<int64_t>{rows, cols};
  }
}

}  // namespace lowbit::io
