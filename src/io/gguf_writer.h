// GGUF v3 writer: metadata of every value type (arrays of numbers and strings, nested arrays) and tensors given
// as bytes or as a producer that streams them, so a multi-GB model never has to sit in memory.
// write() is atomic and leaves no partial file, even if the process is killed (SIGKILL included): it streams into
// an unnamed O_TMPFILE file in the destination directory (the kernel discards it if the process dies), fsyncs it,
// names it "<out>.tmp.<pid>" with linkat through /proc/self/fd, renames that over <out> and fsyncs the directory.
// Only the instant between linkat and rename has a name on disk (SIGINT/SIGTERM/SIGHUP remove it, TempFileGuard).
// On a filesystem or kernel without O_TMPFILE it falls back to writing "<out>.tmp.<pid>" directly (removed on
// errors and on SIGINT/SIGTERM/SIGHUP, but left behind by SIGKILL). If the unnamed file cannot be linked (no
// /proc mounted and no CAP_DAC_READ_SEARCH for AT_EMPTY_PATH), write() fails with a clear error.
// On any error <out> is left as it was.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "lowbit/dtype.h"

namespace lowbit::io {

class GgufWriter {
 public:
  // Receives the next bytes of a tensor; a producer calls it as often as it likes, in order.
  using Sink = std::function<void(const void* data, size_t n)>;
  // Streams a tensor's bytes into the sink; must deliver exactly the tensor's size in total.
  using Producer = std::function<void(const Sink& sink)>;

  explicit GgufWriter(uint64_t alignment = 32);

  // Metadata, in insertion order. Setting a key again replaces its value.
  void set(const std::string& key, GgufValue value);
  void set_u8(const std::string& key, uint8_t v);
  void set_i8(const std::string& key, int8_t v);
  void set_u16(const std::string& key, uint16_t v);
  void set_i16(const std::string& key, int16_t v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_u64(const std::string& key, uint64_t v);
  void set_i64(const std::string& key, int64_t v);
  void set_f32(const std::string& key, float v);
  void set_f64(const std::string& key, double v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_f32s(const std::string& key, const std::vector<float>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);
  // An array of any numeric/bool element type: values go in `ints` (integers, bools) or `floats` (F32/F64).
  static GgufValue array(GgufType elem_type, std::vector<int64_t> ints, std::vector<double> floats = {});

  // Tensors, in file order. shape is outermost first (like TensorInfo / numpy); the file stores it reversed
  // (ggml's ne[0] = row length). Throws lowbit::Error for a duplicate name, a bad shape or a size mismatch.
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, std::vector<std::byte> bytes);
  void add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape, Producer producer);
  static uint64_t tensor_bytes(DType dtype, const std::vector<int64_t>& shape, const std::string& name = "");

  size_t n_tensors() const { return tensors_.size(); }
  uint64_t data_bytes() const;  // the tensor data section, padding included
  uint64_t file_size() const;   // bytes write() would write now (header, metadata, tensor infos, padding, data)

  // Writes the file atomically. progress (optional) is called after each tensor with (done, total) tensors.
  void write(const std::string& path, const std::function<void(size_t, size_t)>& progress = {}) const;

 private:
  struct Tensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t nbytes;
    uint64_t offset;  // in the data section
    std::vector<std::byte> bytes;
    Producer producer;
  };
  void add(Tensor t);
  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
  uint64_t data_end_ = 0;
};

}  // namespace lowbit::io
