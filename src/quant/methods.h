// The quantization methods lowbit knows, one registry line each (methods.cpp), and how `--method` combines them:
// "awq+gptq", "rotate+gptaq", ... = at most one model transform of each kind, block transforms, then exactly one
// solver (a method naming only transforms gets rtn as its solver). What each needs (calibration, the
// full-precision model's inputs) is declared here, so a bad combination is one error line before any work.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/model_file.h"
#include "quant/block_transform.h"
#include "quant/quantizer.h"

namespace lowbit::quant {

enum class MethodKind { ModelTransform, BlockTransform, Solver };

struct MethodEntry {
  const char* name;
  MethodKind kind;
  bool needs_calibration;  // statistics of the linears' inputs on calibration text
  bool needs_fp_inputs;    // the full-precision model's inputs beside the quantized model's (asymmetric)
  const char* summary;
  std::unique_ptr<Quantizer> (*solver)(const QuantOptions&) = nullptr;
  std::unique_ptr<BlockTransform> (*block)(const QuantOptions&) = nullptr;
  std::shared_ptr<const ModelFile> (*model)(const ModelFile&, const QuantOptions&) = nullptr;
};

const std::vector<MethodEntry>& method_registry();

// A parsed --method: its parts in the order they run.
struct MethodPlan {
  std::string text;                                  // canonical: "rotate+awq+gptq"
  std::vector<const MethodEntry*> model_transforms;  // run once on the whole model
  std::vector<const MethodEntry*> block_transforms;  // run on each block before its linears are quantized
  const MethodEntry* solver = nullptr;
  bool needs_calibration = false;
  bool needs_fp_inputs = false;
};

// Parses "a+b+c"; one lowbit::Error line for an unknown part, a repeated part, two solvers.
MethodPlan parse_method(std::string_view text);

// The combination that measured best for a format (docs/results.md, issue 12's quality table) when calibration
// text is given, else "rtn". format: the --format value ("int4g64a", "q4_K", "gguf:Q4_K_M").
std::string default_method(std::string_view format, bool calibrated);

// The defaults per format family, for --help and the README.
std::string default_method_help();

// "rtn: ..., gptq: ..." for --help and error messages.
std::string methods_help();

}  // namespace lowbit::quant
