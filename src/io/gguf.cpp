#include "io/gguf.h"

#include <cstring>
#include <limits>
#include <unordered_set>

#include "lowbit/error.h"
#include "tokenizer/unicode.h"

namespace lowbit::io {

namespace {

constexpr uint64_t kMaxDims = 4;             // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 4;            // nested arrays deeper than this are rejected
constexpr uint64_t kMaxStringBytes = 1ull << 30;

}  // namespace

size_t gguf_scalar_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

namespace {

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::BOOL: return "bool";
    case GgufType::STRING: return "string";
    case GgufType::ARRAY: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "?";
}

bool GgufValue::is_int() const {
  switch (type) {
    case GgufType::U8: case GgufType::I8: case GgufType::U16: case GgufType::I16: case GgufType::U32:
    case GgufType::I32: case GgufType::U64: case GgufType::I64: case GgufType::BOOL: return true;
    default: return false;
  }
}

bool GgufValue::is_float() const { return type == GgufType::F32 || type == GgufType::F64; }

std::string GgufValue::type_str() const {
  if (type != GgufType::ARRAY) return gguf_type_name(type);
  std::string inner = elem_type == GgufType::ARRAY ? std::string("array") : gguf_type_name(elem_type);
  return "array[" + inner + "]";
}

std::string GgufValue::to_string(size_t max_items) const {
  auto quote = [](const std::string& s) {
    std::string r = "\"";
    for (char c : s) {
      if (c == '\n') r += "\\n";
      else if (c == '"') r += "\\\"";
      else r += c;
    }
    return r + "\"";
  };
  switch (type) {
    case GgufType::STRING: return s.size() > 200 ? quote(s.substr(0, 200)) + "..." : quote(s);
    case GgufType::BOOL: return i ? "true" : "false";
    case GgufType::F32: case GgufType::F64: {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%g", f);
      return buf;
    }
    case GgufType::U64: return std::to_string(static_cast<uint64_t>(i));
    case GgufType::ARRAY: {
      std::string r = "[";
      size_t n = std::min<uint64_t>(count, max_items);
      for (size_t k = 0; k < n; ++k) {
        if (k) r += ", ";
        if (elem_type == GgufType::STRING) r += quote(strings[k]);
        else if (elem_type == GgufType::ARRAY) r += items[k].to_string(max_items);
        else if (elem_type == GgufType::F32 || elem_type == GgufType::F64) {
          char buf[64];
          std::snprintf(buf, sizeof buf, "%g", floats[k]);
          r += buf;
        } else if (elem_type == GgufType::U64) r += std::to_string(static_cast<uint64_t>(ints[k]));
        else r += std::to_string(ints[k]);
      }
      if (count > n) r += ", ... (" + std::to_string(count) + " items)";
      return r + "]";
    }
    default: return std::to_string(i);
  }
}

// Bounds-checked cursor over the mapped bytes.
class GgufParser {
 public:
  GgufParser(const std::string& path, const std::byte* data, uint64_t size) : path_(path), p_(data), size_(size) {}

  void need(uint64_t n, const std::string& field) {
    if (n > size_ - pos_)
      fail_at(path_, field, static_cast<int64_t>(pos_),
              "file truncated: need " + std::to_string(n) + " bytes, " + std::to_string(size_ - pos_) + " left");
  }
  template <class T>
  T read(const std::string& field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(const std::string& field) {
    uint64_t at = pos_;
    uint64_t n = read<uint64_t>(field + " (string length)");
    if (n > kMaxStringBytes || n > size_ - pos_)
      fail_at(path_, field, static_cast<int64_t>(at),
              "string length " + std::to_string(n) + " exceeds the " + std::to_string(size_ - pos_) +
                  " bytes left in the file");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    // GGUF strings are UTF-8 (keys, names, values, vocabularies).
    if (const size_t bad = tok::find_invalid_utf8(s); bad != std::string::npos)
      fail_at(path_, field, static_cast<int64_t>(pos_ + bad), "string is not valid UTF-8 (GGUF strings are UTF-8)");
    pos_ += n;
    return s;
  }

  void read_value(GgufValue& v, GgufType type, const std::string& field, int depth) {
    v.type = type;
    v.offset = pos_;
    switch (type) {
      case GgufType::U8: v.i = read<uint8_t>(field); break;
      case GgufType::I8: v.i = read<int8_t>(field); break;
      case GgufType::U16: v.i = read<uint16_t>(field); break;
      case GgufType::I16: v.i = read<int16_t>(field); break;
      case GgufType::U32: v.i = read<uint32_t>(field); break;
      case GgufType::I32: v.i = read<int32_t>(field); break;
      case GgufType::U64: v.i = static_cast<int64_t>(read<uint64_t>(field)); break;
      case GgufType::I64: v.i = read<int64_t>(field); break;
      case GgufType::F32: v.f = read<float>(field); break;
      case GgufType::F64: v.f = read<double>(field); break;
      case GgufType::BOOL: {
        uint8_t b = read<uint8_t>(field);
        if (b > 1) fail_at(path_, field, static_cast<int64_t>(v.offset), "bool value " + std::to_string(b) + " is not 0 or 1");
        v.i = b;
        break;
      }
      case GgufType::STRING: v.s = read_string(field); break;
      case GgufType::ARRAY: read_array(v, field, depth); break;
    }
  }

  void read_array(GgufValue& v, const std::string& field, int depth) {
    if (depth >= kMaxArrayDepth)
      fail_at(path_, field, static_cast<int64_t>(pos_), "arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    uint64_t at = pos_;
    uint32_t et = read<uint32_t>(field + " (array type)");
    if (!valid_type(et))
      fail_at(path_, field, static_cast<int64_t>(at), "unknown array element type " + std::to_string(et));
    v.elem_type = static_cast<GgufType>(et);
    uint64_t n = read<uint64_t>(field + " (array length)");
    // Every element takes at least one byte (strings and arrays at least 8): bound the count by the file.
    uint64_t min_elem = gguf_scalar_size(v.elem_type);
    if (min_elem == 0) min_elem = 8;
    if (n > (size_ - pos_) / min_elem)
      fail_at(path_, field, static_cast<int64_t>(at),
              "array of " + std::to_string(n) + " " + gguf_type_name(v.elem_type) + " elements cannot fit in the " +
                  std::to_string(size_ - pos_) + " bytes left");
    v.count = n;
    switch (v.elem_type) {
      case GgufType::STRING:
        v.strings.reserve(n);
        for (uint64_t k = 0; k < n; ++k) v.strings.push_back(read_string(field + "[" + std::to_string(k) + "]"));
        break;
      case GgufType::ARRAY:
        v.items.resize(n);
        for (uint64_t k = 0; k < n; ++k) read_array(v.items[k], field + "[" + std::to_string(k) + "]", depth + 1), v.items[k].type = GgufType::ARRAY;
        break;
      case GgufType::F32: case GgufType::F64:
        v.floats.resize(n);
        for (uint64_t k = 0; k < n; ++k) {
          GgufValue e;
          read_value(e, v.elem_type, field, depth + 1);
          v.floats[k] = e.f;
        }
        break;
      default:
        v.ints.resize(n);
        for (uint64_t k = 0; k < n; ++k) {
          GgufValue e;
          read_value(e, v.elem_type, field, depth + 1);
          v.ints[k] = e.i;
        }
    }
  }

  void parse(GgufFile& f) {
    need(4, "magic");
    if (std::memcmp(p_, "GGUF", 4) != 0) {
      fail_at(path_, "magic", 0, "not a GGUF file (expected \"GGUF\")");
    }
    pos_ = 4;
    f.version_ = read<uint32_t>("version");
    if (f.version_ != 2 && f.version_ != 3)
      fail_at(path_, "version", 4, "unsupported GGUF version " + std::to_string(f.version_) + " (expected 2 or 3)");
    uint64_t n_tensors = read<uint64_t>("tensor_count");
    uint64_t n_kv = read<uint64_t>("metadata_kv_count");
    // A KV pair takes >= 8 (key len) + 4 (type) + 1 bytes; a tensor info >= 8 + 4 + 8 + 4 + 8.
    if (n_kv > (size_ - pos_) / 13)
      fail_at(path_, "metadata_kv_count", 16, "count " + std::to_string(n_kv) + " cannot fit in the file");
    if (n_tensors > (size_ - pos_) / 32)
      fail_at(path_, "tensor_count", 8, "count " + std::to_string(n_tensors) + " cannot fit in the file");

    f.kv_.reserve(n_kv);
    for (uint64_t k = 0; k < n_kv; ++k) {
      uint64_t at = pos_;
      std::string key = read_string("metadata key #" + std::to_string(k));
      if (key.empty()) fail_at(path_, "metadata key #" + std::to_string(k), static_cast<int64_t>(at), "empty key");
      if (!keys_.insert(key).second) fail_at(path_, key, static_cast<int64_t>(at), "duplicate metadata key");
      uint64_t tat = pos_;
      uint32_t t = read<uint32_t>(key + " (type)");
      if (!valid_type(t)) fail_at(path_, key, static_cast<int64_t>(tat), "unknown value type " + std::to_string(t));
      GgufValue v;
      read_value(v, static_cast<GgufType>(t), key, 0);
      f.kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const GgufValue* a = f.find("general.alignment")) {
      if (!a->is_int() || a->i <= 0 || (a->i & (a->i - 1)) != 0 || a->i > (1 << 20))
        fail_at(path_, "general.alignment", static_cast<int64_t>(a->offset),
                "alignment must be a power of two up to 1 MiB, got " + a->to_string());
      f.alignment_ = static_cast<uint64_t>(a->i);
    }

    f.tensors_.reserve(n_tensors);
    for (uint64_t k = 0; k < n_tensors; ++k) {
      GgufTensor t;
      t.info_offset = pos_;
      t.name = read_string("tensor info #" + std::to_string(k) + " name");
      const std::string field = "tensor '" + t.name + "'";
      if (!names_.insert(t.name).second)
        fail_at(path_, field, static_cast<int64_t>(t.info_offset), "duplicate tensor name");
      uint64_t dat = pos_;
      uint32_t nd = read<uint32_t>(field + " n_dims");
      if (nd == 0 || nd > kMaxDims)
        fail_at(path_, field + " n_dims", static_cast<int64_t>(dat),
                "n_dims " + std::to_string(nd) + " (expected 1.." + std::to_string(kMaxDims) + ")");
      uint64_t numel = 1;
      for (uint32_t d = 0; d < nd; ++d) {
        uint64_t nat = pos_;
        uint64_t ne = read<uint64_t>(field + " ne");
        if (ne == 0 || ne > (1ull << 40) || numel > (std::numeric_limits<int64_t>::max() / ne))
          fail_at(path_, field + " ne[" + std::to_string(d) + "]", static_cast<int64_t>(nat),
                  "absurd dimension " + std::to_string(ne));
        numel *= ne;
        t.ne.push_back(ne);
      }
      uint64_t tat = pos_;
      t.raw_type = read<uint32_t>(field + " type");
      auto info = dtype_info(t.raw_type);
      if (!info)
        fail_at(path_, field + " type", static_cast<int64_t>(tat),
                "unknown ggml type id " + std::to_string(t.raw_type));
      t.known_type = true;
      t.dtype = static_cast<DType>(t.raw_type);
      if (t.ne[0] % info->block != 0)
        fail_at(path_, field, static_cast<int64_t>(t.info_offset),
                "row length " + std::to_string(t.ne[0]) + " is not a multiple of " + std::string(info->name) +
                    "'s block size " + std::to_string(info->block));
      // Bound by the file before multiplying: numel up to 2^63 times the block bytes would wrap.
      if (numel / info->block > size_ / info->block_bytes)
        fail_at(path_, field, static_cast<int64_t>(t.info_offset),
                std::to_string(numel) + " " + std::string(info->name) + " elements cannot fit in the file (" +
                    std::to_string(size_) + " bytes)");
      t.nbytes = numel / info->block * info->block_bytes;
      uint64_t oat = pos_;
      t.offset = read<uint64_t>(field + " offset");
      if (t.offset % f.alignment_ != 0)
        fail_at(path_, field + " offset", static_cast<int64_t>(oat),
                "data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                    std::to_string(f.alignment_));
      f.tensors_.push_back(std::move(t));
    }

    uint64_t data = (pos_ + f.alignment_ - 1) / f.alignment_ * f.alignment_;
    if (n_tensors > 0 && data > size_)
      fail_at(path_, "tensor data", static_cast<int64_t>(pos_), "file ends before the tensor data section");
    f.data_offset_ = data;
    const uint64_t data_size = size_ >= data ? size_ - data : 0;
    for (const auto& t : f.tensors_) {
      if (t.offset > data_size || t.nbytes > data_size - t.offset)
        fail_at(path_, "tensor '" + t.name + "' data", static_cast<int64_t>(data + t.offset),
                std::to_string(t.nbytes) + " bytes at data offset " + std::to_string(t.offset) +
                    " run past the end of the file (" + std::to_string(size_) + " bytes)");
    }
  }

 private:
  const std::string& path_;
  const std::byte* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::unordered_set<std::string> keys_, names_;
};

std::shared_ptr<const GgufFile> GgufFile::open(const std::string& path) {
  auto f = std::make_shared<GgufFile>();
  f->path_ = path;
  f->map_ = std::make_shared<MappedFile>(path);
  GgufParser parser(path, f->map_->data(), f->map_->size());
  parser.parse(*f);
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& [k, v] : kv_)
    if (k == key) return &v;
  return nullptr;
}

std::optional<int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_int())
    fail_at(path_, std::string(key), static_cast<int64_t>(v->offset), "expected an integer, found " + v->type_str());
  return v->i;
}

std::optional<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->is_float()) return v->f;
  if (v->is_int()) return static_cast<double>(v->i);
  fail_at(path_, std::string(key), static_cast<int64_t>(v->offset), "expected a number, found " + v->type_str());
}

std::optional<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::STRING)
    fail_at(path_, std::string(key), static_cast<int64_t>(v->offset), "expected a string, found " + v->type_str());
  return v->s;
}

std::optional<bool> GgufFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!v->is_int())
    fail_at(path_, std::string(key), static_cast<int64_t>(v->offset), "expected a bool, found " + v->type_str());
  return v->i != 0;
}

const std::vector<std::string>* GgufFile::get_strings(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return nullptr;
  if (v->type != GgufType::ARRAY || v->elem_type != GgufType::STRING)
    fail_at(path_, std::string(key), static_cast<int64_t>(v->offset),
            "expected an array of strings, found " + v->type_str());
  return &v->strings;
}

std::optional<std::vector<double>> GgufFile::get_numbers(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufType::ARRAY || v->elem_type == GgufType::STRING || v->elem_type == GgufType::ARRAY)
    fail_at(path_, std::string(key), static_cast<int64_t>(v->offset),
            "expected an array of numbers, found " + v->type_str());
  if (!v->floats.empty() || v->elem_type == GgufType::F32 || v->elem_type == GgufType::F64) return v->floats;
  std::vector<double> r(v->ints.begin(), v->ints.end());
  return r;
}

}  // namespace lowbit::io
