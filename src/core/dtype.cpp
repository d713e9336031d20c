#include "lowbit/dtype.h"

#include <array>
#include <cctype>
#include <string>

namespace lowbit {

namespace {

struct Entry {
  uint32_t id;
  DTypeInfo info;
};

// ggml's type table: id, name, elements per block, bytes per block.
constexpr std::array<Entry, 32> kTypes = {{
    {0, {"f32", 1, 4}},        {1, {"f16", 1, 2}},         {2, {"q4_0", 32, 18}},     {3, {"q4_1", 32, 20}},
    {6, {"q5_0", 32, 22}},     {7, {"q5_1", 32, 24}},      {8, {"q8_0", 32, 34}},     {9, {"q8_1", 32, 36}},
    {10, {"q2_K", 256, 84}},   {11, {"q3_K", 256, 110}},   {12, {"q4_K", 256, 144}},  {13, {"q5_K", 256, 176}},
    {14, {"q6_K", 256, 210}},  {15, {"q8_K", 256, 292}},   {16, {"iq2_xxs", 256, 66}}, {17, {"iq2_xs", 256, 74}},
    {18, {"iq3_xxs", 256, 98}}, {19, {"iq1_s", 256, 50}},  {20, {"iq4_nl", 32, 18}},  {21, {"iq3_s", 256, 110}},
    {22, {"iq2_s", 256, 82}},  {23, {"iq4_xs", 256, 136}}, {24, {"i8", 1, 1}},        {25, {"i16", 1, 2}},
    {26, {"i32", 1, 4}},       {27, {"i64", 1, 8}},        {28, {"f64", 1, 8}},       {29, {"iq1_m", 256, 56}},
    {30, {"bf16", 1, 2}},      {34, {"tq1_0", 256, 54}},   {35, {"tq2_0", 256, 66}},  {UINT32_MAX, {"", 0, 0}},
}};

}  // namespace

std::optional<DTypeInfo> dtype_info(uint32_t id) {
  for (const auto& e : kTypes)
    if (e.id == id && e.info.block != 0) return e.info;
  return std::nullopt;
}

DTypeInfo dtype_info(DType t) {
  auto i = dtype_info(static_cast<uint32_t>(t));
  return i ? *i : DTypeInfo{"invalid", 1, 0};
}

std::string_view dtype_name(DType t) { return dtype_info(t).name; }

std::optional<DType> dtype_from_name(std::string_view name) {
  auto lower = [](std::string_view s) {
    std::string r(s);
    for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return r;
  };
  const std::string want = lower(name);
  for (const auto& e : kTypes)
    if (e.info.block != 0 && lower(e.info.name) == want) return static_cast<DType>(e.id);
  return std::nullopt;
}

std::optional<uint64_t> dtype_row_bytes(DType t, uint64_t n) {
  DTypeInfo i = dtype_info(t);
  if (i.block_bytes == 0 || n % i.block != 0) return std::nullopt;
  return n / i.block * i.block_bytes;
}

}  // namespace lowbit
