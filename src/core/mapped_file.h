// Read-only memory-mapped file. Empty files map to an empty span.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lowbit {

class MappedFile {
 public:
  // Throws lowbit::Error ("PATH: cannot open: <reason>") on failure.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace lowbit
