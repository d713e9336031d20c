// lowbit quantize -m SRC -o OUT --method rtn --format int4g64a: writes a lowbit packed GGUF and a summary table.
#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <map>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/progress.h"
#include "lowbit/error.h"
#include "lowbit/threads.h"
#include "calib/calib_data.h"
#include "quant/methods.h"
#include "quant/quantize_model.h"

namespace lowbit::cli {

namespace {

struct QuantizeArgs {
  std::string model, out, method, format;
  int bits = 4, group = 64, threads = 0;
  std::string keep_dtype = "f16";
  std::string calib, imatrix;
  int calib_samples = 128, calib_len = 512;
  uint64_t seed = 0;
  bool act_order = false, importance = false, resume = false, requantize = false, no_true_sequential = false, transforms_only = false,
       dry_run = false;
  bool pure = false;
  double percdamp = 0.01;
  bool sym = false, json = false;
  std::vector<std::string> keep, bits_override, tensor_types;
  std::string token_embedding_type, output_tensor_type;
  std::string target_size, candidates, measure_cache;
  double target_bpw = 0;
  int probe_windows = 8;
};

// "1143200", "950K", "1.5M", "4G" (K/M/G: powers of 1024; also KB/MB/GB = powers of 1000) -> bytes.
uint64_t parse_size(const std::string& text) {
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(text, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  std::string unit = text.substr(pos);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  const std::map<std::string, double> units = {{"", 1},         {"B", 1},         {"K", 1024.0},  {"KIB", 1024.0},
                                               {"M", 1048576.0}, {"MIB", 1048576.0}, {"G", 1073741824.0},
                                               {"GIB", 1073741824.0}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}};
  auto it = units.find(unit);
  if (pos == 0 || it == units.end() || !(v > 0))
    fail("", "--target-size", "expected a size in bytes (1143200, 950K, 1.5M, 4G), got '" + text + "'");
  return static_cast<uint64_t>(std::floor(v * it->second));
}

std::string int_format(int bits, int group, bool sym) {
  return "int" + std::to_string(bits) + "g" + std::to_string(group) + (sym ? "s" : "a");
}

void quantize_cmd(const QuantizeArgs& a) {
  set_num_threads(a.threads);
  quant::QuantizeModelOptions o;
  o.method = a.method;
  if (!o.method.empty()) quant::parse_method(o.method);  // a bad --method fails before the text is read
  auto kd = dtype_from_name(a.keep_dtype);
  if (!kd || (*kd != DType::F16 && *kd != DType::BF16 && *kd != DType::F32))
    fail("", "--keep-dtype", "expected f16, bf16 or f32, got '" + a.keep_dtype + "'");
  o.keep_dtype = *kd;
  o.format = a.format.empty() ? int_format(a.bits, a.group, a.sym) : a.format;
  const bool budget = !a.target_size.empty() || a.target_bpw > 0;
  if (budget) {  // the planner chooses every matrix's type, the embedding's and the head's included
    o.format = a.format.empty() ? "gguf" : a.format;
    if (!a.target_size.empty()) o.target_bytes = parse_size(a.target_size);
    o.target_bpw = a.target_bpw;
    for (size_t p = 0; p < a.candidates.size();) {
      size_t q = a.candidates.find(',', p);
      if (q == std::string::npos) q = a.candidates.size();
      if (q > p) o.candidates.push_back(a.candidates.substr(p, q - p));
      p = q + 1;
    }
    o.probe_windows = a.probe_windows;
    o.measure_cache = a.measure_cache;
    o.keep.clear();
  }
  // llama.cpp presets choose the embedding's and the head's types themselves; else both stay unquantized, unless
  // --pure (llama-quantize --pure): every matrix in the one type, the embedding and the head included.
  if (o.format.rfind("gguf:", 0) == 0 || a.pure) o.keep.clear();
  o.pure = a.pure;
  o.imatrix = a.imatrix;
  if (!a.keep.empty()) {
    for (const auto& k : a.keep) o.keep.push_back(k == "output" ? "output.weight" : k);
  }
  for (const auto& ov : a.bits_override) {  // NAME=BITS or NAME=FORMAT
    const auto eq = ov.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == ov.size())
      fail("", "--bits-for", "expected NAME=BITS or NAME=FORMAT, got '" + ov + "'");
    std::string name = ov.substr(0, eq), val = ov.substr(eq + 1);
    if (val.find_first_not_of("0123456789") == std::string::npos) val = int_format(std::stoi(val), a.group, a.sym);
    o.overrides.emplace_back(name, val);
  }
  std::unique_ptr<ProgressBar> bar;
  std::string bar_stage;
  o.progress = [&](size_t done, size_t total, const std::string& name) {
    // A budget plan reports its measurement pass ("measure <tensor>") first, then the quantizing run: one bar each.
    const std::string stage = name.rfind("measure ", 0) == 0 ? "measure" : "quantize";
    if (!bar || stage != bar_stage) {
      if (bar) bar->finish();
      bar = std::make_unique<ProgressBar>(stage, static_cast<int64_t>(total), !a.json);
      bar_stage = stage;
    }
    bar->update(static_cast<int64_t>(done), stage == "measure" ? name.substr(8) : name);
  };
  o.qopts.act_order = a.act_order;
  o.true_sequential = !a.no_true_sequential;
  o.transforms_only = a.transforms_only;
  o.resume = a.resume;
  o.allow_requantize = a.requantize;
  o.dry_run = a.dry_run;
  for (const auto& tt : a.tensor_types) {  // REGEX=TYPE, split at the last '=' (a pattern may hold one)
    const auto eq = tt.rfind('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == tt.size())
      fail("", "--tensor-type", "expected REGEX=TYPE, e.g. attn_v=q6_K or 'blk\\.[0-3]\\.ffn_down=q5_K', got '" + tt + "'");
    o.tensor_types.emplace_back(tt.substr(0, eq), tt.substr(eq + 1));
  }
  o.token_embedding_type = a.token_embedding_type;
  o.output_tensor_type = a.output_tensor_type;
  o.qopts.percdamp = a.percdamp;
  o.qopts.use_importance = a.importance;
  if (!a.calib.empty()) {
    // A calibrated run frees and allocates ~1.2 GB per block at 1B shapes (Hessians and their normalised copies,
    // widened and decoded weights), in blocks glibc maps and unmaps one by one (everything over 32 MB): every page
    // then faults in anew, ~11 us each on a paravirtualised VM, 8% of the run's CPU time (measured: 1.18 M -> 0.57 M
    // faults, sys 11.6 s -> 6.8 s on three TinyLlama-shape blocks). Served from the heap and kept there instead,
    // the memory is reused block after block (peak RSS +3%).
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    // Tokenize the calibration text with the source model's tokenizer and draw the windows.
    Loaded src = load(a.model, "");
    const Tokenizer& tok = need_tokenizer(src);
    const std::vector<int32_t> tokens = tok.encode(read_text_file(a.calib), tok.add_bos());
    calib::CalibOptions co;
    co.samples = a.calib_samples;
    co.len = a.calib_len;
    co.seed = a.seed;
    co.bos = tok.add_bos() ? tok.bos() : -1;
    o.calib = calib::sample_windows(tokens, co, a.calib);
    o.calib_source = a.calib;
  }
  quant::QuantizeReport r = quant::quantize_model(a.model, a.out, o);
  if (bar) bar->finish();
  auto tensor_bytes = [](const quant::TensorReport& t) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    return static_cast<uint64_t>(std::llround(t.bits_per_weight * static_cast<double>(n) / 8.0));
  };
  if (a.json) {
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : r.tensors) {
      nlohmann::json j = {{"name", t.name}, {"shape", t.shape}, {"stored", t.stored}, {"bits_per_weight", t.bits_per_weight},
                          {"bytes", tensor_bytes(t)}, {"note", t.note}, {"imatrix", t.imatrix}};
      if (t.predicted_kld >= 0) j["predicted_kld"] = t.predicted_kld;
      if (!a.dry_run) j.update({{"rel_error", t.rel_error}, {"rel_output_error", t.rel_output_error}});
      ts.push_back(j);
    }
    nlohmann::json j = {{"source", a.model}, {"output", a.out}, {"dry_run", a.dry_run}, {"method", r.method},
                        {"format", o.format}, {"pure", o.pure}, {"tensors", ts}, {"params", r.params},
                        {"bytes", r.bytes}, {"bits_per_weight", r.bits_per_weight}, {"seconds", r.seconds},
                        {"layer_seconds", r.layer_seconds}, {"resumed_tensors", r.resumed_tensors}};
    j["imatrix"] = nullptr;
    if (r.imatrix)
      j["imatrix"] = {{"file", r.imatrix->file},       {"format", r.imatrix->format},
                      {"entries", r.imatrix->entries}, {"entries_used", r.imatrix->used},
                      {"datasets", r.imatrix->datasets}, {"chunks", r.imatrix->chunks}};
    j["budget"] = nullptr;
    if (r.budget) {
      const auto& b = *r.budget;
      nlohmann::json groups = nlohmann::json::array();
      for (const auto& g : b.groups)
        groups.push_back({{"role", g.role}, {"bytes", g.bytes}, {"params", g.params}, {"predicted_kld", g.predicted_kld},
                          {"measured_kld", g.measured_kld < 0 ? nlohmann::json(nullptr) : nlohmann::json(g.measured_kld)},
                          {"formats", g.formats}});
      j["budget"] = {{"target_bytes", b.target_bytes}, {"whole_file", b.whole_file},
                     {"planned_bytes", b.planned_bytes}, {"granularity", b.granularity}, {"tensors_chosen", b.items},
                     {"cache", b.cache}, {"cache_hit", b.cache_hit}, {"measure_seconds", b.measure_seconds},
                     {"plan_seconds", b.plan_seconds},
                     {"measure_solve_seconds", b.measure_solve_seconds}, {"measure_probe_seconds", b.measure_probe_seconds}, {"probe_windows", b.probe_windows}, {"probe_len", b.probe_len},
                     {"predicted_kld", b.predicted_kld},
                     {"measured_kld", b.measured_kld < 0 ? nlohmann::json(nullptr) : nlohmann::json(b.measured_kld)},
                     {"groups", groups}};
    }
    print_json(j);
    return;
  }
  if (r.budget) {  // the plan per tensor role: what it got, its bytes, predicted then measured KLD
    const auto& b = *r.budget;
    std::printf("budget plan (%s %llu bytes, %zu tensors chosen, exact to %llu bytes):\n",
                b.whole_file ? "file" : "tensors", static_cast<unsigned long long>(b.target_bytes), b.items,
                static_cast<unsigned long long>(b.granularity));
    std::printf("  %-14s %12s %8s %14s %14s  %s\n", "role", "bytes", "bpw", "predicted KLD", "measured KLD", "types");
    for (const auto& g : b.groups) {
      std::string types;
      for (const auto& [f, n] : g.formats) types += (types.empty() ? "" : " ") + f + "x" + std::to_string(n);
      char meas[32] = "-";
      if (g.measured_kld >= 0) std::snprintf(meas, sizeof meas, "%.6f", g.measured_kld);
      std::printf("  %-14s %12llu %8.3f %14.6f %14s  %s\n", g.role.c_str(), static_cast<unsigned long long>(g.bytes),
                  8.0 * static_cast<double>(g.bytes) / static_cast<double>(g.params), g.predicted_kld, meas, types.c_str());
    }
    char meas[32] = "-";
    if (b.measured_kld >= 0) std::snprintf(meas, sizeof meas, "%.6f", b.measured_kld);
    std::printf("  predicted KLD (sum) %.6f, measured KLD of the %s %s, on %d calibration windows of %d tokens\n",
                b.predicted_kld, a.dry_run ? "plan" : "file", meas, b.probe_windows, b.probe_len);
    std::printf("  %s: %llu bytes (%.2f%% of the budget)\n", a.dry_run ? "planned size (upper bound)" : "written",
                static_cast<unsigned long long>(b.planned_bytes),
                100.0 * static_cast<double>(b.planned_bytes) / static_cast<double>(b.target_bytes));
    std::printf("  measurements: %s %s (pass %.1fs: candidates %.1fs, KLD probe %.1fs), plan %.3fs\n",
                b.cache_hit ? "from the cache" : "measured, cached in", b.cache.c_str(), b.measure_seconds,
                b.measure_solve_seconds, b.measure_probe_seconds, b.plan_seconds);
  }
  if (a.dry_run) {  // the plan: every tensor, then the totals per stored type
    std::printf("%-32s %-16s %-10s %8s %12s\n", "tensor", "shape", "stored", "bpw", "bytes");
    std::map<std::string, std::pair<int, uint64_t>> by_type;  // stored -> (tensors, bytes)
    for (const auto& t : r.tensors) {
      std::string shape = "[";
      for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
      shape += "]";
      std::printf("%-32s %-16s %-10s %8.3f %12llu%s%s\n", t.name.c_str(), shape.c_str(), t.stored.c_str(),
                  t.bits_per_weight, static_cast<unsigned long long>(tensor_bytes(t)), t.note.empty() ? "" : "  note: ",
                  t.note.c_str());
      by_type[t.stored].first += 1;
      by_type[t.stored].second += tensor_bytes(t);
    }
    for (const auto& [type, v] : by_type)
      std::printf("  %-10s %4d tensors %12llu bytes\n", type.c_str(), v.first, static_cast<unsigned long long>(v.second));
    std::printf("method: %s\n", r.method.c_str());
    std::printf("dry run, nothing written: %lld parameters, %llu bytes (%.2f MiB) of tensors, %.4f bits per weight\n",
                static_cast<long long>(r.params), static_cast<unsigned long long>(r.bytes),
                static_cast<double>(r.bytes) / (1 << 20), r.bits_per_weight);
    return;
  }
  std::printf("%-32s %-16s %-10s %8s %12s %14s\n", "tensor", "shape", "stored", "bpw", "rel. W error",
              "rel. WX error");
  for (const auto& t : r.tensors) {
    std::string shape = "[";
    for (size_t i = 0; i < t.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape[i]);
    shape += "]";
    char out_err[32] = "-";
    if (t.rel_output_error >= 0) std::snprintf(out_err, sizeof out_err, "%.5f", t.rel_output_error);
    std::printf("%-32s %-16s %-10s %8.3f %12.5f %14s%s%s\n", t.name.c_str(), shape.c_str(), t.stored.c_str(),
                t.bits_per_weight, t.rel_error, out_err, t.note.empty() ? "" : "  note: ", t.note.c_str());
  }
  if (!r.layer_seconds.empty()) {
    double mn = r.layer_seconds[0], mx = mn, sum = 0;
    for (double v : r.layer_seconds) mn = std::min(mn, v), mx = std::max(mx, v), sum += v;
    std::printf("time per block: mean %.2fs, min %.2fs, max %.2fs over %zu blocks\n", sum / r.layer_seconds.size(), mn,
                mx, r.layer_seconds.size());
  }
  if (a.resume) std::printf("resumed: %zu tensors taken from the saved progress\n", r.resumed_tensors);
  if (r.imatrix)
    std::printf("imatrix: %s (%s, %zu entries, %lld chunks): %zu matrices quantized with their entry\n",
                r.imatrix->file.c_str(), r.imatrix->format.c_str(), r.imatrix->entries,
                static_cast<long long>(r.imatrix->chunks), r.imatrix->used);
  std::printf("method: %s\n", r.method.c_str());
  std::printf("wrote %s: %lld parameters, %.2f MiB of tensors, %.4f bits per weight, %.1fs\n", a.out.c_str(),
              static_cast<long long>(r.params), static_cast<double>(r.bytes) / (1 << 20), r.bits_per_weight, r.seconds);
}

}  // namespace

void add_quantize(CLI::App& app) {
  auto a = std::make_shared<QuantizeArgs>();
  auto* cmd = app.add_subcommand("quantize", "Quantize a model into lowbit's packed GGUF");
  cmd->add_option("-m,--model", a->model, "source model: GGUF, Hugging Face directory or llama2.c checkpoint (f32/f16/bf16 tensors)")->required();
  cmd->add_option("-o,--output", a->out, "output GGUF file (written atomically)")->required();
  cmd->add_option("--method", a->method,
                 "method, parts joined with '+' (" + quant::methods_help() +
                     "); e.g. awq+gptq, rotate+gptaq. Default: rtn without --calib; with --calib the combination that "
                     "measured best for the format: " + quant::default_method_help());
  cmd->add_flag("--transforms-only", a->transforms_only,
                "run the method's transforms (rotate, awq) but write the matrices in f32, unquantized (checks exactness)");
  cmd->add_flag("--no-true-sequential", a->no_true_sequential,
                "gptq/gptaq: quantize a block's linears from one capture instead of site by site");
  cmd->add_option("--calib", a->calib, "calibration text (use text you will not evaluate on)");
  cmd->add_option("--calib-samples", a->calib_samples, "calibration windows")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--calib-len", a->calib_len, "tokens per calibration window")->check(CLI::Range(2, 1 << 16));
  cmd->add_option("--seed", a->seed, "seed for drawing the calibration windows");
  cmd->add_flag("--act-order", a->act_order, "gptq: quantize columns by decreasing activation (static groups)");
  cmd->add_option("--percdamp", a->percdamp, "gptq: Hessian dampening, fraction of mean diag")->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--importance", a->importance, "weight the format's clipping search by activation energy");
  cmd->add_option("--imatrix", a->imatrix,
                  "llama.cpp importance matrix (llama-imatrix output, legacy .imatrix or GGUF): each matrix with an "
                  "entry is fitted with it, as llama-quantize --imatrix (no --calib needed with rtn)");
  cmd->add_flag("--pure", a->pure,
                "every matrix in the one --format type, token_embd and output included (llama-quantize --pure; with "
                "a gguf: preset, its base type without the per-tensor rules)");
  cmd->add_option("--bits", a->bits, "bits per weight for the linear layers")->check(CLI::Range(2, 8));
  cmd->add_option("--group", a->group, "group size")->check(CLI::IsMember({32, 64, 128}));
  cmd->add_flag("--sym", a->sym, "symmetric (no zero point)");
  cmd->add_option("--format", a->format,
                 "format: lowbit int4g64a ..., a llama.cpp type (q4_K, q8_0, iq4_xs ...) or a llama.cpp mixture "
                 "gguf:Q4_K_M (also gguf:Q2_K, Q3_K_S/M/L, Q4_K_S, Q5_K_S/M, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, "
                 "IQ4_XS); overrides --bits/--group/--sym");
  cmd->add_option("--keep", a->keep, "more tensors to keep unquantized (name parts: attn_v, blk.0, ...). token_embd and output are kept as well, "
                  "except with a gguf: preset, which stores them in its own types as llama-quantize does (--keep "
                  "output keeps the head there too)")
      ->delimiter(',');
  cmd->add_option("--bits-for", a->bits_override, "per-tensor override NAME=BITS or NAME=FORMAT, e.g. attn_v=6 or attn_v=q6_K")
      ->delimiter(',');
  cmd->add_option("--keep-dtype", a->keep_dtype, "dtype of kept matrices (f16, bf16, f32; norms stay f32)");
  cmd->add_option("-t,--threads", a->threads, "threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_flag("--json", a->json, "machine-readable summary");
  cmd->add_option("--tensor-type", a->tensor_types,
                  "llama-quantize's per-tensor type REGEX=TYPE (repeatable; the first regex found in a tensor's name "
                  "wins over the preset's rule and --bits-for; TYPE: a llama.cpp type, a lowbit format or f16/bf16/f32)");
  cmd->add_option("--token-embedding-type", a->token_embedding_type,
                  "type of token_embd.weight (quantized even without a preset), e.g. q4_K or q8_0");
  cmd->add_option("--output-tensor-type", a->output_tensor_type,
                  "type of output.weight (quantized even without a preset), e.g. q6_K");
  cmd->add_option("--target-size", a->target_size,
                  "choose every matrix's type (the embedding and the head too) so the whole file is at most this "
                  "size (bytes, or 950K / 1.5M / 4G) and as good as the measurements predict; --format gguf "
                  "(default: llama.cpp types), lowbit or any; needs --calib");
  cmd->add_option("--target-bpw", a->target_bpw,
                  "as --target-size, with the budget in bits per parameter of the tensors")
      ->check(CLI::Range(0.5, 32.0));
  cmd->add_option("--candidates", a->candidates,
                  "budget plans: the types to choose among, comma-separated (default gguf: q2_K,q3_K,q4_K,iq4_xs,"
                  "q5_K,q6_K,q8_0,f16, or q4_0,iq4_nl,q4_1,q5_0,q5_1,q8_0,f16 for rows no 256-block fits; lowbit: "
                  "int2g64a..int8g64a,f16)");
  cmd->add_option("--probe-windows", a->probe_windows,
                  "budget plans: calibration windows the sensitivities' KLD is measured on")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--measure-cache", a->measure_cache,
                  "budget plans: measurement cache file (default: $LOWBIT_CACHE_DIR or ~/.cache/lowbit/measure-<key>.json)");
  cmd->add_flag("--dry-run", a->dry_run,
                "print the plan (each tensor's stored type, bits per weight and bytes; totals per type) and write nothing");
  cmd->add_flag("--allow-requantize", a->requantize,
                "decode matrices already in a llama.cpp type (e.g. a Q8_0 file) and quantize them again (else copied)");
  cmd->add_flag("--resume", a->resume,
                "continue a killed run: reuse the tensors it saved in <output>.resume/ (same source and options)");
  cmd->callback([a] { quantize_cmd(*a); });
}

}  // namespace lowbit::cli
