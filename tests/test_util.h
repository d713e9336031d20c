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

// A file under ../shared the test needs: missing, the test fails with the reason (../shared is part of the suite's
// fixtures and present in CI: a skip there would pass unnoticed).
#define LOWBIT_REQUIRE_SHARED(rel)                                                                         \
  do {                                                                                                     \
    if (!::lowbit::test::have_shared(rel)) FAIL() << "../shared/" << (rel) << " not found (required fixture)"; \
  } while (0)

// The same (the acceptance tests' spelling).
#define LOWBIT_NEED_SHARED(rel) LOWBIT_REQUIRE_SHARED(rel)
