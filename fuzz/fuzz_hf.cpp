// A Hugging Face directory: config.json, tokenizer.json and model.safetensors (header JSON, dtypes, shapes, offsets)
// carried as three parts of one input (fuzz_util.h split_parts), then what the model targets all do.
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = lowbit::fuzz::split_parts(data, size, 3);
  const char* names[3] = {"config.json", "tokenizer.json", "model.safetensors"};
  const auto dir = lowbit::fuzz::scratch_dir() / "hf";
  std::filesystem::create_directories(dir);
  for (int i = 0; i < 3; ++i)
    lowbit::fuzz::write_file(std::string("hf/") + names[i], reinterpret_cast<const uint8_t*>(parts[i].data()),
                             parts[i].size());
  try {
    lowbit::fuzz::exercise_model(lowbit::load_model(dir.string()));
  } catch (const lowbit::Error&) {
  }
  return 0;
}
