// Helpers for the tokenizer tests: fixture paths, file reading, llama.cpp test-vector parsing.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "lowbit/tokenizer.h"
#include "test_util.h"

namespace tok_test {

using lowbit::test::shared;
using lowbit::test::shared_dir;
inline bool have(const std::string& rel) { return lowbit::test::have_shared(rel); }

#define REQUIRE_SHARED(rel) LOWBIT_REQUIRE_SHARED(rel)

inline std::string read_file(const std::string& path, size_t max_bytes = std::string::npos) {
  std::string s = lowbit::test::read_file(path);
  if (s.size() > max_bytes) s.resize(max_bytes);
  return s;
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

inline std::string temp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("lowbit_tok_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

inline std::unique_ptr<lowbit::Tokenizer> gguf_tokenizer(const std::string& rel) {
  auto f = lowbit::io::GgufFile::open(shared(rel));
  return lowbit::make_tokenizer(lowbit::io::tokenizer_spec_from_gguf(*f));
}

// llama.cpp test vectors: .inp holds strings each followed by "\n__ggml_vocab_test__\n"; .out one line of
// space-separated ids per string.
struct Vector {
  std::string text;
  std::vector<int32_t> ids;
};
inline std::vector<Vector> load_vectors(const std::string& rel_base) {
  std::string inp = read_file(shared(rel_base + ".inp"));
  std::string outs = read_file(shared(rel_base + ".out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Vector> v;
  size_t pos = 0;
  for (;;) {
    size_t m = inp.find(sep, pos);
    if (m == std::string::npos) break;
    v.push_back({inp.substr(pos, m - pos), {}});
    pos = m + sep.size();
  }
  std::istringstream lines(outs);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line) && i < v.size()) {
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) v[i].ids.push_back(id);
    ++i;
  }
  EXPECT_EQ(i, v.size()) << "one .out line per .inp string";
  return v;
}

inline std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

}  // namespace tok_test
