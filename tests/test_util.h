// Helpers shared by the test suites: paths to ../shared, reading raw files, skipping when fixtures are absent.
#pragma once
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lowbit::test {

inline std::string shared_dir() { return LOWBIT_SHARED_DIR; }
inline std::string shared(const std::string& rel) { return shared_dir() + "/" + rel; }
inline bool have_shared(const std::string& rel) { return std::filesystem::exists(shared(rel)); }

inline std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace lowbit::test

// Skips the test (with a reason) when a file under ../shared is missing.
#define LOWBIT_REQUIRE_SHARED(rel)                                                              \
  do {                                                                                          \
    if (!::lowbit::test::have_shared(rel)) GTEST_SKIP() << "../shared/" << (rel) << " not found"; \
  } while (0)

// Fails the test (with the reason) when a file under ../shared is missing: for acceptance tests that must run
// wherever the suite runs, where a skip would pass unnoticed.
#define LOWBIT_NEED_SHARED(rel)                                                                            \
  do {                                                                                                     \
    if (!::lowbit::test::have_shared(rel)) FAIL() << "../shared/" << (rel) << " not found (required fixture)"; \
  } while (0)
