#include "io/gguf_writer.h"

#include "core/temp_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <optional>

#include "lowbit/error.h"

namespace lowbit::io {

namespace {

// Buffered, error-checked writes to a file descriptor.
class Out {
 public:
  // fd < 0: nothing is written, only written() counts (GgufWriter::file_size).
  Out(int fd, const std::string& path) : fd_(fd), path_(path) {
    if (fd >= 0) buf_.reserve(kBuf);
  }
  void put(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    if (buf_.size() + n > kBuf) flush();
    if (n >= kBuf) {
      raw(p, n);
    } else {
      buf_.insert(buf_.end(), p, p + n);
    }
    written_ += n;
  }
  template <class T>
  void pod(T v) {
    put(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    put(s.data(), s.size());
  }
  void zeros(uint64_t n) {
    static const char z[64] = {};
    while (n > 0) {
      const size_t k = n < sizeof z ? static_cast<size_t>(n) : sizeof z;
      put(z, k);
      n -= k;
    }
  }
  void flush() {
    raw(buf_.data(), buf_.size());
    buf_.clear();
  }
  uint64_t written() const { return written_; }

 private:
  static constexpr size_t kBuf = 4 << 20;
  void raw(const char* p, size_t n) {
    if (fd_ < 0) return;  // counting only (GgufWriter::file_size)
    while (n > 0) {
      const ssize_t k = ::write(fd_, p, n);
      if (k < 0) {
        if (errno == EINTR) continue;
        fail(path_, "", std::string("write failed: ") + std::strerror(errno));
      }
      p += k;
      n -= static_cast<size_t>(k);
    }
  }
  int fd_;
  const std::string& path_;
  std::vector<char> buf_;
  uint64_t written_ = 0;
};


bool is_float_type(GgufType t) { return t == GgufType::F32 || t == GgufType::F64; }

void write_scalar(Out& o, GgufType t, int64_t i, double f) {
  switch (t) {
    case GgufType::U8: o.pod(static_cast<uint8_t>(i)); break;
    case GgufType::I8: o.pod(static_cast<int8_t>(i)); break;
    case GgufType::U16: o.pod(static_cast<uint16_t>(i)); break;
    case GgufType::I16: o.pod(static_cast<int16_t>(i)); break;
    case GgufType::U32: o.pod(static_cast<uint32_t>(i)); break;
    case GgufType::I32: o.pod(static_cast<int32_t>(i)); break;
    case GgufType::U64: o.pod(static_cast<uint64_t>(i)); break;
    case GgufType::I64: o.pod(static_cast<int64_t>(i)); break;
    case GgufType::BOOL: o.pod(static_cast<uint8_t>(i != 0)); break;
    case GgufType::F32: o.pod(static_cast<float>(f)); break;
    case GgufType::F64: o.pod(f); break;
    default: break;
  }
}

uint64_t array_len(const GgufValue& v) {
  if (v.elem_type == GgufType::STRING) return v.strings.size();
  if (v.elem_type == GgufType::ARRAY) return v.items.size();
  return is_float_type(v.elem_type) ? v.floats.size() : v.ints.size();
}

void write_value(Out& o, const GgufValue& v);

void write_array(Out& o, const GgufValue& v) {
  o.pod(static_cast<uint32_t>(v.elem_type));
  const uint64_t n = array_len(v);
  o.pod(n);
  for (uint64_t k = 0; k < n; ++k) {
    switch (v.elem_type) {
      case GgufType::STRING: o.str(v.strings[k]); break;
      case GgufType::ARRAY: write_array(o, v.items[k]); break;
      default: write_scalar(o, v.elem_type, is_float_type(v.elem_type) ? 0 : v.ints[k],
                            is_float_type(v.elem_type) ? v.floats[k] : 0);
    }
  }
}

void write_value(Out& o, const GgufValue& v) {
  if (v.type == GgufType::STRING) o.str(v.s);
  else if (v.type == GgufType::ARRAY) write_array(o, v);
  else write_scalar(o, v.type, v.i, v.f);
}

// Rejects values the writer could not encode faithfully (unknown types, arrays whose elements sit in the
// wrong vector).
void check_value(const std::string& key, const GgufValue& v, int depth) {
  if (static_cast<uint32_t>(v.type) > static_cast<uint32_t>(GgufType::F64))
    fail("", key, "unknown GGUF value type " + std::to_string(static_cast<uint32_t>(v.type)));
  if (v.type != GgufType::ARRAY) return;
  if (depth > 3) fail("", key, "arrays nested deeper than 4");
  const GgufType e = v.elem_type;
  if (static_cast<uint32_t>(e) > static_cast<uint32_t>(GgufType::F64))
    fail("", key, "unknown array element type " + std::to_string(static_cast<uint32_t>(e)));
  const size_t others = (e == GgufType::STRING ? 0 : v.strings.size()) + (e == GgufType::ARRAY ? 0 : v.items.size()) +
                        (gguf_scalar_size(e) && !is_float_type(e) ? 0 : v.ints.size()) +
                        (is_float_type(e) ? 0 : v.floats.size());
  if (others != 0)
    fail("", key, std::string("array of ") + gguf_type_name(e) + " has elements stored for another type");
  for (const auto& item : v.items) {
    if (item.type != GgufType::ARRAY) fail("", key, "nested array items must have type array");
    check_value(key, item, depth + 1);
  }
}

}  // namespace

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > (1u << 20))
    fail("", "general.alignment", "alignment must be a power of two up to 1 MiB, got " + std::to_string(alignment));
  if (alignment != 32) set_u32("general.alignment", static_cast<uint32_t>(alignment));
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  if (key.empty()) fail("", "metadata key", "empty key");
  if (key == "general.alignment" && (!value.is_int() || static_cast<uint64_t>(value.i) != alignment_))
    fail("", key, "set the alignment through the GgufWriter constructor");
  check_value(key, value, 0);
  if (value.type == GgufType::ARRAY) value.count = array_len(value);
  for (auto& [k, v] : kv_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  kv_.emplace_back(key, std::move(value));
}

namespace {
GgufValue scalar(GgufType t, int64_t i, double f = 0) {
  GgufValue v;
  v.type = t;
  v.i = i;
  v.f = f;
  return v;
}
}  // namespace

void GgufWriter::set_u8(const std::string& k, uint8_t v) { set(k, scalar(GgufType::U8, v)); }
void GgufWriter::set_i8(const std::string& k, int8_t v) { set(k, scalar(GgufType::I8, v)); }
void GgufWriter::set_u16(const std::string& k, uint16_t v) { set(k, scalar(GgufType::U16, v)); }
void GgufWriter::set_i16(const std::string& k, int16_t v) { set(k, scalar(GgufType::I16, v)); }
void GgufWriter::set_u32(const std::string& k, uint32_t v) { set(k, scalar(GgufType::U32, v)); }
void GgufWriter::set_i32(const std::string& k, int32_t v) { set(k, scalar(GgufType::I32, v)); }
void GgufWriter::set_u64(const std::string& k, uint64_t v) { set(k, scalar(GgufType::U64, static_cast<int64_t>(v))); }
void GgufWriter::set_i64(const std::string& k, int64_t v) { set(k, scalar(GgufType::I64, v)); }
void GgufWriter::set_f32(const std::string& k, float v) { set(k, scalar(GgufType::F32, 0, v)); }
void GgufWriter::set_f64(const std::string& k, double v) { set(k, scalar(GgufType::F64, 0, v)); }
void GgufWriter::set_bool(const std::string& k, bool v) { set(k, scalar(GgufType::BOOL, v ? 1 : 0)); }
void GgufWriter::set_string(const std::string& k, const std::string& v) {
  GgufValue x;
  x.type = GgufType::STRING;
  x.s = v;
  set(k, std::move(x));
}
void GgufWriter::set_strings(const std::string& k, const std::vector<std::string>& v) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem_type = GgufType::STRING;
  x.strings = v;
  set(k, std::move(x));
}
void GgufWriter::set_f32s(const std::string& k, const std::vector<float>& v) {
  set(k, array(GgufType::F32, {}, std::vector<double>(v.begin(), v.end())));
}
void GgufWriter::set_i32s(const std::string& k, const std::vector<int32_t>& v) {
  set(k, array(GgufType::I32, std::vector<int64_t>(v.begin(), v.end())));
}

GgufValue GgufWriter::array(GgufType elem_type, std::vector<int64_t> ints, std::vector<double> floats) {
  GgufValue x;
  x.type = GgufType::ARRAY;
  x.elem_type = elem_type;
  x.ints = std::move(ints);
  x.floats = std::move(floats);
  x.count = is_float_type(elem_type) ? x.floats.size() : x.ints.size();
  return x;
}

uint64_t GgufWriter::tensor_bytes(DType dtype, const std::vector<int64_t>& shape, const std::string& name) {
  const std::string field = name.empty() ? std::string("tensor") : "tensor '" + name + "'";
  auto info = dtype_info(static_cast<uint32_t>(dtype));
  if (!info) fail("", field, "unknown dtype id " + std::to_string(static_cast<uint32_t>(dtype)));
  if (shape.empty() || shape.size() > 4) fail("", field, "needs 1 to 4 dimensions, got " + std::to_string(shape.size()));
  uint64_t numel = 1;
  for (int64_t d : shape) {
    if (d <= 0 || d > (int64_t{1} << 40) || numel > (uint64_t{1} << 62) / static_cast<uint64_t>(d))
      fail("", field, "bad dimension " + std::to_string(d));
    numel *= static_cast<uint64_t>(d);
  }
  if (static_cast<uint64_t>(shape.back()) % info->block != 0)
    fail("", field, "row length " + std::to_string(shape.back()) + " is not a multiple of " + std::string(info->name) +
                        "'s block size " + std::to_string(info->block));
  return numel / info->block * info->block_bytes;
}

void GgufWriter::add(Tensor t) {
  if (t.name.empty()) fail("", "tensor name", "empty name");
  for (const auto& x : tensors_)
    if (x.name == t.name) fail("", "tensor '" + t.name + "'", "added twice");
  t.offset = data_end_;
  data_end_ = (data_end_ + t.nbytes + alignment_ - 1) / alignment_ * alignment_;
  tensors_.push_back(std::move(t));
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            std::vector<std::byte> bytes) {
  const uint64_t n = tensor_bytes(dtype, shape, name);
  if (bytes.size() != n)
    fail("", "tensor '" + name + "'", std::to_string(bytes.size()) + " bytes given, shape and type need " + std::to_string(n));
  add(Tensor{name, dtype, shape, n, 0, std::move(bytes), {}});
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            Producer producer) {
  if (!producer) fail("", "tensor '" + name + "'", "no producer");
  add(Tensor{name, dtype, shape, tensor_bytes(dtype, shape, name), 0, {}, std::move(producer)});
}

uint64_t GgufWriter::data_bytes() const { return data_end_; }

namespace {

// Everything before the data section: magic, version, counts, the metadata and the tensor infos.
template <class Kv, class Tensors>
void put_header(Out& o, const Kv& kv, const Tensors& tensors) {
  o.put("GGUF", 4);
  o.pod<uint32_t>(3);
  o.pod<uint64_t>(tensors.size());
  o.pod<uint64_t>(kv.size());
  for (const auto& [k, v] : kv) {
    o.str(k);
    o.pod(static_cast<uint32_t>(v.type));
    write_value(o, v);
  }
  for (const auto& t : tensors) {
    o.str(t.name);
    o.pod(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) o.pod(static_cast<uint64_t>(*it));
    o.pod(static_cast<uint32_t>(t.dtype));
    o.pod(t.offset);
  }
}

}  // namespace

uint64_t GgufWriter::file_size() const {
  const std::string none;
  Out o(-1, none);
  put_header(o, kv_, tensors_);
  return (o.written() + alignment_ - 1) / alignment_ * alignment_ + data_end_;
}

namespace {

// Opens an unnamed file in dir (O_TMPFILE): the kernel discards it if the process dies, SIGKILL included.
// Returns -1 with errno set when the filesystem or kernel cannot do that, so the caller falls back to a named
// temp file; errors that a named file would hit too (permissions, read-only, full disk) are reported here.
int open_unnamed(const std::string& dir, const std::string& path) {
#ifdef O_TMPFILE
  const int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
  if (fd >= 0) return fd;
  const int e = errno;
  switch (e) {
    case EACCES:
    case EPERM:
    case EROFS:
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
      fail(path, "", "cannot create a file in " + dir + ": " + std::strerror(e));
    default:  // EOPNOTSUPP, EISDIR (kernel without O_TMPFILE), EINVAL, ENOENT, ENOTDIR: the named path decides
      errno = e;
      return -1;
  }
#else
  (void)dir;
  (void)path;
  errno = EOPNOTSUPP;
  return -1;
#endif
}

// Gives the unnamed file fd the name tmp (which must not exist). Through /proc/self/fd (any user); without /proc,
// AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH on older kernels). Returns false with errno set if neither works.
bool link_unnamed(int fd, const std::string& tmp) {
  const std::string proc = "/proc/self/fd/" + std::to_string(fd);
  if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) return true;
  const int e = errno;
  if (e == EEXIST) return false;
#ifdef AT_EMPTY_PATH
  if (::linkat(fd, "", AT_FDCWD, tmp.c_str(), AT_EMPTY_PATH) == 0) return true;
#endif
  errno = e;
  return false;
}

}  // namespace

void GgufWriter::write(const std::string& path, const std::function<void(size_t, size_t)>& progress) const {
  namespace fs = std::filesystem;
  fs::path dest(path);
  fs::path dir = dest.parent_path();
  if (dir.empty()) dir = ".";
  const std::string tmp = (dir / (dest.filename().string() + ".tmp." + std::to_string(::getpid()))).string();

  // Preferred: an unnamed file that only gets a name (tmp, for the instant before the rename) once it is complete.
  int fd = open_unnamed(dir.string(), path);
  const bool unnamed = fd >= 0;
  std::optional<TempFileGuard> guard;
  if (unnamed) {
    guard.emplace("");  // nothing to remove yet, but Ctrl-C still reports that no partial output is left
  } else {
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail(path, "", "cannot create " + tmp + ": " + std::strerror(errno));
    guard.emplace(tmp);  // Ctrl-C / SIGTERM remove the partial file too
  }
  bool named = !unnamed;  // whether tmp exists on disk and must be removed on failure
  try {
    Out o(fd, path);
    put_header(o, kv_, tensors_);
    const uint64_t data_start = (o.written() + alignment_ - 1) / alignment_ * alignment_;
    o.zeros(data_start - o.written());
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const Tensor& t = tensors_[i];
      o.zeros(data_start + t.offset - o.written());
      if (t.producer) {
        uint64_t got = 0;
        t.producer([&](const void* p, size_t n) {
          if (n > t.nbytes - got)
            fail(path, "tensor '" + t.name + "'", "producer delivered more than the tensor's " + std::to_string(t.nbytes) + " bytes");
          o.put(p, n);
          got += n;
        });
        if (got != t.nbytes)
          fail(path, "tensor '" + t.name + "'",
               "producer delivered " + std::to_string(got) + " bytes, expected " + std::to_string(t.nbytes));
      } else {
        o.put(t.bytes.data(), t.bytes.size());
      }
      if (progress) progress(i + 1, tensors_.size());
    }
    o.zeros(data_start + data_end_ - o.written());
    o.flush();
    if (::fsync(fd) != 0) fail(path, "", std::string("fsync failed: ") + std::strerror(errno));
    if (unnamed) {
      // Name the complete file tmp, then rename tmp over path: only this short window leaves a name to clean up.
      guard.reset();
      guard.emplace(tmp);
      if (::unlink(tmp.c_str()) != 0 && errno != ENOENT)
        fail(path, "", "cannot remove stale " + tmp + ": " + std::strerror(errno));
      bool linked = link_unnamed(fd, tmp);
      if (!linked && errno == EEXIST && ::unlink(tmp.c_str()) == 0) linked = link_unnamed(fd, tmp);
      if (!linked)
        fail(path, "", "cannot give the finished temp file the name " + tmp +
                           " (linkat through /proc/self/fd; is /proc mounted?): " + std::strerror(errno));
      named = true;
    }
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) fail(path, "", std::string("close failed: ") + std::strerror(errno));
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(path, "", "cannot rename " + tmp + " into place: " + std::strerror(errno));
    named = false;
  } catch (...) {
    if (fd >= 0) ::close(fd);  // an unnamed file disappears here
    if (named) ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable.
  if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace lowbit::io
