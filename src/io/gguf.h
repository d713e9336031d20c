// GGUF v2/v3 reader: header, every metadata value type (nested arrays included), tensor infos, alignment.
// Everything is validated against the file size before use; errors name file, field and byte offset.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/mapped_file.h"
#include "lowbit/dtype.h"
#include "lowbit/model_file.h"

namespace lowbit::io {

enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* gguf_type_name(GgufType t);
// Bytes of one scalar of type t; 0 for STRING and ARRAY.
size_t gguf_scalar_size(GgufType t);

struct GgufValue {
  GgufType type = GgufType::U8;
  GgufType elem_type = GgufType::U8;  // arrays only
  // Scalars: integers/bools in i (u64 values above INT64_MAX keep their bits), floats in f, strings in s.
  int64_t i = 0;
  double f = 0;
  std::string s;
  // Arrays: numeric/bool elements in ints or floats (by elem_type), strings in strings, nested arrays in items.
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<GgufValue> items;
  uint64_t count = 0;    // arrays: number of elements
  uint64_t offset = 0;   // file offset where the value starts

  bool is_int() const;     // any integer or bool scalar
  bool is_float() const;   // F32/F64 scalar
  std::string type_str() const;               // "u32", "array[string]"
  std::string to_string(size_t max_items = 8) const;
};

struct GgufTensor {
  std::string name;
  uint32_t raw_type = 0;           // ggml type id as stored
  DType dtype = DType::F32;        // valid only if known
  bool known_type = false;
  std::vector<uint64_t> ne;        // ggml order: ne[0] is the fastest-varying (row length)
  uint64_t offset = 0;             // relative to the data section
  uint64_t nbytes = 0;
  uint64_t info_offset = 0;        // where the tensor info starts in the file
};

class GgufFile {
 public:
  // Maps and parses the file. Throws lowbit::Error for any malformed input.
  static std::shared_ptr<const GgufFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::vector<std::pair<std::string, GgufValue>>& kv() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufValue* find(std::string_view key) const;

  // Typed lookups: nullopt when absent; a clear error when present with the wrong type.
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;  // accepts integer values too
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  const std::vector<std::string>* get_strings(std::string_view key) const;  // array of string
  // Array of numbers, converted; nullptr when absent.
  std::optional<std::vector<double>> get_numbers(std::string_view key) const;

  // Bytes of a tensor (bounds were checked at open).
  const std::byte* tensor_data(const GgufTensor& t) const { return map_->data() + data_offset_ + t.offset; }
  std::shared_ptr<const MappedFile> mapping() const { return map_; }

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensor> tensors_;
  friend class GgufParser;
};

// The tokenizer described by a GGUF file's tokenizer.ggml.* keys (model "none" when absent).
TokenizerSpec tokenizer_spec_from_gguf(const GgufFile& f);

// A ModelFile from a GGUF model (config from "<arch>.*" keys, tensors as views into the mapping).
std::shared_ptr<const ModelFile> load_gguf_model(const std::string& path);

}  // namespace lowbit::io
