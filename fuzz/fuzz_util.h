// Shared helpers for the libFuzzer targets (fuzz/*.cpp; built by -DLOWBIT_FUZZ=ON with clang, run by
// scripts/fuzz.sh). The parsers read files, so each input is written to a per-process scratch directory on tmpfs.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::fuzz {

// A directory private to this process (removed at exit), under /dev/shm when it exists.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path base = std::filesystem::exists("/dev/shm") ? "/dev/shm" : std::filesystem::temp_directory_path();
    auto d = base / ("lowbit_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    static struct Cleanup {
      std::filesystem::path p;
      ~Cleanup() {
        std::error_code ec;
        std::filesystem::remove_all(p, ec);
      }
    } cleanup{d};
    return d;
  }();
  return dir;
}

// Writes bytes to scratch_dir() / name and returns the path.
inline std::string write_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = (scratch_dir() / name).string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// Splits an input into `parts` pieces at the separator "\n--lowbit-part--\n" (missing pieces are empty), so one
// input can carry several files (a Hugging Face directory, a llama2.c checkpoint and its tokenizer).
inline std::vector<std::string_view> split_parts(const uint8_t* data, size_t size, size_t parts) {
  static constexpr std::string_view kSep = "\n--lowbit-part--\n";
  std::string_view s(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> out;
  while (out.size() + 1 < parts) {
    const size_t at = s.find(kSep);
    if (at == std::string_view::npos) break;
    out.push_back(s.substr(0, at));
    s.remove_prefix(at + kSep.size());
  }
  out.push_back(s);
  out.resize(parts);
  return out;
}

}  // namespace lowbit::fuzz

#include <memory>

#include "lowbit/error.h"
#include "lowbit/model.h"
#include "lowbit/model_file.h"
#include "lowbit/tokenizer.h"

namespace lowbit::fuzz {

// What every model target does with a file the loader accepted: build its tokenizer and round-trip a string,
// and, for a small model, run two tokens through it (shape assumptions the loader let through would show here).
// Rejections are lowbit::Error; anything else -- a crash, a sanitizer report, another exception -- is a finding.
inline void exercise_model(const std::shared_ptr<const ModelFile>& m) {
  try {
    const auto tok = make_tokenizer(m->tokenizer);
    const auto ids = tok->encode("Once upon a time, \xc3\xa9t\xc3\xa9 <s> 42", true);
    (void)tok->decode(ids);
  } catch (const Error&) {
  }
  if (m->total_bytes() > (size_t{4} << 20) || m->config.n_vocab <= 0) return;
  try {
    Model model(m, 8);
    std::vector<float> logits(static_cast<size_t>(m->config.n_vocab));
    const int32_t ids[2] = {0, m->config.n_vocab - 1};
    model.forward(std::span<const int32_t>(ids, 2), 0, logits.data(), false);
  } catch (const Error&) {
  }
}

}  // namespace lowbit::fuzz
