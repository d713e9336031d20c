// lowbit formats [--json]: every storage format lowbit reads or writes, with its bits per weight (and how much of
// that is scales and other overhead), block, family, whether lowbit can encode it, and which kernels run it on this
// CPU. The kernel column is measured, not assumed: a small matrix of the format is encoded and offered to the
// repacking and to the integer kernels of this build.
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "formats/format.h"
#include "formats/ggml.h"
#include "formats/intn.h"
#include "ops/ggml_dot.h"
#include "ops/ops.h"

namespace lowbit::cli {

namespace {

struct FormatRow {
  std::string name, family;
  int block = 0;
  size_t block_bytes = 0;
  double bpw = 0, nominal_bits = 0;  // nominal: the code bits a weight is sold as (4 for q4_K, 2 for iq2_xs)
  bool encodes = false;
  std::string kernels;
};

// The nominal code bits of the llama.cpp types (their names say it).
double ggml_nominal_bits(DType t) {
  switch (t) {
    case DType::IQ1_S: case DType::IQ1_M: return 1;
    case DType::TQ1_0: case DType::TQ2_0: return 1.58;
    case DType::Q2_K: case DType::IQ2_XXS: case DType::IQ2_XS: case DType::IQ2_S: return 2;
    case DType::Q3_K: case DType::IQ3_XXS: case DType::IQ3_S: return 3;
    case DType::Q4_0: case DType::Q4_1: case DType::Q4_K: case DType::IQ4_NL: case DType::IQ4_XS: return 4;
    case DType::Q5_0: case DType::Q5_1: case DType::Q5_K: return 5;
    case DType::Q6_K: return 6;
    default: return 8;  // Q8_0, Q8_1, Q8_K
  }
}

// Which kernels run a matrix of this format on this CPU: repacked (AVX-512 VNNI copy made at load), integer dot
// products on the stored blocks, or decoding each row to f32.
std::string kernels_of(const formats::Format& f, DType t, const formats::IntNFormat* intn) {
  const int64_t rows = 8, cols = 2 * f.block();
  const size_t rb = formats::row_bytes(f, cols);
  std::vector<std::byte> bytes(rb * rows);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& x : w) x = nd(rng);
    formats::encode_row(f, w, {}, bytes.data() + r * rb);
  }
  ops::WeightView v{intn ? DType::I8 : t, rows, cols, bytes.data(), rb};
  v.intn = intn;
  const bool repacked = ops::repack_for_kernels(v) != nullptr;
  std::string k;
  if (intn) {
    k = std::string("integer GEMV (") + ops::intn_kernel_path() + ")";
  } else if (ops::detail::ggml_dot_supported(t)) {
    k = std::string("integer dot (") + ops::ggml_kernel_path() + ")";
  } else {
    return "row decode to f32";
  }
  return repacked ? "repacked at load (avx512-vnni); " + k : k;
}

std::vector<FormatRow> all_formats() {
  std::vector<FormatRow> rows;
  for (int bits = 2; bits <= 8; ++bits)
    for (int group : {32, 64, 128})
      for (char kind : {'s', 'a'}) {
        const std::string name = "int" + std::to_string(bits) + "g" + std::to_string(group) + kind;
        const formats::IntNFormat& f = formats::intn_format(name);
        rows.push_back({name, "lowbit", f.block(), f.block_bytes(), f.bits_per_weight(), double(bits), true,
                        kernels_of(f, DType::I8, &f)});
      }
  for (uint32_t id = 0; id < 64; ++id) {
    const auto info = dtype_info(id);
    if (!info || info->block <= 1) continue;
    const auto t = static_cast<DType>(id);
    if (!formats::ggml_decodable(t)) continue;
    FormatRow r{std::string(info->name), "llama.cpp", static_cast<int>(info->block), info->block_bytes,
                8.0 * info->block_bytes / info->block, ggml_nominal_bits(t), formats::ggml_encodable(t), ""};
    r.kernels = r.encodes ? kernels_of(formats::ggml_format(t), t, nullptr) : "row decode to f32";
    rows.push_back(r);
  }
  return rows;
}

void list_formats(bool json) {
  const std::vector<FormatRow> rows = all_formats();
  if (json) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : rows)
      j.push_back({{"name", r.name}, {"family", r.family}, {"block", r.block}, {"block_bytes", r.block_bytes},
                   {"bits_per_weight", r.bpw}, {"nominal_bits", r.nominal_bits},
                   {"overhead_bits_per_weight", r.bpw - r.nominal_bits}, {"encodes", r.encodes},
                   {"kernels", r.kernels}});
    std::printf("%s\n", nlohmann::json{{"simd", ops::simd_target()}, {"formats", j}}.dump(2).c_str());
    return;
  }
  std::printf("SIMD target: %s\n\n", ops::simd_target());
  std::printf("| format | family | block | bytes | bits/weight | overhead | lowbit encodes | kernels on this CPU |\n");
  std::printf("|---|---|---:|---:|---:|---:|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %s | %s | %d | %zu | %.4f | %+.4f | %s | %s |\n", r.name.c_str(), r.family.c_str(), r.block,
                r.block_bytes, r.bpw, r.bpw - r.nominal_bits, r.encodes ? "yes" : "decode only", r.kernels.c_str());
}

}  // namespace

void add_formats(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("formats", "List every storage format: bits per weight, block, family, kernels");
  cmd->add_flag("--json", *json, "machine-readable output");
  cmd->callback([json] { list_formats(*json); });
}

}  // namespace lowbit::cli
