#include "quant/resume.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "core/checksum.h"
#include "core/json_file.h"
#include "io/arch.h"
#include "lowbit/error.h"

namespace lowbit::quant {
namespace {

std::mutex g_mu;  // save() may be called from the writer's callbacks

void fsync_path(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) fail(path, "", std::string("cannot open to sync: ") + std::strerror(errno));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) fail(path, "", std::string("fsync failed: ") + std::strerror(errno));
}

// Writes bytes to path.tmp and renames it over path: a reader (or a resumed run after a kill) sees the old file or
// the new one, never a part. Durable on disk only after fsync_path (the rename after the directory's).
void write_replace(const std::string& path, const void* data, size_t n) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, "", std::string("cannot create: ") + std::strerror(errno));
  const auto* p = static_cast<const char*>(data);
  size_t left = n;
  while (left > 0) {
    const ssize_t w = ::write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      ::close(fd);
      fail(tmp, "", std::string("write failed: ") + std::strerror(errno));
    }
    p += w;
    left -= static_cast<size_t>(w);
  }
  if (::close(fd) != 0) fail(tmp, "", std::string("close failed: ") + std::strerror(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "", std::string("cannot rename into place: ") + std::strerror(errno));
}

// The "blk.N" group of a tensor name, -1 outside the blocks.
int group_of(const std::string& name) { return io::layer_of_name(name); }

}  // namespace

ResumeStore::ResumeStore(const std::string& out, const std::string& fingerprint, bool resume)
    : dir_(dir_for(out)), fingerprint_(fingerprint) {
  namespace fs = std::filesystem;
  const std::string mpath = dir_ + "/manifest.json";
  if (resume && fs::exists(mpath)) {
    manifest_ = read_json_file(mpath);
    const auto fp = manifest_.find("fingerprint");
    if (fp == manifest_.end() || !fp->is_string() || fp->get<std::string>() != fingerprint_)
      fail(mpath, "fingerprint",
           "the saved progress was made from another source or with other options; run again without --resume "
           "to start over");
    if (!manifest_.contains("tensors") || !manifest_["tensors"].is_object())
      fail(mpath, "tensors", "expected an object");
    resumed_ = manifest_["tensors"].size();
    return;
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);  // a fresh run: old progress is stale
  ec.clear();
  fs::create_directory(dir_, ec);  // not create_directories: a missing output directory stays an error
  if (ec) fail(dir_, "", "cannot create the progress directory: " + ec.message());
  manifest_ = {{"fingerprint", fingerprint_}, {"tensors", nlohmann::json::object()}};
  const std::string text = manifest_.dump();
  write_replace(mpath, text.data(), text.size());
  fsync_path(mpath, O_RDONLY);
  fsync_path(dir_, O_RDONLY | O_DIRECTORY);
}

std::optional<SavedTensor> ResumeStore::load(size_t i, const std::string& name) const {
  const auto& ts = manifest_["tensors"];
  const auto it = ts.find(std::to_string(i));
  if (it == ts.end()) return std::nullopt;
  const std::string path = dir_ + "/" + std::to_string(i) + ".bin";
  if (it->value("name", "") != name) fail(path, "name", "holds '" + it->value("name", "") + "', expected '" + name + "'");
  // A machine crash can leave a listed file short or stale (it is flushed once per block): quantized again.
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  SavedTensor s;
  const auto bytes = it->value("bytes", uint64_t{0});
  s.bytes.resize(static_cast<size_t>(bytes));
  f.read(reinterpret_cast<char*>(s.bytes.data()), static_cast<std::streamsize>(bytes));
  if (static_cast<uint64_t>(f.gcount()) != bytes || f.peek() != std::char_traits<char>::eof()) return std::nullopt;
  if (hex64(fnv1a64(s.bytes.data(), s.bytes.size())) != it->value("fnv1a64", "")) return std::nullopt;
  s.rel_error = it->value("rel_error", 0.0);
  s.rel_output_error = it->value("rel_output_error", -1.0);
  return s;
}

void ResumeStore::save(size_t i, const std::string& name, const std::vector<std::byte>& bytes, double rel_error,
                       double rel_output_error) {
  std::lock_guard<std::mutex> lock(g_mu);
  const std::string mpath = dir_ + "/manifest.json";
  // The first save of a new block flushes the previous block: its files, then the manifest listing them, then
  // the directory holding their names.
  if (const int g = group_of(name); g != group_) {
    sync();
    group_ = g;
  }
  const std::string path = dir_ + "/" + std::to_string(i) + ".bin";
  write_replace(path, bytes.data(), bytes.size());
  unsynced_.push_back(path);
  manifest_["tensors"][std::to_string(i)] = {{"name", name},
                                             {"bytes", bytes.size()},
                                             {"fnv1a64", hex64(fnv1a64(bytes.data(), bytes.size()))},
                                             {"rel_error", rel_error},
                                             {"rel_output_error", rel_output_error}};
  const std::string text = manifest_.dump();
  write_replace(mpath, text.data(), text.size());
  // Test hook for the kill tests (tests/cli): LOWBIT_TEST_KILL_AFTER_SAVES=N ends the process with SIGKILL right
  // after the N-th tensor is saved, a deterministic point in an otherwise timing-dependent kill.
  static const long kill_after = [] {
    const char* e = std::getenv("LOWBIT_TEST_KILL_AFTER_SAVES");
    return e ? std::strtol(e, nullptr, 10) : 0L;
  }();
  if (kill_after > 0 && ++saves_ == kill_after) ::raise(SIGKILL);
}

void ResumeStore::sync() {
  if (unsynced_.empty()) return;
  for (const std::string& p : unsynced_) fsync_path(p, O_RDONLY);
  fsync_path(dir_ + "/manifest.json", O_RDONLY);
  fsync_path(dir_, O_RDONLY | O_DIRECTORY);
  unsynced_.clear();
}

void ResumeStore::finish() {
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

}  // namespace lowbit::quant
