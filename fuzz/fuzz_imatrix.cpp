// llama.cpp importance matrices (io/imatrix.cpp): the legacy binary layout and the GGUF one, normalised; every
// input either reads or is one lowbit::Error.
#include <cmath>

#include "fuzz/fuzz_util.h"
#include "io/imatrix.h"
#include "lowbit/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = lowbit::fuzz::write_file("m.imatrix", data, size);
  try {
    const lowbit::io::Imatrix im = lowbit::io::load_imatrix(path);
    // What the reader promises: every value finite and >= 0.
    for (const auto& [name, v] : im.entries)
      for (float x : v)
        if (!std::isfinite(x) || x < 0.0f) std::abort();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
