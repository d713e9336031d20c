// GGUF reader on crafted malformed files, and writer -> reader round trips (every metadata type, tensors,
// alignment, streaming producers, atomic replacement).
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io_testing.h"

namespace lowbit {
namespace {

using io::GgufFile;
using io::GgufType;
using io::GgufValue;
using io::GgufWriter;
using testing::Bytes;
using testing::error_of;

class Gguf : public testing::TempDirTest {
 protected:
  std::string put(const Bytes& b, const std::string& name = "x.gguf") {
    const std::string p = path(name);
    testing::write_file(p, b.b);
    return p;
  }
  std::string open_error(const Bytes& b) {
    const std::string p = put(b);
    return error_of([&] { GgufFile::open(p); });
  }
  // Header with the given counts.
  static Bytes header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    Bytes b;
    b.raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
    return b;
  }
  // One tensor info: name, dims (ggml order), type, offset.
  static void tensor_info(Bytes& b, const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    b.str(name).u32(static_cast<uint32_t>(ne.size()));
    for (auto n : ne) b.u64(n);
    b.u32(type).u64(offset);
  }
  // A file with one kv and one f32 tensor of ne; the caller may corrupt it before writing.
  static Bytes one_tensor(std::vector<uint64_t> ne = {4, 2}, uint32_t type = 0, uint64_t offset = 0, size_t data = 32) {
    Bytes b = header(1, 1);
    b.str("general.architecture").u32(8).str("llama");
    tensor_info(b, "w", std::move(ne), type, offset);
    b.pad_to(32).zeros(data);
    return b;
  }
};

TEST_F(Gguf, CraftedValidFileOpens) {
  auto f = GgufFile::open(put(one_tensor()));
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].nbytes, 32u);
  EXPECT_EQ(f->get_string("general.architecture"), "llama");
}

TEST_F(Gguf, WrongMagic) {
  Bytes b = one_tensor();
  b.b[0] = 'F';
  EXPECT_ERROR_NAMES(open_error(b), path("x.gguf"), "magic");
}

TEST_F(Gguf, Version1) {
  const std::string msg = open_error(header(0, 0, 1));
  EXPECT_ERROR_NAMES(msg, path("x.gguf"), "version");
  EXPECT_NE(msg.find("version 1"), std::string::npos) << msg;
}

TEST_F(Gguf, TruncatedHeader) {
  Bytes b;
  b.raw("GGUF").u32(3).u32(0);  // tensor_count cut in half
  EXPECT_ERROR_NAMES(open_error(b), path("x.gguf"), "tensor_count");
  Bytes c;
  c.raw("GG");
  EXPECT_ERROR_NAMES(open_error(c), path("x.gguf"), "magic");
  Bytes d = header(0, 1);
  d.str("general.architecture").u32(8);  // value missing
  EXPECT_ERROR_NAMES(open_error(d), path("x.gguf"), "general.architecture");
}

TEST_F(Gguf, AbsurdCounts) {
  EXPECT_ERROR_NAMES(open_error(header(0, uint64_t{1} << 60)), path("x.gguf"), "metadata_kv_count");
  EXPECT_ERROR_NAMES(open_error(header(uint64_t{1} << 60, 0)), path("x.gguf"), "tensor_count");
  EXPECT_ERROR_NAMES(open_error(header(UINT64_MAX, UINT64_MAX)), path("x.gguf"), "count");
  // An array whose length cannot fit in the rest of the file.
  Bytes b = header(0, 1);
  b.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(uint64_t{1} << 40);
  EXPECT_ERROR_NAMES(open_error(b), path("x.gguf"), "tokenizer.ggml.tokens");
}

TEST_F(Gguf, StringLengthPastEof) {
  Bytes b = header(0, 1);
  b.str("general.name").u32(8).u64(1000).raw("short");
  const std::string msg = open_error(b);
  EXPECT_ERROR_NAMES(msg, path("x.gguf"), "general.name");
  EXPECT_NE(msg.find("1000"), std::string::npos) << msg;
  // A key whose own length runs past the end.
  Bytes c = header(0, 1);
  c.u64(1u << 20).raw("gen").zeros(64);
  EXPECT_ERROR_NAMES(open_error(c), path("x.gguf"), "metadata key #0");
}

TEST_F(Gguf, TensorDataPastEof) {
  const std::string msg = open_error(one_tensor({4, 2}, 0, 0, 16));  // 32 bytes needed, 16 present
  EXPECT_ERROR_NAMES(msg, path("x.gguf"), "tensor 'w' data");
  // Offset beyond the data section.
  EXPECT_ERROR_NAMES(open_error(one_tensor({4, 2}, 0, 64, 32)), path("x.gguf"), "tensor 'w' data");
  // Header fine, data section missing altogether.
  Bytes b = header(1, 0);
  tensor_info(b, "w", {8}, 0, 0);
  EXPECT_ERROR_NAMES(open_error(b), path("x.gguf"), "tensor");
}

TEST_F(Gguf, UnknownGgmlType) {
  for (uint32_t t : {4u, 5u, 99u, 1000u}) {
    const std::string msg = open_error(one_tensor({4, 2}, t));
    EXPECT_ERROR_NAMES(msg, path("x.gguf"), "tensor 'w' type");
    EXPECT_NE(msg.find("unknown ggml type id " + std::to_string(t)), std::string::npos) << msg;
  }
}

TEST_F(Gguf, UnknownMetadataType) {
  Bytes b = header(0, 1);
  b.str("k").u32(13).u32(0);
  EXPECT_ERROR_NAMES(open_error(b), path("x.gguf"), "k");
}

TEST_F(Gguf, NDims) {
  EXPECT_ERROR_NAMES(open_error(one_tensor({})), path("x.gguf"), "n_dims");
  EXPECT_ERROR_NAMES(open_error(one_tensor({1, 1, 1, 1, 8})), path("x.gguf"), "n_dims");
  auto f = GgufFile::open(put(one_tensor({2, 1, 2, 2})));  // 4 dims is fine
  EXPECT_EQ(f->tensors()[0].ne.size(), 4u);
  EXPECT_ERROR_NAMES(open_error(one_tensor({4, 0})), path("x.gguf"), "ne[1]");
}

TEST_F(Gguf, TensorSizeOverflow) {
  // 2^31 x 2^31 f32 = 2^64 bytes: the byte count must not wrap to 0 and pass the bounds check.
  const std::string msg = open_error(one_tensor({uint64_t{1} << 31, uint64_t{1} << 31}));
  EXPECT_ERROR_NAMES(msg, path("x.gguf"), "tensor 'w'");
  // Same for a block type (q8_0: 34 bytes per 32 elements).
  EXPECT_ERROR_NAMES(open_error(one_tensor({uint64_t{1} << 40, uint64_t{1} << 22}, 8)), path("x.gguf"), "tensor 'w'");
}

TEST_F(Gguf, MisalignedOffset) {
  const std::string msg = open_error(one_tensor({4}, 0, 4, 64));
  EXPECT_ERROR_NAMES(msg, path("x.gguf"), "tensor 'w' offset");
  EXPECT_NE(msg.find("alignment"), std::string::npos) << msg;
}

TEST_F(Gguf, BlockSizeMismatch) {
  EXPECT_ERROR_NAMES(open_error(one_tensor({16, 2}, 2)), path("x.gguf"), "tensor 'w'");  // q4_0 needs 32
}

TEST_F(Gguf, BadAlignmentKey) {
  Bytes b = header(0, 1);
  b.str("general.alignment").u32(4).u32(24);
  EXPECT_ERROR_NAMES(open_error(b), path("x.gguf"), "general.alignment");
}

TEST_F(Gguf, DuplicateNames) {
  Bytes b = header(0, 2);
  b.str("a").u32(4).u32(1).str("a").u32(4).u32(2);
  EXPECT_ERROR_NAMES(open_error(b), path("x.gguf"), "duplicate");
}

// --- Writer round trips ---------------------------------------------------------------------------------------

TEST_F(Gguf, EveryMetadataTypeRoundTrips) {
  GgufWriter w;
  w.set_u8("t.u8", 250);
  w.set_i8("t.i8", -120);
  w.set_u16("t.u16", 65000);
  w.set_i16("t.i16", -32000);
  w.set_u32("t.u32", 4000000000u);
  w.set_i32("t.i32", -2000000000);
  w.set_u64("t.u64", 18000000000000000000ull);
  w.set_i64("t.i64", -9000000000000000000ll);
  w.set_f32("t.f32", 3.25f);
  w.set_f64("t.f64", -1.0e300);
  w.set_bool("t.true", true);
  w.set_bool("t.false", false);
  w.set_string("t.str", "h\xC3\xA9llo\nworld");
  w.set_string("t.empty", "");
  w.set_strings("t.strs", {"a", "", "\xE2\x96\x81the"});
  w.set_f32s("t.f32s", {0.5f, -2.0f});
  w.set_i32s("t.i32s", {1, -2, 3});
  w.set("t.u8s", GgufWriter::array(GgufType::U8, {0, 255}));
  w.set("t.u64s", GgufWriter::array(GgufType::U64, {static_cast<int64_t>(18000000000000000000ull)}));
  w.set("t.bools", GgufWriter::array(GgufType::BOOL, {1, 0, 1}));
  w.set("t.f64s", GgufWriter::array(GgufType::F64, {}, {1e-300, 2.5}));
  w.set("t.empty_arr", GgufWriter::array(GgufType::I16, {}));
  GgufValue nested;
  nested.type = GgufType::ARRAY;
  nested.elem_type = GgufType::ARRAY;
  nested.items = {GgufWriter::array(GgufType::I32, {1, 2}), GgufWriter::array(GgufType::I32, {3})};
  GgufValue strs;
  strs.type = GgufType::ARRAY;
  strs.elem_type = GgufType::STRING;
  strs.strings = {"x", "y"};
  nested.items.push_back(strs);
  w.set("t.nested", nested);
  w.set_u32("t.replaced", 1);
  w.set_u32("t.replaced", 2);
  const std::string p = path("kv.gguf");
  w.write(p);
  EXPECT_EQ(w.file_size(), std::filesystem::file_size(p));  // metadata only

  auto f = GgufFile::open(p);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->kv().size(), 24u);
  auto type = [&](const char* k) { return f->find(k)->type_str(); };
  EXPECT_EQ(type("t.u8"), "u8");
  EXPECT_EQ(f->get_int("t.u8"), 250);
  EXPECT_EQ(f->get_int("t.i8"), -120);
  EXPECT_EQ(type("t.u16"), "u16");
  EXPECT_EQ(f->get_int("t.u16"), 65000);
  EXPECT_EQ(f->get_int("t.i16"), -32000);
  EXPECT_EQ(type("t.u32"), "u32");
  EXPECT_EQ(f->get_int("t.u32"), 4000000000ll);
  EXPECT_EQ(f->get_int("t.i32"), -2000000000);
  EXPECT_EQ(type("t.u64"), "u64");
  EXPECT_EQ(static_cast<uint64_t>(*f->get_int("t.u64")), 18000000000000000000ull);
  EXPECT_EQ(f->find("t.u64")->to_string(), "18000000000000000000");
  EXPECT_EQ(f->get_int("t.i64"), -9000000000000000000ll);
  EXPECT_EQ(type("t.f32"), "f32");
  EXPECT_EQ(f->get_float("t.f32"), 3.25);
  EXPECT_EQ(type("t.f64"), "f64");
  EXPECT_EQ(f->get_float("t.f64"), -1.0e300);
  EXPECT_EQ(f->get_bool("t.true"), true);
  EXPECT_EQ(f->get_bool("t.false"), false);
  EXPECT_EQ(type("t.true"), "bool");
  EXPECT_EQ(f->get_string("t.str"), "h\xC3\xA9llo\nworld");
  EXPECT_EQ(f->get_string("t.empty"), "");
  ASSERT_NE(f->get_strings("t.strs"), nullptr);
  EXPECT_EQ(*f->get_strings("t.strs"), (std::vector<std::string>{"a", "", "\xE2\x96\x81the"}));
  EXPECT_EQ(type("t.strs"), "array[string]");
  EXPECT_EQ(*f->get_numbers("t.f32s"), (std::vector<double>{0.5, -2.0}));
  EXPECT_EQ(type("t.f32s"), "array[f32]");
  EXPECT_EQ(*f->get_numbers("t.i32s"), (std::vector<double>{1, -2, 3}));
  EXPECT_EQ(type("t.i32s"), "array[i32]");
  EXPECT_EQ(*f->get_numbers("t.u8s"), (std::vector<double>{0, 255}));
  EXPECT_EQ(static_cast<uint64_t>(f->find("t.u64s")->ints.at(0)), 18000000000000000000ull);
  EXPECT_EQ(*f->get_numbers("t.bools"), (std::vector<double>{1, 0, 1}));
  EXPECT_EQ(type("t.bools"), "array[bool]");
  EXPECT_EQ(*f->get_numbers("t.f64s"), (std::vector<double>{1e-300, 2.5}));
  EXPECT_EQ(f->find("t.empty_arr")->count, 0u);
  EXPECT_EQ(type("t.empty_arr"), "array[i16]");
  const GgufValue* n = f->find("t.nested");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->type_str(), "array[array]");
  ASSERT_EQ(n->items.size(), 3u);
  EXPECT_EQ(n->items[0].ints, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(n->items[1].ints, (std::vector<int64_t>{3}));
  EXPECT_EQ(n->items[2].strings, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(f->get_int("t.replaced"), 2);
  // Insertion order is kept.
  EXPECT_EQ(f->kv().front().first, "t.u8");
}

TEST_F(Gguf, TensorsRoundTrip) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  std::vector<std::byte> a(3 * 5 * 4);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::byte>(i * 7);
  w.add_tensor("a", DType::F32, {3, 5}, a);
  // Streamed in uneven chunks.
  w.add_tensor("b", DType::F16, {2, 2, 2, 7}, [](const GgufWriter::Sink& sink) {
    std::vector<uint8_t> v(2 * 2 * 2 * 7 * 2);
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(255 - i);
    sink(v.data(), 5);
    sink(v.data() + 5, 0);
    sink(v.data() + 5, v.size() - 5);
  });
  w.add_tensor("q", DType::Q8_0, {2, 64}, std::vector<std::byte>(2 * 2 * 34, std::byte{9}));
  const std::string p = path("t.gguf");
  w.write(p);
  // What the budget planner checks before writing: file_size() is the written size (unaligned tensors, padding).
  EXPECT_EQ(w.file_size(), std::filesystem::file_size(p));

  auto f = GgufFile::open(p);
  ASSERT_EQ(f->tensors().size(), 3u);
  const auto& ta = f->tensors()[0];
  EXPECT_EQ(ta.name, "a");
  EXPECT_EQ(ta.ne, (std::vector<uint64_t>{5, 3}));  // reversed: ne[0] is the row length
  EXPECT_EQ(std::memcmp(f->tensor_data(ta), a.data(), a.size()), 0);
  const auto& tb = f->tensors()[1];
  EXPECT_EQ(tb.dtype, DType::F16);
  EXPECT_EQ(tb.ne, (std::vector<uint64_t>{7, 2, 2, 2}));
  EXPECT_EQ(tb.offset % 32, 0u);
  EXPECT_EQ(static_cast<uint8_t>(f->tensor_data(tb)[0]), 255);
  EXPECT_EQ(static_cast<uint8_t>(f->tensor_data(tb)[111]), 255 - 111);
  const auto& tq = f->tensors()[2];
  EXPECT_EQ(tq.dtype, DType::Q8_0);
  EXPECT_EQ(tq.nbytes, 136u);
  EXPECT_EQ(f->data_offset() % 32, 0u);
  EXPECT_EQ(testing::fs::file_size(p), f->data_offset() + w.data_bytes());
}

TEST_F(Gguf, CustomAlignment) {
  GgufWriter w(64);
  w.add_tensor("a", DType::F32, {3}, std::vector<std::byte>(12));
  w.add_tensor("b", DType::F32, {3}, std::vector<std::byte>(12, std::byte{1}));
  const std::string p = path("a.gguf");
  w.write(p);
  auto f = GgufFile::open(p);
  EXPECT_EQ(f->alignment(), 64u);
  EXPECT_EQ(f->tensors()[1].offset, 64u);
  EXPECT_EQ(f->data_offset() % 64, 0u);
  EXPECT_EQ(static_cast<uint8_t>(f->tensor_data(f->tensors()[1])[0]), 1);
  EXPECT_NE(error_of([] { GgufWriter bad(48); }).find("general.alignment"), std::string::npos);
}

TEST_F(Gguf, WriterRejectsBadTensors) {
  GgufWriter w;
  EXPECT_NE(error_of([&] { w.add_tensor("a", DType::F32, {3}, std::vector<std::byte>(8)); }).find("tensor 'a'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("q", DType::Q4_0, {2, 16}, std::vector<std::byte>(18)); }).find("block size"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("z", DType::F32, {}, std::vector<std::byte>()); }).find("tensor 'z'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("d", DType::F32, {1, 1, 1, 1, 1}, std::vector<std::byte>(4)); })
                .find("dimensions"),
            std::string::npos);
  w.add_tensor("a", DType::F32, {1}, std::vector<std::byte>(4));
  EXPECT_NE(error_of([&] { w.add_tensor("a", DType::F32, {1}, std::vector<std::byte>(4)); }).find("twice"),
            std::string::npos);
  GgufValue bad = GgufWriter::array(GgufType::STRING, {1, 2});
  EXPECT_NE(error_of([&] { w.set("k", bad); }).find("k"), std::string::npos);
}

TEST_F(Gguf, AtomicWrite) {
  const std::string p = path("model.gguf");
  testing::write_file(p, std::string("previous contents"));

  // A producer that delivers too little: the error names the tensor, the old file stays, no temp file is left.
  GgufWriter w;
  w.add_tensor("short", DType::F32, {4}, [](const GgufWriter::Sink& sink) {
    float x[3] = {1, 2, 3};
    sink(x, sizeof x);
  });
  const std::string msg = error_of([&] { w.write(p); });
  EXPECT_ERROR_NAMES(msg, p, "tensor 'short'");
  EXPECT_EQ(testing::read_file(p).size(), std::string("previous contents").size());

  // A producer that throws something else.
  GgufWriter w2;
  w2.add_tensor("boom", DType::F32, {4}, [](const GgufWriter::Sink&) { throw std::runtime_error("boom"); });
  EXPECT_THROW(w2.write(p), std::runtime_error);

  // Too much.
  GgufWriter w3;
  w3.add_tensor("long", DType::F32, {1}, [](const GgufWriter::Sink& sink) {
    float x[2] = {1, 2};
    sink(x, sizeof x);
  });
  EXPECT_ERROR_NAMES(error_of([&] { w3.write(p); }), p, "tensor 'long'");

  size_t entries = 0;
  for (const auto& e : testing::fs::directory_iterator(dir_)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "model.gguf");
  }
  EXPECT_EQ(entries, 1u);

  // A good write replaces the file.
  GgufWriter ok;
  ok.set_string("general.name", "ok");
  ok.write(p);
  EXPECT_EQ(GgufFile::open(p)->get_string("general.name"), "ok");
  entries = 0;
  for (const auto& e : testing::fs::directory_iterator(dir_)) (void)e, ++entries;
  EXPECT_EQ(entries, 1u);

  // An unwritable destination is a clear error.
  EXPECT_ERROR_NAMES(error_of([&] { ok.write(path("no/such/dir/m.gguf")); }), "no/such/dir/m.gguf", "cannot create");
}

// Names in dir that look like a writer's temp file ("<name>.tmp.<pid>").
std::vector<std::string> temp_entries(const testing::fs::path& dir) {
  std::vector<std::string> r;
  std::error_code ec;
  for (const auto& e : testing::fs::directory_iterator(dir, ec))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) r.push_back(e.path().string());
  return r;
}

// The file being written has no name in the directory (O_TMPFILE: a killed process, SIGKILL included, leaves
// nothing), and a finished write leaves only the output.
TEST_F(Gguf, WriteLeavesNoTempFile) {
  const std::string p = path("small.gguf");
  GgufWriter w;
  w.set_string("general.name", "small");
  std::set<std::string> existing;  // entries that were there before the write
  size_t seen_mid_write = 99;
  w.add_tensor("a", DType::F32, {2, 8}, [&](const GgufWriter::Sink& sink) {
    float x[8] = {};
    sink(x, sizeof x);
    seen_mid_write = 0;
    for (const auto& e : testing::fs::directory_iterator(dir_)) {
      if (existing.count(e.path().filename().string())) continue;
      ++seen_mid_write;
      ADD_FAILURE() << "visible while writing: " << e.path();
    }
    sink(x, sizeof x);
  });
  w.write(p);
  EXPECT_EQ(seen_mid_write, 0u);
  EXPECT_EQ(GgufFile::open(p)->get_string("general.name"), "small");
  EXPECT_TRUE(temp_entries(dir_).empty());
  size_t entries = 0;
  for (const auto& e : testing::fs::directory_iterator(dir_)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "small.gguf");
  }
  EXPECT_EQ(entries, 1u);

  // Overwriting, and a stale "<out>.tmp.<pid>" of our own pid (a crashed earlier run) is no obstacle.
  testing::write_file(p + ".tmp." + std::to_string(::getpid()), std::string("stale"));
  existing = {"small.gguf", "small.gguf.tmp." + std::to_string(::getpid())};
  seen_mid_write = 99;
  w.write(p);
  EXPECT_EQ(seen_mid_write, 0u);
  EXPECT_EQ(GgufFile::open(p)->get_string("general.name"), "small");
  EXPECT_TRUE(temp_entries(dir_).empty());
}

// Unwritable destinations: one clear error line naming the output, and nothing left behind.
TEST_F(Gguf, WriteToUnwritableDirectory) {
  GgufWriter w;
  w.set_string("general.name", "x");
  w.add_tensor("a", DType::F32, {4}, std::vector<std::byte>(16));

  const std::string missing = path("missing/m.gguf");
  EXPECT_ERROR_NAMES(error_of([&] { w.write(missing); }), missing, "cannot create");
  EXPECT_FALSE(testing::fs::exists(path("missing")));

  // A directory without write permission (root ignores the mode bits, so only as another user).
  if (::geteuid() != 0) {
    const testing::fs::path ro = dir_ / "ro";
    testing::fs::create_directories(ro);
    testing::fs::permissions(ro, testing::fs::perms::owner_read | testing::fs::perms::owner_exec);
    const std::string out = (ro / "m.gguf").string();
    const std::string msg = error_of([&] { w.write(out); });
    testing::fs::permissions(ro, testing::fs::perms::owner_all);
    EXPECT_ERROR_NAMES(msg, out, "cannot create");
    EXPECT_NE(msg.find("ermission denied"), std::string::npos) << msg;
    EXPECT_TRUE(testing::fs::is_empty(ro));
  }

  // sysfs: no O_TMPFILE (the named fallback runs) and not writable even for root.
  if (testing::fs::is_directory("/sys/kernel")) {
    const std::string out = "/sys/kernel/lowbit-test.gguf";
    const std::string msg = error_of([&] { w.write(out); });
    EXPECT_ERROR_NAMES(msg, out, "cannot create");
    EXPECT_FALSE(testing::fs::exists(out));
    EXPECT_TRUE(temp_entries("/sys/kernel").empty());
  }
}

}  // namespace
}  // namespace lowbit
