#include "io/imatrix.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "core/checksum.h"
#include "core/mapped_file.h"
#include "io/gguf.h"
#include "lowbit/error.h"

namespace lowbit::io {

namespace {

// A value llama-quantize would accept: finite (it rejects non-finite values itself) and >= 0 (a sum of squares or
// a token count cannot be negative; a negative one means the file is damaged, not a statistic).
void check_value(const std::string& path, const std::string& field, int64_t offset, float v, const char* what) {
  if (!std::isfinite(v)) fail_at(path, field, offset, std::string("non-finite ") + what + " (expected finite and >= 0)");
  if (v < 0.0f)
    fail_at(path, field, offset, std::string("negative ") + what + " " + std::to_string(v) + " (expected >= 0)");
}

// Bounds-checked little-endian cursor over the legacy file.
class Cursor {
 public:
  Cursor(const std::string& path, const std::byte* p, uint64_t n) : path_(path), p_(p), n_(n) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return n_ - pos_; }
  int32_t i32(const std::string& field) {
    need(4, field);
    int32_t v;
    std::memcpy(&v, p_ + pos_, 4);
    pos_ += 4;
    return v;
  }
  const std::byte* take(uint64_t n, const std::string& field) {
    need(n, field);
    const std::byte* at = p_ + pos_;
    pos_ += n;
    return at;
  }

 private:
  void need(uint64_t n, const std::string& field) const {
    if (n > n_ - pos_)
      fail_at(path_, field, static_cast<int64_t>(pos_),
              "file truncated: need " + std::to_string(n) + " bytes, " + std::to_string(n_ - pos_) + " left");
  }
  const std::string& path_;
  const std::byte* p_;
  uint64_t n_, pos_ = 0;
};

void load_legacy(const MappedFile& m, Imatrix& im) {
  const std::string& path = im.path;
  Cursor c(path, m.data(), m.size());
  const int32_t n_entries = c.i32("n_entries");
  if (n_entries < 1) fail_at(path, "n_entries", 0, std::to_string(n_entries) + " entries (expected at least 1)");
  // (No bound from the count itself: entries are read one by one, each checked against the bytes left.)
  for (int32_t k = 0; k < n_entries; ++k) {
    const std::string entry = "entry #" + std::to_string(k);
    const uint64_t len_at = c.pos();
    const int32_t len = c.i32(entry + " name length");
    if (len < 1 || static_cast<uint64_t>(len) > c.left())
      fail_at(path, entry + " name length", static_cast<int64_t>(len_at),
              std::to_string(len) + " (expected 1.." + std::to_string(c.left()) + ", the bytes left in the file)");
    const std::byte* nb = c.take(static_cast<uint64_t>(len), entry + " name");
    std::string name(reinterpret_cast<const char*>(nb), static_cast<size_t>(len));
    if (name.find('\0') != std::string::npos)
      fail_at(path, entry + " name", static_cast<int64_t>(len_at + 4), "contains a NUL byte");
    const std::string field = "entry '" + name + "'";
    const uint64_t ncall_at = c.pos();
    const int32_t ncall = c.i32(field + " ncall");
    if (ncall < 0)
      fail_at(path, field + " ncall", static_cast<int64_t>(ncall_at), std::to_string(ncall) + " calls (expected >= 0)");
    const uint64_t nval_at = c.pos();
    const int32_t nval = c.i32(field + " nval");
    if (nval < 1 || static_cast<uint64_t>(nval) > c.left() / 4)
      fail_at(path, field + " nval", static_cast<int64_t>(nval_at),
              std::to_string(nval) + " values (expected 1.." + std::to_string(c.left() / 4) +
                  ", what the bytes left in the file hold)");
    const uint64_t vals_at = c.pos();
    const std::byte* vb = c.take(static_cast<uint64_t>(nval) * 4, field + " values");
    std::vector<float> v(static_cast<size_t>(nval));
    std::memcpy(v.data(), vb, v.size() * 4);
    for (size_t j = 0; j < v.size(); ++j)
      check_value(path, field + " value [" + std::to_string(j) + "]", static_cast<int64_t>(vals_at + 4 * j), v[j],
                  "sum of squares");
    // llama-quantize: `v /= ncall` on a float with an int: the int converted to float, then a float division.
    if (ncall > 0) {
      const float calls = static_cast<float>(ncall);
      for (float& x : v) x /= calls;
    }
    if (!im.entries.emplace(name, std::move(v)).second)
      fail_at(path, field, static_cast<int64_t>(len_at), "duplicate entry name");
  }
  if (c.left() == 0) return;  // the chunk count and dataset name are optional
  const uint64_t cc_at = c.pos();
  const int32_t chunks = c.i32("chunk count");
  if (chunks < 0) fail_at(path, "chunk count", static_cast<int64_t>(cc_at), std::to_string(chunks) + " (expected >= 0)");
  im.chunk_count = chunks;
  const uint64_t dl_at = c.pos();
  const int32_t dlen = c.i32("dataset name length");
  if (dlen < 0 || static_cast<uint64_t>(dlen) > c.left())
    fail_at(path, "dataset name length", static_cast<int64_t>(dl_at),
            std::to_string(dlen) + " (expected 0.." + std::to_string(c.left()) + ", the bytes left in the file)");
  const std::byte* db = c.take(static_cast<uint64_t>(dlen), "dataset name");
  if (dlen > 0) im.datasets.emplace_back(reinterpret_cast<const char*>(db), static_cast<size_t>(dlen));
  if (c.left() != 0)
    fail_at(path, "end of file", static_cast<int64_t>(c.pos()),
            std::to_string(c.left()) + " unexpected bytes after the dataset name (expected the end of the file)");
}

void load_gguf(Imatrix& im) {
  const std::string& path = im.path;
  auto g = GgufFile::open(path);
  // llama-quantize refuses a GGUF imatrix without these ("missing imatrix metadata").
  for (const char* key : {"imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"})
    if (!g->find(key))
      fail(path, key, "missing (a GGUF imatrix records imatrix.datasets, imatrix.chunk_count and imatrix.chunk_size)");
  im.datasets = *g->get_strings("imatrix.datasets");
  im.chunk_count = *g->get_int("imatrix.chunk_count");
  im.chunk_size = *g->get_int("imatrix.chunk_size");
  if (im.chunk_count < 0) fail(path, "imatrix.chunk_count", std::to_string(im.chunk_count) + " (expected >= 0)");
  if (im.chunk_size < 0) fail(path, "imatrix.chunk_size", std::to_string(im.chunk_size) + " (expected >= 0)");

  // "<name>.in_sum2" and "<name>.counts" pair up by name; other tensors are not statistics (llama.cpp skips them).
  struct Pair {
    const GgufTensor* sums = nullptr;
    const GgufTensor* counts = nullptr;
  };
  std::map<std::string, Pair> pairs;
  auto strip = [](const std::string& s, const std::string& suffix, std::string& base) {
    if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    base = s.substr(0, s.size() - suffix.size());
    return true;
  };
  for (const GgufTensor& t : g->tensors()) {
    std::string base;
    if (strip(t.name, ".in_sum2", base)) pairs[base].sums = &t;
    else if (strip(t.name, ".counts", base)) pairs[base].counts = &t;
  }
  if (pairs.empty()) fail(path, "tensors", "no '<name>.in_sum2' / '<name>.counts' statistics (expected at least one)");
  for (const auto& [name, p] : pairs) {
    if (!p.counts) fail(path, "tensor '" + name + ".in_sum2'", "has no '" + name + ".counts' beside it");
    if (!p.sums) fail(path, "tensor '" + name + ".counts'", "has no '" + name + ".in_sum2' beside it");
    for (const GgufTensor* t : {p.sums, p.counts})
      if (t->dtype != DType::F32)
        fail(path, "tensor '" + t->name + "'", "type " + std::string(dtype_name(t->dtype)) + " (expected f32)");
    const uint64_t nval = p.sums->nbytes / 4, ncounts = p.counts->nbytes / 4;
    if (nval % ncounts != 0)
      fail(path, "tensor '" + name + ".in_sum2'",
           std::to_string(nval) + " values do not divide into the " + std::to_string(ncounts) +
               " counts of '" + name + ".counts' (expected n_expert x width values for n_expert counts)");
    const uint64_t width = nval / ncounts;
    const float* sums = reinterpret_cast<const float*>(g->tensor_data(*p.sums));
    const float* counts = reinterpret_cast<const float*>(g->tensor_data(*p.counts));
    const int64_t sums_at = static_cast<int64_t>(g->data_offset() + p.sums->offset);
    const int64_t counts_at = static_cast<int64_t>(g->data_offset() + p.counts->offset);
    std::vector<float> e(static_cast<size_t>(nval));
    for (uint64_t j = 0; j < ncounts; ++j) {
      float c;
      std::memcpy(&c, counts + j, 4);
      check_value(path, "tensor '" + name + ".counts' [" + std::to_string(j) + "]",
                  counts_at + static_cast<int64_t>(4 * j), c, "count");
      if (c > static_cast<float>(std::numeric_limits<int64_t>::max() / 2))
        fail_at(path, "tensor '" + name + ".counts' [" + std::to_string(j) + "]", counts_at + static_cast<int64_t>(4 * j),
                "count " + std::to_string(c) + " is absurd (expected a number of tokens)");
      // llama.cpp keeps counts as integers (lround) and divides by their float conversion.
      const float count = static_cast<float>(std::lround(c));
      for (uint64_t i = 0; i < width; ++i) {
        const uint64_t k = j * width + i;
        float s;
        std::memcpy(&s, sums + k, 4);
        check_value(path, "tensor '" + name + ".in_sum2' [" + std::to_string(k) + "]",
                    sums_at + static_cast<int64_t>(4 * k), s, "sum of squares");
        e[k] = count > 0.0f ? s / count : 1.0f;
      }
    }
    im.entries.emplace(name, std::move(e));
  }
}

}  // namespace

Imatrix load_imatrix(const std::string& path) {
  Imatrix im;
  im.path = path;
  MappedFile m(path);
  im.checksum = fnv1a64(m.data(), m.size());
  if (m.size() >= 4 && std::memcmp(m.data(), "GGUF", 4) == 0) {
    im.format = "gguf";
    load_gguf(im);
  } else {
    im.format = "legacy";
    load_legacy(m, im);
  }
  return im;
}

}  // namespace lowbit::io
