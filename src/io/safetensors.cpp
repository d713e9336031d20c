#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "lowbit/error.h"

namespace lowbit::io {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the safetensors spec's own limit
constexpr uint64_t kMaxNumel = 1ull << 48;

// Element size of a dtype lowbit reads; 0 (and a clear error by the caller) for the others.
bool parse_dtype(const std::string& s, DType& t, uint64_t& size) {
  if (s == "F32") return t = DType::F32, size = 4, true;
  if (s == "F16") return t = DType::F16, size = 2, true;
  if (s == "BF16") return t = DType::BF16, size = 2, true;
  return false;
}

}  // namespace

std::shared_ptr<const SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  using nlohmann::json;
  auto f = std::make_shared<SafetensorsFile>();
  f->path_ = path;
  f->map_ = std::make_shared<MappedFile>(path);
  const uint64_t size = f->map_->size();
  const std::byte* p = f->map_->data();

  if (size < 8)
    fail_at(path, "header length", 0,
            "file truncated: need 8 bytes for the header length, the file has " + std::to_string(size));
  uint64_t n = 0;
  std::memcpy(&n, p, 8);  // little-endian on every platform lowbit runs on
  if (n > size - 8)
    fail_at(path, "header length", 0,
            "header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
                " bytes after it (file truncated or not a safetensors file)");
  if (n > kMaxHeaderBytes)
    fail_at(path, "header length", 0, "header length " + std::to_string(n) + " exceeds the 100 MiB limit");
  if (n < 2) fail_at(path, "header", 8, "header of " + std::to_string(n) + " bytes cannot hold a JSON object");
  f->data_offset_ = 8 + n;
  const uint64_t data_size = size - f->data_offset_;

  json h;
  try {
    h = json::parse(reinterpret_cast<const char*>(p + 8), reinterpret_cast<const char*>(p + 8 + n));
  } catch (const json::exception& e) {
    fail_at(path, "header", 8, std::string("invalid JSON: ") + e.what());
  }
  if (!h.is_object()) fail_at(path, "header", 8, std::string("expected a JSON object, found ") + h.type_name());

  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(path, "__metadata__", std::string("expected an object, found ") + v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m)
        f->metadata_.emplace_back(m.key(), m.value().is_string() ? m.value().get<std::string>() : m.value().dump());
      continue;
    }
    const std::string field = "tensor '" + name + "'";
    if (!v.is_object()) fail(path, field, std::string("expected an object, found ") + v.type_name());
    SafetensorsTensor t;
    t.name = name;

    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail(path, field + " dtype", "missing or not a string");
    uint64_t esize = 0;
    if (!parse_dtype(dt->get<std::string>(), t.dtype, esize))
      fail(path, field + " dtype", "unsupported dtype \"" + dt->get<std::string>() + "\" (lowbit reads F32, F16, BF16)");

    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail(path, field + " shape", "missing or not an array");
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned())
        fail(path, field + " shape", "dimension " + d.dump() + " is not a non-negative integer");
      const uint64_t x = d.get<uint64_t>();
      if (x > kMaxNumel || (x != 0 && numel > kMaxNumel / x))
        fail(path, field + " shape", "absurd shape " + sh->dump());
      numel *= x;
      t.shape.push_back(static_cast<int64_t>(x));
    }

    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail(path, field + " data_offsets", "expected [begin, end] as two non-negative integers");
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    if (t.begin > t.end)
      fail(path, field + " data_offsets", "begin " + std::to_string(t.begin) + " is after end " + std::to_string(t.end));
    if (t.end > data_size)
      fail_at(path, field + " data_offsets", static_cast<int64_t>(f->data_offset_),
              "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] runs past the end of the " +
                  std::to_string(data_size) + "-byte data section (file truncated?)");
    if (t.end - t.begin != numel * esize)
      fail(path, field + " data_offsets",
           "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] holds " + std::to_string(t.end - t.begin) +
               " bytes but shape " + sh->dump() + " of " + dt->get<std::string>() + " needs " +
               std::to_string(numel * esize));
    f->tensors_.push_back(std::move(t));
  }
  std::stable_sort(f->tensors_.begin(), f->tensors_.end(),
                   [](const SafetensorsTensor& a, const SafetensorsTensor& b) { return a.begin < b.begin; });
  return f;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace lowbit::io
