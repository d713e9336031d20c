// Helpers for the io tests: a scratch directory, raw file writing, a little-endian byte builder for crafting
// malformed files, and error capture.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "lowbit/error.h"

namespace lowbit::testing {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it when the fixture ends.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("lowbit-io-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

inline void write_file(const std::string& path, const void* data, size_t n) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  ASSERT_TRUE(out.good()) << path;
}
inline void write_file(const std::string& path, const std::string& s) { write_file(path, s.data(), s.size()); }
inline void write_file(const std::string& path, const std::vector<uint8_t>& b) { write_file(path, b.data(), b.size()); }

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Little-endian byte builder.
struct Bytes {
  std::vector<uint8_t> b;
  template <class T>
  Bytes& pod(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return *this;
  }
  Bytes& u8(uint8_t v) { return pod(v); }
  Bytes& u32(uint32_t v) { return pod(v); }
  Bytes& u64(uint64_t v) { return pod(v); }
  Bytes& i32(int32_t v) { return pod(v); }
  Bytes& f32(float v) { return pod(v); }
  Bytes& raw(const std::string& s) {
    const size_t at = b.size();
    b.resize(at + s.size());
    if (!s.empty()) std::memcpy(b.data() + at, s.data(), s.size());
    return *this;
  }
  Bytes& str(const std::string& s) { return u64(s.size()).raw(s); }  // GGUF string
  Bytes& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  Bytes& pad_to(size_t align) { return zeros((align - b.size() % align) % align); }
  size_t size() const { return b.size(); }
};

// The message of the lowbit::Error that f throws ("" and a test failure if it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const lowbit::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected lowbit::Error, got std::exception: " << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected lowbit::Error, nothing was thrown";
  return "";
}

// Every error is one line that names the file and the field.
#define EXPECT_ERROR_NAMES(msg, file, field)                         \
  do {                                                               \
    const std::string _m = (msg);                                    \
    EXPECT_NE(_m.find(file), std::string::npos) << _m;               \
    EXPECT_NE(_m.find(field), std::string::npos) << _m;              \
    EXPECT_EQ(_m.find('\n'), std::string::npos) << _m;               \
  } while (0)

}  // namespace lowbit::testing
