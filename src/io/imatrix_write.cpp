#include "io/imatrix_write.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <limits>

#include "io/gguf_writer.h"
#include "lowbit/error.h"

namespace lowbit::io {

namespace {
std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> b(v.size() * sizeof(float));
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}
}  // namespace

void write_imatrix_gguf(const std::string& path, const ImatrixSums& s) {
  GgufWriter w;
  w.set_string("general.type", "imatrix");
  w.set_strings("imatrix.datasets", s.datasets);
  w.set_u32("imatrix.chunk_count", static_cast<uint32_t>(s.chunk_count));
  w.set_u32("imatrix.chunk_size", static_cast<uint32_t>(s.chunk_size));
  for (const auto& [name, e] : s.entries) {  // std::map: sorted by name, as llama-imatrix writes them
    std::vector<float> sums(e.sum_sq.begin(), e.sum_sq.end());
    const auto width = static_cast<int64_t>(sums.size());
    w.add_tensor(name + ".in_sum2", DType::F32, {1, width}, f32_bytes(sums));
    w.add_tensor(name + ".counts", DType::F32, {1, 1}, f32_bytes({static_cast<float>(e.tokens)}));
  }
  w.write(path);
}

void write_imatrix_legacy(const std::string& path, const ImatrixSums& s) {
  std::vector<char> out;
  auto put = [&](const void* p, size_t n) { out.insert(out.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n); };
  auto put_i32 = [&](int64_t v, const std::string& what) {
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) fail(path, what, "does not fit the legacy format's int32");
    const auto x = static_cast<int32_t>(v);
    put(&x, 4);
  };
  put_i32(static_cast<int64_t>(s.entries.size()), "entries");
  for (const auto& [name, e] : s.entries) {
    put_i32(static_cast<int64_t>(name.size()), name);
    put(name.data(), name.size());
    put_i32(e.calls, name + " ncall");
    put_i32(static_cast<int64_t>(e.sum_sq.size()), name + " nval");
    for (double v : e.sum_sq) {  // llama-imatrix (c392e509): values[i] / counts[i] * ncall, in float
      const float x = e.tokens > 0 ? static_cast<float>(v) / static_cast<float>(e.tokens) * static_cast<float>(e.calls) : 0.0f;
      put(&x, 4);
    }
  }
  put_i32(s.chunk_count, "chunk_count");
  const std::string dataset = s.datasets.empty() ? "" : s.datasets.front();
  put_i32(static_cast<int64_t>(dataset.size()), "dataset");
  put(dataset.data(), dataset.size());
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(path, "open", std::strerror(errno));
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(fd, out.data() + done, out.size() - done);
    if (n <= 0) {
      const std::string err = std::strerror(errno);
      ::close(fd);
      ::unlink(tmp.c_str());
      fail(path, "write", err);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail(path, "write", err);
  }
}

}  // namespace lowbit::io
