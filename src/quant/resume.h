// Progress of a `quantize` run kept on disk so that a killed run can continue (`--resume`): every quantized
// tensor's encoded bytes, saved as soon as they exist, in the directory "<out>.resume/" beside the output.
//   manifest.json  {"fingerprint": hex, "tensors": {"<index>": {"name", "bytes", "fnv1a64", "rel_error",
//                   "rel_output_error"}}}
//   <index>.bin    the tensor's encoded rows, in source row order
// Each save writes the tensor's file to a temporary name and renames it into place, then replaces the manifest the
// same way, so a killed process (whose writes the kernel keeps) leaves a manifest listing only complete tensors.
// Against a crash of the machine, which may lose writes not yet on disk, the files are fsynced once per block of
// tensors (when a save starts the next "blk.N" group): the saved tensors' files, then the manifest, then the
// directory -- one flush per block instead of four per tensor. A tensor whose file is missing or does not match
// the manifest's size and checksum is quantized again, never trusted. The fingerprint covers the source's
// checksum and path, every option and the calibration windows: progress made with other inputs is refused, never
// mixed in. A run that finishes removes the directory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit::quant {

struct SavedTensor {
  std::vector<std::byte> bytes;
  double rel_error = 0, rel_output_error = -1;
};

class ResumeStore {
 public:
  // The store for output `out`. resume: continue the progress found there (a fingerprint mismatch is an error;
  // none found starts afresh); otherwise any old progress is discarded.
  ResumeStore(const std::string& out, const std::string& fingerprint, bool resume);

  // Tensor i's saved bytes, if a previous run finished it and its file is intact (size and checksum verified
  // against the manifest; a damaged or missing file means the tensor is quantized again).
  std::optional<SavedTensor> load(size_t i, const std::string& name) const;
  // Records tensor i as done (thread-safe). Durable against a killed process on return; against a machine crash
  // once the next block's first save (or the end of the run) has flushed it.
  void save(size_t i, const std::string& name, const std::vector<std::byte>& bytes, double rel_error,
            double rel_output_error);
  size_t resumed() const { return resumed_; }  // tensors the manifest held at start
  // The run finished and its output is in place: the progress is no longer needed.
  void finish();

  static std::string dir_for(const std::string& out) { return out + ".resume"; }

 private:
  void sync();  // flushes the files saved since the last sync, then the manifest and the directory

  std::string dir_, fingerprint_;
  nlohmann::json manifest_;
  size_t resumed_ = 0;
  long saves_ = 0;
  int group_ = -2;                  // "blk.N" group of the last save (-1: tensors outside the blocks)
  std::vector<std::string> unsynced_;  // files renamed into place since the last flush
};

}  // namespace lowbit::quant
