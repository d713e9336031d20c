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
  // Tells the kernel the pages of [p, p + n) are not needed now (they are re-read from the file if touched
  // again), so streaming through a large model keeps the resident set small. Ranges outside the mapping are ignored.
  void release(const std::byte* p, uint64_t n) const;

 private:
  std::string path_;
  const std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace lowbit
