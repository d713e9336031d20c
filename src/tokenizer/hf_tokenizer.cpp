// Hugging Face tokenizer.json BPE, following the tokenizers library's pipeline: added tokens are split off
// (non-normalized ones in the raw text, normalized ones in the normalized text), the rest is normalized,
// pre-tokenized into words, and each word is encoded by BPE on merge ranks (lowest rank first, leftmost on
// ties) over its characters, with byte_fallback (<0xXX>) or unk (fused) for characters not in the vocabulary.
#include "tokenizer/hf_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <queue>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/json_file.h"
#include "lowbit/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace lowbit {

namespace tok {

namespace {

using json = nlohmann::json;


// Typed field access with errors naming the JSON path.
struct Ctx {
  std::string file;
  [[noreturn]] void bad(const std::string& field, const std::string& msg) const { fail(file, field, msg); }
  const json& obj(const json& j, const char* key, const std::string& path) const {
    if (!j.is_object() || !j.contains(key)) bad(path + key, "missing");
    return j.at(key);
  }
  std::string str(const json& j, const std::string& path) const {
    if (!j.is_string()) bad(path, "expected a string, got " + std::string(j.type_name()));
    return j.get<std::string>();
  }
  bool flag(const json& j, const char* key, bool def, const std::string& path) const {
    if (!j.is_object() || !j.contains(key) || j.at(key).is_null()) return def;
    if (!j.at(key).is_boolean()) bad(path + key, "expected true or false");
    return j.at(key).get<bool>();
  }
  int64_t integer(const json& j, const std::string& path) const {
    if (!j.is_number_integer()) bad(path, "expected an integer, got " + std::string(j.type_name()));
    return j.get<int64_t>();
  }
  std::string type(const json& j, const std::string& path) const {
    if (!j.is_object()) bad(path, "expected an object, got " + std::string(j.type_name()));
    if (!j.contains("type")) bad(path + "type", "missing");
    return str(j.at("type"), path + "type");
  }
};

struct AddedToken {
  std::string content;
  std::string pattern;  // what is matched: content, or content normalized (normalized tokens)
  int32_t id = -1;
  bool special = false, normalized = false, lstrip = false, rstrip = false;
};

struct NormStep {
  enum Kind { Prepend, Replace } kind;
  std::string a, b;
};

struct PreStep {
  enum Kind { Split, ByteLevel, Metaspace } kind;
  SplitRegex regex = SplitRegex::Gpt2;
  bool add_prefix_space = false, use_regex = false;
  std::string replacement;
  int prepend_scheme = 0;  // 0 always, 1 first, 2 never
  bool split = false;
};

enum class DecStep { ByteLevel, Replace, ByteFallback, StripEach };
struct Decoder {
  DecStep step;
  std::string a, b;
  int start = 0, stop = 0;
};

// Everything read from a tokenizer.json.
struct HfDesc {
  std::string path;
  std::vector<std::string> id_to_token;  // model vocab and added tokens, by id
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<int32_t, int32_t>> merges;  // as ids, rank = index
  std::vector<AddedToken> added;
  std::vector<NormStep> norm;
  std::vector<PreStep> pre;
  std::vector<Decoder> dec;
  bool lead_strip = false;
  bool byte_level = false;
  bool byte_fallback = false, fuse_unk = false, ignore_merges = false;
  bool merges_as_pairs = false;  // model.merges holds [a, b] pairs (else "a b" strings)
  int32_t unk = -1;
  int32_t template_bos = -1;  // first special token of the post_processor's single template
  int32_t template_eos = -1;  // last special token of it
};

std::string replace_all(std::string s, const std::string& a, const std::string& b) {
  if (a.empty()) return s;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (;;) {
    size_t m = s.find(a, pos);
    if (m == std::string::npos) break;
    out.append(s, pos, m - pos);
    out += b;
    pos = m + a.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

std::string normalize(const std::vector<NormStep>& steps, std::string_view text) {
  std::string s(text);
  for (const NormStep& st : steps) {
    if (st.kind == NormStep::Prepend) {
      if (!s.empty()) s.insert(0, st.a);
    } else {
      s = replace_all(std::move(s), st.a, st.b);
    }
  }
  return s;
}

std::string string_pattern(const Ctx& c, const json& j, const std::string& path) {
  const json& pat = c.obj(j, "pattern", path);
  if (pat.is_object() && pat.contains("String")) return c.str(pat.at("String"), path + "pattern.String");
  if (pat.is_object() && pat.contains("Regex"))
    c.bad(path + "pattern", "regex patterns are not supported here (only {\"String\": ...})");
  c.bad(path + "pattern", "expected {\"String\": ...}");
}

void parse_normalizer(const Ctx& c, const json& j, const std::string& path, std::vector<NormStep>& out) {
  if (j.is_null()) return;
  std::string t = c.type(j, path);
  if (t == "Sequence") {
    const json& list = c.obj(j, "normalizers", path);
    if (!list.is_array()) c.bad(path + "normalizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parse_normalizer(c, list[i], path + "normalizers[" + std::to_string(i) + "].", out);
  } else if (t == "Prepend") {
    out.push_back({NormStep::Prepend, c.str(c.obj(j, "prepend", path), path + "prepend"), ""});
  } else if (t == "Replace") {
    out.push_back({NormStep::Replace, string_pattern(c, j, path), c.str(c.obj(j, "content", path), path + "content")});
  } else if (t == "NFC") {
    // Identity: the input is assumed to be in NFC already (true of almost all text).
  } else {
    c.bad(path + "type", "unsupported normalizer \"" + t + "\" (supported: Sequence, Prepend, Replace, NFC)");
  }
}

int prepend_scheme_of(const Ctx& c, const json& j, const std::string& path) {
  if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
    std::string s = c.str(j.at("prepend_scheme"), path + "prepend_scheme");
    if (s == "always") return 0;
    if (s == "first") return 1;
    if (s == "never") return 2;
    c.bad(path + "prepend_scheme", "unknown value \"" + s + "\"");
  }
  return c.flag(j, "add_prefix_space", true, path) ? 0 : 2;
}

void parse_pre(const Ctx& c, const json& j, const std::string& path, HfDesc& d) {
  if (j.is_null()) return;
  std::string t = c.type(j, path);
  PreStep st{};
  if (t == "Sequence") {
    const json& list = c.obj(j, "pretokenizers", path);
    if (!list.is_array()) c.bad(path + "pretokenizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) parse_pre(c, list[i], path + "pretokenizers[" + std::to_string(i) + "].", d);
    return;
  } else if (t == "ByteLevel") {
    st.kind = PreStep::ByteLevel;
    st.add_prefix_space = c.flag(j, "add_prefix_space", true, path);
    st.use_regex = c.flag(j, "use_regex", true, path);
    d.byte_level = true;
  } else if (t == "Metaspace") {
    st.kind = PreStep::Metaspace;
    st.replacement = j.contains("replacement") ? c.str(j.at("replacement"), path + "replacement") : "\xE2\x96\x81";
    st.prepend_scheme = prepend_scheme_of(c, j, path);
    st.split = c.flag(j, "split", true, path);
  } else if (t == "Split") {
    st.kind = PreStep::Split;
    const json& pat = c.obj(j, "pattern", path);
    if (!pat.is_object() || !pat.contains("Regex")) c.bad(path + "pattern", "only {\"Regex\": ...} split patterns are supported");
    std::string re = c.str(pat.at("Regex"), path + "pattern.Regex");
    if (!regex_from_pattern(re, st.regex))
      c.bad(path + "pattern.Regex", "unsupported split regex \"" + re + "\" (supported: the GPT-2, Llama-3 and Qwen2 patterns, \\p{N}, \\p{N}+)");
    std::string behavior = j.contains("behavior") ? c.str(j.at("behavior"), path + "behavior") : "Isolated";
    if (behavior != "Isolated") c.bad(path + "behavior", "unsupported split behavior \"" + behavior + "\" (only Isolated)");
    if (c.flag(j, "invert", false, path)) c.bad(path + "invert", "inverted splits are not supported");
  } else if (t == "Digits") {
    st.kind = PreStep::Split;
    st.regex = c.flag(j, "individual_digits", false, path) ? SplitRegex::NumberEach : SplitRegex::NumberRun;
  } else {
    c.bad(path + "type", "unsupported pre-tokenizer \"" + t + "\" (supported: Sequence, ByteLevel, Metaspace, Split, Digits)");
  }
  d.pre.push_back(st);
}

// fused: whether a Fuse step came before (Strip then acts on the whole text).
void parse_decoder(const Ctx& c, const json& j, const std::string& path, HfDesc& d, bool& fused) {
  if (j.is_null()) return;
  std::string t = c.type(j, path);
  if (t == "Sequence") {
    const json& list = c.obj(j, "decoders", path);
    if (!list.is_array()) c.bad(path + "decoders", "expected an array");
    for (size_t i = 0; i < list.size(); ++i) parse_decoder(c, list[i], path + "decoders[" + std::to_string(i) + "].", d, fused);
  } else if (t == "ByteLevel") {
    d.dec.push_back({DecStep::ByteLevel, "", ""});
  } else if (t == "Replace") {
    d.dec.push_back({DecStep::Replace, string_pattern(c, j, path), c.str(c.obj(j, "content", path), path + "content")});
  } else if (t == "ByteFallback") {
    d.dec.push_back({DecStep::ByteFallback, "", ""});
  } else if (t == "Fuse") {
    fused = true;
  } else if (t == "Strip") {
    std::string content = c.str(c.obj(j, "content", path), path + "content");
    int start = static_cast<int>(c.integer(c.obj(j, "start", path), path + "start"));
    int stop = static_cast<int>(c.integer(c.obj(j, "stop", path), path + "stop"));
    if (content.size() != 1) c.bad(path + "content", "only one-byte strip characters are supported");
    if (fused) {
      if (content != " " || start > 1 || stop != 0)
        c.bad(path, "only Strip(content \" \", start <= 1, stop 0) is supported after Fuse");
      if (start == 1) d.lead_strip = true;
    } else {
      Decoder s{DecStep::StripEach, content, ""};
      s.start = start;
      s.stop = stop;
      d.dec.push_back(s);
    }
  } else if (t == "Metaspace") {
    std::string rep = j.contains("replacement") ? c.str(j.at("replacement"), path + "replacement") : "\xE2\x96\x81";
    d.dec.push_back({DecStep::Replace, rep, " "});
    if (prepend_scheme_of(c, j, path) != 2) d.lead_strip = true;
  } else {
    c.bad(path + "type", "unsupported decoder \"" + t + "\" (supported: Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip)");
  }
}

void parse_post(const Ctx& c, const json& j, const std::string& path, HfDesc& d, const std::unordered_map<std::string, int32_t>& ids) {
  if (j.is_null() || !j.is_object()) return;
  std::string t = c.type(j, path);
  if (t == "Sequence" && j.contains("processors") && j.at("processors").is_array()) {
    const json& list = j.at("processors");
    for (size_t i = 0; i < list.size(); ++i) parse_post(c, list[i], path + "processors[" + std::to_string(i) + "].", d, ids);
  } else if (t == "TemplateProcessing" && j.contains("single") && j.at("single").is_array()) {
    const json& single = j.at("single");
    auto special_id = [&](const json& item) -> int32_t {
      if (!item.is_object() || !item.contains("SpecialToken")) return -1;
      const json& st = item.at("SpecialToken");
      if (!st.is_object() || !st.contains("id") || !st.at("id").is_string()) return -1;
      std::string name = st.at("id").get<std::string>();
      if (j.contains("special_tokens") && j.at("special_tokens").contains(name)) {
        const json& e = j.at("special_tokens").at(name);
        if (e.contains("ids") && e.at("ids").is_array() && !e.at("ids").empty() && e.at("ids")[0].is_number_integer())
          return e.at("ids")[0].get<int32_t>();
      }
      auto it = ids.find(name);
      return it == ids.end() ? -1 : it->second;
    };
    if (!single.empty()) {
      d.template_bos = special_id(single.front());
      if (single.size() > 1) d.template_eos = special_id(single.back());
    }
  }
}

HfDesc parse_tokenizer_json_value(const json& j, const std::string& path) {
  HfDesc d;
  d.path = path;
  Ctx c{path};
  if (!j.is_object()) c.bad("", "expected a JSON object at the top level");
  if (!j.contains("model")) c.bad("model", "missing (not a Hugging Face tokenizer.json)");
  const json& m = j.at("model");
  if (!m.is_object()) c.bad("model", "expected an object");
  std::string type = m.contains("type") ? c.str(m.at("type"), "model.type") : (m.contains("merges") ? "BPE" : "");
  if (type != "BPE")
    c.bad("model.type", "unsupported tokenizer model \"" + type + "\" (only BPE is supported)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && !m.at(key).is_null() && !(m.at(key).is_string() && m.at(key).get<std::string>().empty()))
      c.bad(std::string("model.") + key, "not supported");
  }
  if (m.contains("dropout") && m.at("dropout").is_number() && m.at("dropout").get<double>() > 0)
    c.bad("model.dropout", "BPE dropout is not supported");

  // Vocabulary.
  const json& vocab = c.obj(m, "vocab", "model.");
  if (!vocab.is_object()) c.bad("model.vocab", "expected an object {token: id}");
  std::unordered_map<std::string, int32_t> ids;
  ids.reserve(vocab.size() * 2);
  int64_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    int64_t id = c.integer(it.value(), "model.vocab[\"" + it.key() + "\"]");
    if (id < 0 || id >= (int64_t{1} << 30)) c.bad("model.vocab[\"" + it.key() + "\"]", "id " + std::to_string(id) + " out of range");
    ids[it.key()] = static_cast<int32_t>(id);
    d.vocab.emplace_back(it.key(), static_cast<int32_t>(id));
    max_id = std::max(max_id, id);
  }
  if (d.vocab.empty()) c.bad("model.vocab", "empty vocabulary");

  // Added tokens.
  if (j.contains("added_tokens") && !j.at("added_tokens").is_null()) {
    const json& at = j.at("added_tokens");
    if (!at.is_array()) c.bad("added_tokens", "expected an array");
    for (size_t i = 0; i < at.size(); ++i) {
      std::string p = "added_tokens[" + std::to_string(i) + "].";
      AddedToken a;
      int64_t id = c.integer(c.obj(at[i], "id", p), p + "id");
      if (id < 0 || id >= (int64_t{1} << 30)) c.bad(p + "id", "id " + std::to_string(id) + " out of range");
      a.id = static_cast<int32_t>(id);
      a.content = c.str(c.obj(at[i], "content", p), p + "content");
      if (a.content.empty()) c.bad(p + "content", "empty");
      a.special = c.flag(at[i], "special", false, p);
      a.normalized = c.flag(at[i], "normalized", !a.special, p);
      a.lstrip = c.flag(at[i], "lstrip", false, p);
      a.rstrip = c.flag(at[i], "rstrip", false, p);
      max_id = std::max(max_id, id);
      d.added.push_back(std::move(a));
    }
  }
  d.id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
  for (auto& [t, id] : d.vocab) d.id_to_token[id] = t;
  const std::unordered_map<std::string, int32_t> vocab_ids = ids;  // the model's own vocabulary
  for (auto& a : d.added) {
    d.id_to_token[a.id] = a.content;
    ids.emplace(a.content, a.id);
  }

  // Merges: "a b" strings or [a, b] pairs; both parts and their concatenation must be tokens.
  if (m.contains("merges") && !m.at("merges").is_null()) {
    const json& ms = m.at("merges");
    if (!ms.is_array()) c.bad("model.merges", "expected an array");
    d.merges.reserve(ms.size());
    d.merges_as_pairs = !ms.empty() && ms[0].is_array();
    auto vid = [&](const std::string& t, const std::string& p) {
      auto it = vocab_ids.find(t);
      if (it == vocab_ids.end()) c.bad(p, "\"" + t + "\" is not in the vocabulary");
      return it->second;
    };
    for (size_t i = 0; i < ms.size(); ++i) {
      std::string p = "model.merges[" + std::to_string(i) + "]";
      std::string a, b;
      if (ms[i].is_string()) {
        std::string s = ms[i].get<std::string>();
        size_t sp = s.size() > 1 ? s.find(' ', 1) : std::string::npos;
        if (sp == std::string::npos) c.bad(p, "\"" + s + "\" is not \"a b\"");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (ms[i].is_array() && ms[i].size() == 2) {
        a = c.str(ms[i][0], p + "[0]");
        b = c.str(ms[i][1], p + "[1]");
      } else {
        c.bad(p, "expected \"a b\" or [a, b]");
      }
      int32_t ia = vid(a, p), ib = vid(b, p);
      vid(a + b, p);
      d.merges.emplace_back(ia, ib);
    }
  }

  d.byte_fallback = c.flag(m, "byte_fallback", false, "model.");
  d.fuse_unk = c.flag(m, "fuse_unk", false, "model.");
  d.ignore_merges = c.flag(m, "ignore_merges", false, "model.");
  if (m.contains("unk_token") && !m.at("unk_token").is_null()) {
    std::string u = c.str(m.at("unk_token"), "model.unk_token");
    auto it = vocab_ids.find(u);
    if (it == vocab_ids.end()) c.bad("model.unk_token", "\"" + u + "\" is not in the vocabulary");
    d.unk = it->second;
  }

  if (j.contains("normalizer")) parse_normalizer(c, j.at("normalizer"), "normalizer.", d.norm);
  if (j.contains("pre_tokenizer")) parse_pre(c, j.at("pre_tokenizer"), "pre_tokenizer.", d);
  bool fused = false;
  if (j.contains("decoder")) parse_decoder(c, j.at("decoder"), "decoder.", d, fused);
  if (j.contains("post_processor")) parse_post(c, j.at("post_processor"), "post_processor.", d, ids);
  for (AddedToken& a : d.added) a.pattern = a.normalized ? normalize(d.norm, a.content) : a.content;
  return d;
}

// ---------------------------------------------------------------------------------------------------------

class HfTokenizer final : public BaseTokenizer {
 public:
  HfTokenizer(HfDesc d, const TokenizerSpec& spec) : desc_(std::move(d)) {
    source_ = desc_.path;
    const size_t n = desc_.id_to_token.size();
    lookup_.reserve(desc_.vocab.size() * 2);
    for (auto& [t, id] : desc_.vocab) lookup_[std::string_view(t)] = id;
    merges_.reserve(desc_.merges.size() * 2);
    for (size_t r = 0; r < desc_.merges.size(); ++r) {
      auto [a, b] = desc_.merges[r];
      int32_t new_id = lookup_.at(std::string_view(desc_.id_to_token[a] + desc_.id_to_token[b]));
      merges_[key(a, b)] = {static_cast<int32_t>(r), new_id};  // a later duplicate wins, like HF's map
    }
    byte_tok_.fill(-1);
    if (desc_.byte_fallback) {
      for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        auto it = lookup_.find(std::string_view(buf));
        if (it != lookup_.end()) byte_tok_[b] = it->second, ++n_byte_tokens_;
      }
    }
    // Added tokens: leftmost-longest matching, per first byte, longest first.
    for (size_t i = 0; i < desc_.added.size(); ++i) {
      const AddedToken& a = desc_.added[i];
      if (a.pattern.empty()) continue;
      auto& bucket = (a.normalized ? by_first_norm_ : by_first_raw_)[static_cast<unsigned char>(a.pattern[0])];
      bucket.push_back(static_cast<int32_t>(i));
    }
    for (auto* table : {&by_first_norm_, &by_first_raw_})
      for (auto& bucket : *table)
        std::stable_sort(bucket.begin(), bucket.end(), [&](int32_t x, int32_t y) {
          return desc_.added[x].pattern.size() > desc_.added[y].pattern.size();
        });

    // Decoded pieces.
    pieces_.resize(n);
    skipped_.assign(n, 0);
    for (size_t id = 0; id < n; ++id) pieces_[id] = decode_token(desc_.id_to_token[id]);
    for (const AddedToken& a : desc_.added) {
      if (a.special) {
        pieces_[a.id].clear();
        skipped_[a.id] = 1;
      }
    }
    lead_strip_ = desc_.lead_strip ? LeadStrip::FirstNonSpecial : LeadStrip::None;

    auto in_range = [&](int32_t id) { return id >= 0 && static_cast<size_t>(id) < n ? id : -1; };
    if (spec.bos >= 0 || spec.eos >= 0) {
      bos_ = in_range(spec.bos);
      eos_ = in_range(spec.eos);
      add_bos_ = spec.add_bos;
    } else {
      bos_ = in_range(desc_.template_bos);
      eos_ = -1;
      add_bos_ = bos_ >= 0;
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override {
    if (!desc_.byte_level) require_utf8(text, source_);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos && bos_ >= 0) out.push_back(bos_);
    for (const Fragment& f : split_added(text, by_first_raw_, parse_special)) {
      if (f.id >= 0) {
        out.push_back(f.id);
        continue;
      }
      const std::string norm = normalize(desc_.norm, f.text);
      for (const Fragment& g : split_added(norm, by_first_norm_, parse_special)) {
        if (g.id >= 0) {
          out.push_back(g.id);
          continue;
        }
        for (const std::string& w : pre_tokenize(g.text, f.offset == 0 && g.offset == 0)) bpe(w, out);
      }
    }
    return out;
  }

  std::string describe() const override {
    std::string d = "HF tokenizer.json BPE, " + std::to_string(n_vocab()) + " tokens, " +
                    std::to_string(desc_.merges.size()) + " merges";
    if (desc_.byte_level) d += ", byte-level";
    else if (n_byte_tokens_ == 256) d += ", byte fallback";
    else d += ", unknown characters become unk";
    return d;
  }

 private:
  using Buckets = std::array<std::vector<int32_t>, 256>;
  static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  std::string decode_token(const std::string& t) const {
    std::string s = t;
    for (const Decoder& d : desc_.dec) {
      switch (d.step) {
        case DecStep::ByteLevel: s = unicode_to_bytes(s); break;
        case DecStep::Replace: s = replace_all(std::move(s), d.a, d.b); break;
        case DecStep::ByteFallback: {
          int b = parse_byte_token(s);
          if (b >= 0) s = std::string(1, static_cast<char>(b));
          break;
        }
        case DecStep::StripEach: {
          int k = 0;
          while (k < d.start && !s.empty() && s.front() == d.a[0]) s.erase(0, 1), ++k;
          k = 0;
          while (k < d.stop && !s.empty() && s.back() == d.a[0]) s.pop_back(), ++k;
          break;
        }
      }
    }
    return s;
  }

  static bool ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

  std::vector<Fragment> split_added(std::string_view s, const Buckets& buckets, bool parse_special) const {
    std::vector<Fragment> out;
    size_t pos = 0, gap = 0;
    while (pos < s.size()) {
      const AddedToken* best = nullptr;
      for (int32_t i : buckets[static_cast<unsigned char>(s[pos])]) {
        const AddedToken& a = desc_.added[i];
        if (a.special && !parse_special) continue;
        if (s.compare(pos, a.pattern.size(), a.pattern) == 0) {
          best = &a;
          break;
        }
      }
      if (!best) {
        ++pos;
        continue;
      }
      size_t start = pos, end = pos + best->pattern.size();
      if (best->lstrip)
        while (start > gap && ascii_space(s[start - 1])) --start;
      if (best->rstrip)
        while (end < s.size() && ascii_space(s[end])) ++end;
      if (start > gap) out.push_back({-1, s.substr(gap, start - gap), gap});
      out.push_back({best->id, {}, start});
      pos = gap = end;
    }
    if (gap < s.size()) out.push_back({-1, s.substr(gap), gap});
    return out;
  }

  std::vector<std::string> pre_tokenize(std::string_view text, bool at_start) const {
    std::vector<std::string> pieces;
    if (text.empty()) return pieces;
    pieces.emplace_back(text);
    std::vector<std::string> next;
    for (const PreStep& st : desc_.pre) {
      next.clear();
      for (size_t pi = 0; pi < pieces.size(); ++pi) {
        std::string& p = pieces[pi];
        switch (st.kind) {
          case PreStep::Split: {
            const SplitRegex r[1] = {st.regex};
            for (std::string_view v : pre_split(p, r)) next.emplace_back(v);
            break;
          }
          case PreStep::ByteLevel: {
            if (st.add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(0, " ");
            if (st.use_regex) {
              const SplitRegex r[1] = {SplitRegex::Gpt2};
              for (std::string_view v : pre_split(p, r)) next.push_back(bytes_to_unicode(v));
            } else {
              next.push_back(bytes_to_unicode(p));
            }
            break;
          }
          case PreStep::Metaspace: {
            std::string s = replace_all(p, " ", st.replacement);
            bool prepend = st.prepend_scheme == 0 || (st.prepend_scheme == 1 && at_start && pi == 0);
            if (prepend && s.compare(0, st.replacement.size(), st.replacement) != 0) s.insert(0, st.replacement);
            if (!st.split) {
              next.push_back(std::move(s));
              break;
            }
            // Every replacement character starts a new word (HF: MergedWithNext).
            size_t begin = 0;
            for (size_t m = s.find(st.replacement); m != std::string::npos; m = s.find(st.replacement, m + st.replacement.size())) {
              if (m > begin) next.push_back(s.substr(begin, m - begin));
              begin = m;
            }
            if (begin < s.size()) next.push_back(s.substr(begin));
            break;
          }
        }
      }
      pieces.swap(next);
    }
    return pieces;
  }

  void bpe(const std::string& w, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (desc_.ignore_merges) {
      auto it = lookup_.find(std::string_view(w));
      if (it != lookup_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    struct Sym {
      int32_t id, prev, next, len;
    };
    std::vector<Sym> sym;
    sym.reserve(w.size());
    int32_t pending_unk_len = 0;
    auto add = [&](int32_t id, int32_t len) {
      int32_t k = static_cast<int32_t>(sym.size());
      sym.push_back({id, k - 1, k + 1, len});
    };
    auto flush_unk = [&] {
      if (pending_unk_len > 0) add(desc_.unk, pending_unk_len);
      pending_unk_len = 0;
    };
    for (size_t i = 0; i < w.size();) {
      size_t start = i;
      next_cp(w, i);
      std::string_view ch(w.data() + start, i - start);
      auto it = lookup_.find(ch);
      if (it != lookup_.end()) {
        flush_unk();
        add(it->second, static_cast<int32_t>(ch.size()));
        continue;
      }
      if (desc_.byte_fallback) {
        bool all = true;
        for (unsigned char b : ch) all = all && byte_tok_[b] >= 0;
        if (all) {
          flush_unk();
          for (unsigned char b : ch) add(byte_tok_[b], 1);
          continue;
        }
      }
      if (desc_.unk < 0)
        fail(source_, "input text", "\"" + std::string(ch) + "\" is not in the vocabulary and the tokenizer has no unk token");
      if (pending_unk_len > 0 && !desc_.fuse_unk) flush_unk();
      pending_unk_len += static_cast<int32_t>(ch.size());
    }
    flush_unk();
    if (sym.empty()) return;
    sym.back().next = -1;

    struct Merge {
      int32_t rank, pos, new_id;
    };
    struct MergeGreater {
      bool operator()(const Merge& a, const Merge& b) const {
        return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);
      }
    };
    std::priority_queue<Merge, std::vector<Merge>, MergeGreater> queue;
    auto try_add = [&](int32_t l) {
      if (l < 0 || sym[l].next < 0) return;
      auto it = merges_.find(key(sym[l].id, sym[sym[l].next].id));
      if (it != merges_.end()) queue.push({it->second.first, l, it->second.second});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) try_add(i);
    while (!queue.empty()) {
      Merge m = queue.top();
      queue.pop();
      Sym& l = sym[m.pos];
      if (l.len == 0 || l.next < 0) continue;
      Sym& r = sym[l.next];
      auto it = merges_.find(key(l.id, r.id));
      if (it == merges_.end() || it->second.second != m.new_id) continue;  // stale
      l.id = m.new_id;
      l.len += r.len;
      r.len = 0;
      int32_t after = r.next;
      l.next = after;
      if (after >= 0) sym[after].prev = m.pos;
      try_add(l.prev);
      try_add(m.pos);
    }
    for (int32_t i = 0; i != -1; i = sym[i].next) out.push_back(sym[i].id);
  }

  HfDesc desc_;
  PieceMap lookup_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::array<int32_t, 256> byte_tok_{};
  int n_byte_tokens_ = 0;
  Buckets by_first_raw_, by_first_norm_;
};

}  // namespace

HfDesc parse_tokenizer_json(const std::string& path) { return parse_tokenizer_json_value(read_json_file(path), path); }

// The tokenizer.json of an hf-json spec: its text embedded in a GGUF (tokenizer.huggingface.json) or its file.
HfDesc parse_spec_json(const TokenizerSpec& spec) {
  if (!spec.json_text.empty()) {
    const std::string where = spec.source + ": tokenizer.huggingface.json";
    json j = json::parse(spec.json_text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) fail(spec.source, "tokenizer.huggingface.json", "not valid JSON");
    return parse_tokenizer_json_value(j, where);
  }
  if (spec.json_path.empty()) fail(spec.source, "tokenizer", "hf-json tokenizer without a tokenizer.json path");
  return parse_tokenizer_json(spec.json_path);
}

std::unique_ptr<Tokenizer> make_hf_tokenizer(const TokenizerSpec& spec) {
  return std::make_unique<HfTokenizer>(parse_spec_json(spec), spec);
}

}  // namespace tok

// ---------------------------------------------------------------------------------------------------------

TokenizerSpec tokenizer_spec_from_hf_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  using json = nlohmann::json;
  std::error_code ec;
  fs::path base(dir), tj;
  if (fs::is_regular_file(base, ec)) {
    tj = base;
    base = base.parent_path();
  } else {
    tj = base / "tokenizer.json";
    if (!fs::is_regular_file(tj, ec)) fail(dir, "tokenizer.json", "missing (a Hugging Face model directory needs tokenizer.json)");
  }
  const std::string path = tj.string();
  tok::HfDesc d = tok::parse_tokenizer_json(path);

  TokenizerSpec s;
  s.model = "hf-json";
  s.json_path = path;
  s.source = path;
  s.add_space_prefix = false;
  s.tokens = d.id_to_token;
  const size_t n = s.tokens.size();
  s.types.assign(n, tok::kNormal);
  std::unordered_map<std::string, int32_t> ids;
  for (auto& [t, id] : d.vocab) {
    ids.emplace(t, id);
    if (d.byte_fallback && tok::parse_byte_token(t) >= 0) s.types[id] = tok::kByte;
  }
  for (auto& a : d.added) {
    ids[a.content] = a.id;
    s.types[a.id] = a.special ? tok::kControl : tok::kUserDefined;
  }
  if (d.unk >= 0) s.types[d.unk] = tok::kUnknown;
  s.unk = d.unk;

  auto read_optional = [&](const fs::path& p) -> json {
    if (!fs::is_regular_file(p, ec)) return json();
    return lowbit::read_json_file(p.string());
  };
  const json tc = read_optional(base / "tokenizer_config.json");
  const json cfg = read_optional(base / "config.json");
  const std::string tc_path = (base / "tokenizer_config.json").string();

  // A token named in tokenizer_config.json: a string or {"content": ...}; -1 when absent or null.
  auto named = [&](const char* key) -> int32_t {
    if (!tc.is_object() || !tc.contains(key) || tc.at(key).is_null()) return -1;
    const json& v = tc.at(key);
    std::string name;
    if (v.is_string()) name = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v.at("content").is_string()) name = v.at("content").get<std::string>();
    else fail(tc_path, key, "expected a string or {\"content\": ...}");
    auto it = ids.find(name);
    if (it == ids.end()) fail(tc_path, key, "\"" + name + "\" is not in the vocabulary");
    return it->second;
  };
  auto config_id = [&](const char* key) -> int32_t {
    if (!cfg.is_object() || !cfg.contains(key)) return -1;
    json v = cfg.at(key);
    if (v.is_array() && !v.empty()) v = v[0];
    if (!v.is_number_integer()) return -1;
    int64_t x = v.get<int64_t>();
    return x >= 0 && static_cast<size_t>(x) < n ? static_cast<int32_t>(x) : -1;
  };
  auto tc_flag = [&](const char* key) -> int {
    if (!tc.is_object() || !tc.contains(key) || tc.at(key).is_null()) return -1;
    if (!tc.at(key).is_boolean()) fail(tc_path, key, "expected true or false");
    return tc.at(key).get<bool>() ? 1 : 0;
  };

  s.bos = named("bos_token");
  if (s.bos < 0) s.bos = d.template_bos;
  if (s.bos < 0) s.bos = config_id("bos_token_id");
  s.eos = named("eos_token");
  if (s.eos < 0) s.eos = config_id("eos_token_id");
  if (s.unk < 0) s.unk = named("unk_token");
  s.pad = named("pad_token");
  if (s.pad < 0) s.pad = config_id("pad_token_id");
  int add_bos = tc_flag("add_bos_token");
  s.add_bos = add_bos >= 0 ? add_bos == 1 : (d.template_bos >= 0 && d.template_bos == s.bos);
  int add_eos = tc_flag("add_eos_token");
  s.add_eos = add_eos >= 0 ? add_eos == 1 : (d.template_eos >= 0 && d.template_eos == s.eos && d.template_eos != d.template_bos);
  return s;
}

// ---------------------------------------------------------------------------------------------------------

namespace {

const char* regex_name(tok::SplitRegex r) {
  switch (r) {
    case tok::SplitRegex::Gpt2: return "GPT-2";
    case tok::SplitRegex::Llama3: return "Llama-3";
    case tok::SplitRegex::Qwen2: return "Qwen2";
    case tok::SplitRegex::NumberEach: return "\\p{N}";
    case tok::SplitRegex::NumberRun: return "\\p{N}+";
    case tok::SplitRegex::AsciiDigits3: return "[0-9][0-9][0-9]";
    case tok::SplitRegex::PunctRun: return "punctuation runs";
  }
  return "?";
}

// convert_hf_to_gguf.py's does_token_look_special: added tokens that are control tokens in practice even when the
// tokenizer.json does not mark them special.
bool looks_special(const std::string& t) {
  auto wrapped = [&](std::string_view open, std::string_view close) {
    return t.size() >= open.size() + close.size() && t.compare(0, open.size(), open) == 0 &&
           t.compare(t.size() - close.size(), close.size(), close) == 0;
  };
  return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" || wrapped("<|", "|>") ||
         wrapped("<\xEF\xBD\x9C", "\xEF\xBD\x9C>") || wrapped("<unused", ">");
}

}  // namespace

TokenizerSpec ggml_vocab_from_hf(const TokenizerSpec& hf, int n_vocab) {
  using tok::PreStep;
  const tok::HfDesc d = tok::parse_spec_json(hf);
  const std::string& file = d.path;
  const std::string kMeta = "\xE2\x96\x81";  // ▁

  // What the pipeline does with spaces: byte-level (GPT-2 style) or SentencePiece-style ▁ escaping.
  std::vector<tok::SplitRegex> regexes;
  bool metaspace = false, metaspace_prefix = false, bytelevel_prefix = false;
  for (const PreStep& st : d.pre) {
    switch (st.kind) {
      case PreStep::Split: regexes.push_back(st.regex); break;
      case PreStep::ByteLevel:
        bytelevel_prefix = bytelevel_prefix || st.add_prefix_space;
        if (st.use_regex) regexes.push_back(tok::SplitRegex::Gpt2);
        break;
      case PreStep::Metaspace:
        if (st.replacement != kMeta)
          fail(file, "pre_tokenizer", "Metaspace replacement \"" + st.replacement +
                                          "\" has no llama.cpp equivalent (its llama tokenizer escapes spaces as \"" +
                                          kMeta + "\")");
        metaspace = true;
        metaspace_prefix = metaspace_prefix || st.prepend_scheme != 2;
        break;
    }
  }
  bool norm_prepend = false, norm_replace = false;
  for (const tok::NormStep& n : d.norm) {
    if (n.kind == tok::NormStep::Prepend && n.a == kMeta) norm_prepend = true;
    else if (n.kind == tok::NormStep::Replace && n.a == " " && n.b == kMeta) norm_replace = true;
    else
      fail(file, "normalizer",
           std::string(n.kind == tok::NormStep::Prepend ? "Prepend \"" + n.a + "\"" : "Replace \"" + n.a + "\" -> \"" + n.b + "\"") +
               " has no llama.cpp equivalent (only Prepend \"" + kMeta + "\", Replace \" \" -> \"" + kMeta +
               "\" and NFC can be written as GGUF tokenizer keys)");
  }

  TokenizerSpec g;
  g.source = file;
  g.bos = hf.bos, g.eos = hf.eos, g.unk = hf.unk, g.pad = hf.pad;
  g.add_bos = hf.add_bos, g.add_eos = hf.add_eos;
  if (d.byte_level) {
    if (metaspace) fail(file, "pre_tokenizer", "mixes ByteLevel and Metaspace: no llama.cpp tokenizer does both");
    if (norm_prepend || norm_replace)
      fail(file, "normalizer", "a byte-level tokenizer with a \"" + kMeta + "\" normalizer has no llama.cpp equivalent");
    if (bytelevel_prefix)
      fail(file, "pre_tokenizer", "ByteLevel add_prefix_space has no llama.cpp equivalent (its gpt2 tokenizer adds no space)");
    g.model = "gpt2";
    g.pre = tok::pre_name_for(regexes, d.ignore_merges);
    if (g.pre.empty()) {
      std::string seq;
      for (tok::SplitRegex r : regexes) seq += (seq.empty() ? "" : ", ") + std::string(regex_name(r));
      fail(file, "pre_tokenizer",
           "split regexes [" + seq + "]" + (d.ignore_merges ? " with model.ignore_merges" : "") +
               " match no llama.cpp pre-tokenizer (known: Llama-3 as llama-bpe with ignore_merges or smaug-bpe "
               "without, Qwen2, GPT-2, \\p{N} then GPT-2 as smollm); llama.cpp would split the text differently");
    }
  } else if (norm_prepend || norm_replace || metaspace) {
    if (!regexes.empty())
      fail(file, "pre_tokenizer",
           std::string("splits with ") + regex_name(regexes.front()) +
               " before SentencePiece-style BPE: llama.cpp's llama tokenizer does not pre-split");
    g.model = "llama";
    g.pre = "default";
    g.add_space_prefix = norm_prepend || metaspace_prefix;
  } else {
    fail(file, "pre_tokenizer",
         "neither byte-level (ByteLevel) nor SentencePiece-style (\"" + kMeta +
             "\" normalizer or Metaspace): no llama.cpp tokenizer model matches");
  }
  const bool llama = g.model == "llama";

  // Tokens in id order; ids nothing names (and ids up to the model's vocabulary size) as "[PAD<id>]", unused.
  const size_t n_json = d.id_to_token.size();
  const size_t n = std::max(n_json, n_vocab > 0 ? static_cast<size_t>(n_vocab) : size_t{0});
  std::vector<std::string> vocab_text(n_json);
  std::vector<uint8_t> in_vocab(n_json, 0);
  std::unordered_map<std::string, int32_t> vocab_id;
  vocab_id.reserve(d.vocab.size() * 2);
  for (const auto& [t, id] : d.vocab) {
    vocab_text[id] = t;
    in_vocab[id] = 1;
    vocab_id.emplace(t, id);
  }
  std::vector<int8_t> added(n_json, -1);  // -1 not added, 0 added, 1 added special
  for (const tok::AddedToken& a : d.added) added[a.id] = a.special ? 1 : 0;
  g.tokens.resize(n);
  g.types.assign(n, tok::kNormal);
  if (llama) g.scores.assign(n, 0.0f);
  for (size_t i = 0; i < n; ++i) {
    if (i >= n_json || (!in_vocab[i] && added[i] < 0)) {
      g.tokens[i] = "[PAD" + std::to_string(i) + "]";
      g.types[i] = tok::kUnused;
      if (llama) g.scores[i] = -1000.0f;
      continue;
    }
    std::string t = d.id_to_token[i];
    if (llama) {  // the LlamaHfVocab rules, with unk as unknown
      if (added[i] >= 0) g.types[i] = added[i] ? tok::kControl : tok::kUserDefined;
      if (static_cast<int32_t>(i) == d.unk) g.types[i] = tok::kUnknown;
      if (tok::parse_byte_token(t) >= 0) g.types[i] = tok::kByte;
    } else if (added[i] >= 0) {  // convert_hf_to_gguf's get_vocab_base rules
      if (added[i] == 1 || looks_special(t)) {
        g.types[i] = tok::kControl;
      } else {
        g.types[i] = tok::kUserDefined;
        t = tok::replace_all(std::move(t), kMeta, " ");  // user-defined spaces pre-normalized
      }
    }
    g.tokens[i] = std::move(t);
  }

  if (llama) {
    // Scores that make llama.cpp's score-driven merging follow the merge ranks: a token made by merge rank r
    // (its first one) scores -(r + 1), every other token 0; so earlier merges win, as in BPE.
    std::vector<uint8_t> scored(n_json, 0);
    for (size_t r = 0; r < d.merges.size(); ++r) {
      auto [a, b] = d.merges[r];
      auto it = vocab_id.find(vocab_text[a] + vocab_text[b]);
      if (it == vocab_id.end() || scored[it->second]) continue;
      scored[it->second] = 1;
      g.scores[it->second] = -static_cast<float>(r + 1);
    }
  } else {
    // Merges as "a b" strings in rank order; spaces inside [a, b] pairs are written as U+0120, as gguf-py does.
    g.merges.reserve(d.merges.size());
    for (auto [a, b] : d.merges) {
      std::string sa = vocab_text[a], sb = vocab_text[b];
      if (d.merges_as_pairs) {
        sa = tok::replace_all(std::move(sa), " ", "\xC4\xA0");
        sb = tok::replace_all(std::move(sb), " ", "\xC4\xA0");
      }
      g.merges.push_back(sa + " " + sb);
    }
  }
  return g;
}

}  // namespace lowbit
