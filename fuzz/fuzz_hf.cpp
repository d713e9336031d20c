// A Hugging Face directory: config.json, tokenizer.json, model.safetensors (header JSON, dtypes, shapes, offsets)
// and, when the fourth part is not empty, model.safetensors.index.json (the sharded form's weight_map), carried as
// parts of one input (fuzz_util.h split_parts), then what the model targets all do.
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = lowbit::fuzz::split_parts(data, size, 4);
  const char* names[4] = {"config.json", "tokenizer.json", "model.safetensors", "model.safetensors.index.json"};
  const auto dir = lowbit::fuzz::scratch_dir() / "hf";
  std::filesystem::create_directories(dir);
  std::filesystem::remove(dir / names[3]);
  for (int i = 0; i < 4; ++i)
    if (i < 3 || !parts[i].empty())
      lowbit::fuzz::write_file(std::string("hf/") + names[i], reinterpret_cast<const uint8_t*>(parts[i].data()),
                               parts[i].size());
  try {
    lowbit::fuzz::exercise_model(lowbit::load_model(dir.string()));
  } catch (const lowbit::Error&) {
  }
  return 0;
}
