// The model-level quantize pipeline (floor 5): source GGUF -> lowbit packed GGUF, streamed.
//  - Without calibration (rtn only): one tensor at a time, so only one tensor's weights are resident.
//  - With calibration windows (any method; gptq needs them): GPTQ's sequential order. The windows are embedded,
//    then for each block i: its linear layers' inputs are captured (H = 2XX^T per input), each linear is
//    quantized, the block's weights are swapped for their decoding, and the windows run through the quantized
//    block to give block i+1's inputs. Resident: one block's weights + the activations + one block's Hessians.
//    Matrices outside the blocks (embeddings, output head), when quantized, use RTN.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/dtype.h"
#include "quant/quantizer.h"

namespace lowbit::quant {

struct QuantizeModelOptions {
  // "rtn", "gptq", "awq+gptq", "rotate+gptaq", ... (quant/methods.h); empty: the measured default for the format
  // with calibration (default_method), plain rtn without.
  std::string method;
  // GPTQ / GPTAQ quantize a block's sites in graph order, each on inputs produced by the already-quantized
  // linears before it (q/k/v, then o, then gate/up, then down); false: all from one capture of the block.
  bool true_sequential = true;
  // Run the method's transforms (rotations, AWQ scales and clipping) but write every matrix in f32 instead of
  // quantizing it: the transformed model, to check a transform is exact (its logits equal the source's).
  bool transforms_only = false;
  std::string format = "int4g64a";       // default format for the linear layers
  QuantOptions qopts;
  // Tensors kept unquantized. Patterns match whole dot-separated parts of a name: "token_embd", "output.weight",
  // "attn_v" (every layer's), "blk.0" (all of layer 0).
  std::vector<std::string> keep = {"token_embd.weight", "output.weight"};
  // Kept 2-D tensors (embeddings, output head) are stored in this dtype (F16, BF16 or F32); 1-D norms stay f32.
  DType keep_dtype = DType::F16;
  // Per-tensor format overrides: (pattern as for keep, format), the last match wins (e.g. {"attn_v", "int6g64a"}).
  std::vector<std::pair<std::string, std::string>> overrides;
  // Calibration windows (token ids, each calib_len long); empty: no calibration.
  std::vector<std::vector<int32_t>> calib;
  std::string calib_source;  // recorded in the metadata
  // Called after each tensor: (done, total, name).
  std::function<void(size_t, size_t, const std::string&)> progress;
  // Every run saves each quantized tensor in "<out>.resume/" as it finishes (quant/resume.h) and removes it at the
  // end. resume: reuse what a killed run with the same source, options and calibration saved there; the output is
  // byte-identical to an uninterrupted run's.
  bool resume = false;
  // Matrices already in a llama.cpp block type (a Q8_0 download, say) are decoded and quantized again like f32 ones
  // (llama-quantize's --allow-requantize); without it they are copied as they are.
  bool allow_requantize = false;
  // Plan only: every tensor's stored type and size in the report, nothing computed or written (--dry-run).
  bool dry_run = false;
  // llama-quantize's per-tensor types. tensor_types (--tensor-type REGEX=TYPE): the first pattern found anywhere in
  // a tensor's name (std::regex_search, ECMAScript) gives its type instead of the preset's rule (and of --bits-for);
  // token_embedding_type / output_tensor_type (--token-embedding-type, --output-tensor-type) win over both. TYPE: a
  // llama.cpp type (any case), a lowbit format, or f16 / bf16 / f32 (stored unquantized). A tensor given a type
  // explicitly is quantized even where it would be kept by default (token_embd, output).
  std::vector<std::pair<std::string, std::string>> tensor_types;
  std::string token_embedding_type, output_tensor_type;
  // An importance matrix file of llama.cpp (llama-imatrix, legacy or GGUF; io/imatrix.h): each linear whose name
  // has an entry gets that entry as the importance of its format's fit (rtn: llama-quantize --imatrix byte for
  // byte; gptq/gptaq: for the fits inside the pass, H still from --calib); a linear without an entry is quantized
  // without importance. An entry whose size is not the matrix's input width, or no entry for any quantized matrix,
  // is an error before any work (an imatrix of another model). Presets apply llama.cpp's rules for an imatrix.
  std::string imatrix;
  // llama-quantize --pure: a preset's base type for every matrix, without its per-tensor rules (the caller also
  // clears `keep` when the embedding and the head should be quantized too).
  bool pure = false;
  // Types chosen per tensor to a size budget (quant/budget): set exactly one of the two targets. The whole output
  // file is at most target_bytes; or the tensors take at most target_bpw bits per parameter. format is then the
  // family to choose from: "gguf" (llama.cpp types: a file llama.cpp loads), "lowbit" (lowbit's formats) or "any".
  // Every float matrix not matched by keep is a candidate, the embedding and the head included. Needs calib.
  uint64_t target_bytes = 0;
  double target_bpw = 0;
  // The formats to choose among (each tensor keeps those its rows fit); empty: the family's default set.
  std::vector<std::string> candidates;
  int probe_windows = 8;       // calibration windows (the first ones) the sensitivities' KLD is measured on
  std::string measure_cache;   // the measurement cache file; empty: budget::default_cache_path
  // tensor name -> type, winning over every other rule (what the budget planner hands the quantizing run).
  std::map<std::string, std::string> planned_types;
};

struct TensorReport {
  std::string name;
  std::vector<int64_t> shape;
  std::string stored;       // format name, or the dtype kept
  double bits_per_weight = 0;
  double rel_error = 0;     // ||W - Q||_F / ||W||_F (weight space; 0 for kept tensors)
  // With calibration: ||WX - QX||_F / ||WX||_F on the captured inputs of this linear (-1: not measured).
  double rel_output_error = -1;
  std::string note;         // why a tensor was kept, if it was
  bool imatrix = false;     // quantized with its entry of the importance matrix file
  double predicted_kld = -1; // budget plans: the tensor's predicted KLD contribution in its chosen type
};

struct QuantizeReport {
  std::string method;       // what ran, canonical ("awq+gptq")
  std::vector<TensorReport> tensors;
  uint64_t bytes = 0;       // tensor bytes written
  int64_t params = 0;
  double bits_per_weight = 0;
  double seconds = 0;
  // Wall time of each block (all its tensors read, quantized and written), in block order.
  std::vector<double> layer_seconds;
  size_t resumed_tensors = 0;  // tensors taken from a killed run's saved progress (resume)
  // The importance matrix file, when one was given (QuantizeModelOptions::imatrix).
  struct Imatrix {
    std::string file, format;           // format: "legacy" or "gguf"
    size_t entries = 0;                 // entries in the file
    size_t used = 0;                    // of them, the matrices quantized with one
    std::vector<std::string> datasets;  // as the file records them
    int64_t chunks = 0;
  };
  std::optional<Imatrix> imatrix;
  // A size-budget plan (QuantizeModelOptions::target_bytes / target_bpw).
  struct Budget {
    uint64_t target_bytes = 0;      // the whole file's budget (target_bpw: the tensors' budget)
    bool whole_file = true;         // target_bytes counts the whole file (else the tensor bytes)
    uint64_t planned_bytes = 0;     // the plan's file (or tensor) bytes
    uint64_t granularity = 0;       // bytes per unit of the exact allocation
    size_t items = 0;               // tensors whose type was chosen
    std::string cache;              // the measurement cache file
    bool cache_hit = false;         // the measurements came from it
    double measure_seconds = 0;     // the measurement pass (when it ran, or as recorded in the cache), of which:
    double measure_solve_seconds = 0;  // the other candidates' quantizations
    double measure_probe_seconds = 0;  // the KLD runs (sensitivities, the embedding's and head's candidates)
    double plan_seconds = 0;        // allocation, from the measurements
    int probe_windows = 0, probe_len = 0;
    double predicted_kld = 0;       // sum of the chosen types' predicted contributions
    double measured_kld = -1;       // the written file's KLD on the probe windows (-1: not measured, dry run)
    // Per tensor role (attn_q, ffn_down, token_embd, output ...): bytes, predicted contribution, and the KLD of the
    // model with only that role's tensors quantized as written (-1: not measured).
    struct Group {
      std::string role;
      uint64_t bytes = 0;
      int64_t params = 0;
      double predicted_kld = 0, measured_kld = -1;
      std::map<std::string, int> formats;  // chosen type -> tensors
    };
    std::vector<Group> groups;
  };
  std::optional<Budget> budget;
};

// Quantizes src (any model load_model opens -- GGUF, Hugging Face directory, llama2.c -- with f32/f16/bf16
// tensors) into out, atomically. Non-GGUF sources are written as the equivalent GGUF: llama.cpp metadata keys,
// the tokenizer (a tokenizer.json embedded whole), Q/K rows re-paired for the GGUF arch's RoPE style and
// llama3 rope scaling as rope_freqs.weight. Throws lowbit::Error.
QuantizeReport quantize_model(const std::string& src, const std::string& out, const QuantizeModelOptions& o);

}  // namespace lowbit::quant
