// safetensors reader: 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}},
// then the data section. Everything is validated against the file size before use; tensors are views into
// the mapping. Errors name the file, the field (tensor) and, where it helps, the byte offset.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/mapped_file.h"
#include "lowbit/dtype.h"

namespace lowbit::io {

struct SafetensorsTensor {
  std::string name;             // as stored (Hugging Face naming)
  DType dtype = DType::F32;     // F32, F16 or BF16
  std::vector<int64_t> shape;   // outermost first
  uint64_t begin = 0;           // data_offsets, relative to the data section
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Maps and parses the file. Throws lowbit::Error for any malformed input or unsupported dtype.
  static std::shared_ptr<const SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint64_t data_offset() const { return data_offset_; }     // 8 + header length
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }  // sorted by data offset
  const SafetensorsTensor* find(const std::string& name) const;
  // "__metadata__" string entries, in header order.
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  const std::byte* tensor_data(const SafetensorsTensor& t) const { return map_->data() + data_offset_ + t.begin; }
  std::shared_ptr<const MappedFile> mapping() const { return map_; }

 private:
  std::string path_;
  std::shared_ptr<const MappedFile> map_;
  uint64_t data_offset_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace lowbit::io
