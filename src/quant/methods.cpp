// The method registry: one line per method (each lives in its own folder or file).
#include "quant/methods.h"

#include <fmt/format.h>

#include "io/arch.h"
#include "lowbit/error.h"
#include "quant/awq/awq.h"
#include "quant/rotate/rotate.h"

namespace lowbit::quant {

std::unique_ptr<Quantizer> make_rtn_quantizer(const QuantOptions& opts);
std::unique_ptr<Quantizer> make_gptq_quantizer(const QuantOptions& opts);
std::unique_ptr<Quantizer> make_gptaq_quantizer(const QuantOptions& opts);

namespace {
std::shared_ptr<const ModelFile> rotate_entry(const ModelFile& m, const QuantOptions& q) {
  RotateOptions ro;
  ro.seed = q.rotate_seed;
  // R2 where the graph allows it: Phi-3's value rows are a slice of attn_qkv, so it gets R1 alone. R1 itself is
  // never dropped silently (Gemma's post-norms refuse it with an error).
  ro.heads = q.rotate_heads && io::arch_of(m.config).roles.transforms.rotate_heads;
  return rotate_model(m, ro);
}
}  // namespace

const std::vector<MethodEntry>& method_registry() {
  using K = MethodKind;
  static const std::vector<MethodEntry> kMethods = {
      {"rotate", K::ModelTransform, false, false, "QuaRot R1/R2 Hadamard rotations folded into the weights",
       nullptr, nullptr, rotate_entry},
      {"awq", K::BlockTransform, true, false, "activation-aware per-channel scales (+ clipping with rtn)", nullptr,
       make_awq_transform},
      {"rtn", K::Solver, false, false, "round to nearest (imatrix-like with --importance)", make_rtn_quantizer},
      {"gptq", K::Solver, true, false, "GPTQ, true-sequential inside each block", make_gptq_quantizer},
      {"gptaq", K::Solver, true, true, "GPTAQ: GPTQ against the full-precision model's outputs (asymmetric)",
       make_gptaq_quantizer},
  };
  return kMethods;
}

MethodPlan parse_method(std::string_view text) {
  MethodPlan p;
  auto known = [] {
    std::string k;
    for (const auto& e : method_registry()) k += (k.empty() ? "" : ", ") + std::string(e.name);
    return k;
  };
  if (text.empty()) fail("", "--method", "is empty (known: " + known() + ", joined with '+')");
  std::vector<const MethodEntry*> parts;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t plus = text.find('+', start);
    const std::string_view part = text.substr(start, plus == std::string_view::npos ? text.size() - start : plus - start);
    const MethodEntry* e = nullptr;
    for (const auto& m : method_registry())
      if (part == m.name) e = &m;
    if (!e)
      fail("", "--method", fmt::format("'{}' in '{}' is not a method (known: {}, joined with '+', e.g. awq+gptq)", part,
                                       text, known()));
    for (const MethodEntry* q : parts)
      if (q == e) fail("", "--method", fmt::format("'{}' appears twice in '{}'", part, text));
    parts.push_back(e);
    if (plus == std::string_view::npos) break;
    start = plus + 1;
  }
  for (const MethodEntry* e : parts) {
    switch (e->kind) {
      case MethodKind::ModelTransform: p.model_transforms.push_back(e); break;
      case MethodKind::BlockTransform: p.block_transforms.push_back(e); break;
      case MethodKind::Solver:
        if (p.solver)
          fail("", "--method", fmt::format("'{}' names two solvers ({} and {}); combine transforms (rotate, awq) with one "
                                           "of rtn, gptq, gptaq", text, p.solver->name, e->name));
        p.solver = e;
        break;
    }
  }
  if (!p.solver) {
    for (const auto& m : method_registry())
      if (std::string_view(m.name) == "rtn") p.solver = &m;
  }
  for (const auto* list : {&p.model_transforms, &p.block_transforms})
    for (const MethodEntry* e : *list) p.text += std::string(e->name) + "+";
  p.text += p.solver->name;
  for (const auto* list : {&p.model_transforms, &p.block_transforms})
    for (const MethodEntry* e : *list) {
      p.needs_calibration |= e->needs_calibration;
      p.needs_fp_inputs |= e->needs_fp_inputs;
    }
  p.needs_calibration |= p.solver->needs_calibration;
  p.needs_fp_inputs |= p.solver->needs_fp_inputs;
  return p;
}

namespace {
// The measured defaults (docs/results.md, "Methods"), per format family.
struct DefaultRow {
  const char* family;
  const char* method;
  const char* why;
};
constexpr DefaultRow kDefaults[] = {
    {"llama.cpp types and presets (q4_0 ... q6_K, iq4_*, gguf:Q4_K_M ...)", "gptaq",
     "lowest KLD on TinyStories-656K for Q4_0, Q5_0, Q4_K_M and Q3_K_M and on synth256 for Q4_K_M / Q3_K_M among "
     "gptq, gptaq, awq+gptaq, rotate+gptaq at equal file size"},
    {"lowbit int2/int3 groups", "awq+gptaq", "lowest KLD on TinyStories-656K int3g64a"},
    {"lowbit int4..int8 groups", "gptaq", "lowest KLD on TinyStories-656K int4g128a"},
};
}  // namespace

std::string default_method(std::string_view format, bool calibrated) {
  if (!calibrated) return "rtn";
  if (format.substr(0, 3) == "int" && format.size() > 3 && format[3] >= '2' && format[3] <= '3' &&
      (format.size() == 4 || format[4] == 'g'))
    return kDefaults[1].method;
  if (format.substr(0, 3) == "int") return kDefaults[2].method;
  return kDefaults[0].method;
}

std::string default_method_help() {
  std::string h;
  for (const auto& d : kDefaults) h += std::string(h.empty() ? "" : "; ") + d.family + ": " + d.method;
  return h;
}

std::string methods_help() {
  std::string h;
  for (const auto& e : method_registry()) h += std::string(h.empty() ? "" : "; ") + e.name + ": " + e.summary;
  return h;
}

std::vector<std::string> quantizer_names() {
  std::vector<std::string> out;
  for (const auto& e : method_registry())
    if (e.kind == MethodKind::Solver) out.emplace_back(e.name);
  return out;
}

std::unique_ptr<Quantizer> make_quantizer(std::string_view name, const QuantOptions& opts) {
  for (const auto& e : method_registry())
    if (e.kind == MethodKind::Solver && name == e.name) return e.solver(opts);
  std::string known;
  for (const auto& n : quantizer_names()) known += (known.empty() ? "" : ", ") + n;
  fail("quantizer", std::string(name), "unknown quantization method (known: " + known + ")");
}

}  // namespace lowbit::quant
