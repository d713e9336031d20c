// lowbit formats: ggml's lattice i-quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S (and, at the end, IQ1_S and
// IQ1_M) as Formats (see ggml.h).
//
// Layouts (decoded in ggml_decode_other.cpp, which holds the grids):
//   iq2_xxs 256 w, 66 B: d fp16 | 8 sub-blocks of 32 w x 8 B: 4 grid indices (one byte per 8 weights) | u32 with
//                        4 x 7 sign bits and a 4-bit scale ls in bits 28..31.   weight = d (0.5 + ls) / 4 grid sign
//   iq2_xs  256 w, 74 B: d fp16 | 32 x u16 (9-bit grid index | 7 sign bits << 9) | scales[8] (4 bits per 16 w)
//   iq2_s   256 w, 82 B: d fp16 | idx_lo[32] | signs[32] (all 8 per 8 weights) | qh[8] (bits 8-9 of the 10-bit
//                        indices) | scales[8] (4 bits per 16 w)
//   iq3_xxs 256 w, 98 B: d fp16 | 64 grid indices (one byte per 4 weights) | 8 x u32 (4 x 7 sign bits | ls << 28)
//                        weight = d (0.5 + ls) / 2 grid sign
//   iq3_s  256 w, 110 B: d fp16 | idx_lo[64] | qh[8] (bit 8 of the indices) | signs[32] (all 8 per 8 weights) |
//                        scales[4] (4 bits per 32 w)                            weight = d (1 + 2 ls) grid sign
// A grid entry gives each of its 8 (iq2) or 4 (iq3) weights one of 3 (bytes 8, 25, 43) or 8 (4, 12, ..., 52, 62)
// magnitudes (iq3_s: 1, 3, ..., 15), "levels" l that the fit treats as 2 l + 1. Signs come per 8 weights: seven
// bits for weights 0..6, the eighth their parity (an even number of negated weights); iq3_s stores all eight.
//
// fit is llama.cpp's importance-weighted search (quantize_row_iq2_xxs_impl, quantize_row_iq2_xs_impl,
// quantize_row_iq2_s_impl, quantize_row_iq3_xxs_impl, quantize_row_iq3_s_impl), operation for operation, so fit + encode is byte-identical
// to llama-quantize --imatrix. Per 256-weight block, with error weights e_i = importance_i * sqrt(sigma2 + x_i^2)
// (sigma2 = mean(x^2) over the block for iq2_xxs / iq2_xs, twice that for iq2_s and iq3):
//  - per 8 weights the signs are taken from x; where the parity rule holds, an odd number of negatives flips the
//    sign of the weight with the smallest e x^2 (its magnitude is then coded as a negative number, which the search
//    sees);
//  - per scale group a scale search: trial inverse steps (2 nmax - 1 + t step) / m (iq2_xxs: t = -6..6, step 0.1,
//    m = 3 x make_qp_quants's step; iq2_xs, iq2_s: -9..9, 0.1, m = the largest magnitude; iq3_xxs: -15..15, 0.2, the
//    largest; iq3_s: -9..9, 0.2, the largest), levels rounded per weight, a grid group that is not a grid point
//    replaced by the best of its precomputed nearest grid points (error weighted by sqrt e), and the least-squares
//    step of the best trial kept; then iq2_xxs re-rounds every group at that step, iq2_xs / iq2_s / iq3_xxs those
//    were off the grid, iq3_s every group when any was off (or no trial won), and the step is refitted;
//  - d = (largest group step) / 31 (iq2_s stores d x 0.9875, iq3_xxs d x 1.0125, iq3_s d x 1.033: llama.cpp's
//    fudges) and each
//    group's 4-bit ls = nearest(0.5 (step / d - 1)).
// Without importance (or with none over a block) llama.cpp's plain paths: e_i = x_i^2 (iq3), sigma2 / 4 + x_i^2
// (iq2_s); iq2_xxs / iq2_xs, which llama-quantize only writes with an imatrix, use importance 1.
//
// BlockParams: scale = d (unrounded, before the fudge), sub_scales = the 8 or 16 ls values, codes = one byte per
// weight: its level | its sign << 7 (with the parity rule, the eighth weight's is the parity of the others). The weights of a grid
// group are chosen together, so round(w, p, i) is the value the fit chose for weight i (w is not re-rounded):
// GPTQ on these types feeds each block's error forward into the next blocks' fits.
#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "core/half.h"
#include "formats/ggml.h"
#include "formats/ggml_common.h"
#include "formats/ggml_search.h"
#include "lowbit/error.h"

namespace lowbit::formats {

namespace {

using ggml_detail::kGroupMaxEps;
using ggml_detail::nearest_int;

constexpr int kSuper = 256;

// The two grid shapes.
struct Shape {
  int weights;               // per grid entry: 8 or 4
  int bits;                  // per level in a packed code: 2 or 3
  int levels;                // 3 or 8 (the search's kMaxQ)
  const uint8_t* level_bytes;  // the decoded magnitude of each level
  int want;                  // distinct distances in an off-grid code's neighbour list
};
constexpr uint8_t kIq2Bytes[3] = {8, 25, 43};
constexpr uint8_t kIq3Bytes[8] = {4, 12, 20, 28, 36, 44, 52, 62};
constexpr uint8_t kIq3sBytes[8] = {1, 3, 5, 7, 9, 11, 13, 15};
constexpr Shape kIq2Shape = {8, 2, 3, kIq2Bytes, 2};
constexpr Shape kIq2sShape = {8, 2, 3, kIq2Bytes, 1};
constexpr Shape kIq3Shape = {4, 3, 8, kIq3Bytes, 2};
constexpr Shape kIq3sShape = {4, 3, 8, kIq3sBytes, 3};

// A grid with what the search needs: each point's magnitudes (2 l + 1), a map from the packed levels of a group
// (bits per level each) to the grid point, and for each packed code that is not on the grid the grid points at its
// `want` smallest squared distances (llama.cpp's neighbour lists, in the same order: by distance, then index).
struct Lattice {
  Shape shape;
  std::vector<std::array<int8_t, 8>> q;
  std::vector<int32_t> map;          // grid index, or -(offset + 1) into neighbours, or kUnreachable
  std::vector<uint16_t> neighbours;  // per off-grid code: count, then grid indices
};
constexpr int32_t kUnreachable = INT32_MIN;  // a code with a level the search never forms

template <class Entry>
Lattice build_lattice(const Shape& sh, std::span<const Entry> grid) {
  Lattice g;
  g.shape = sh;
  g.q.resize(grid.size());
  const int codes = 1 << (sh.bits * sh.weights);
  g.map.assign(static_cast<size_t>(codes), -1);
  for (size_t k = 0; k < grid.size(); ++k) {
    uint32_t packed = 0;
    for (int j = 0; j < sh.weights; ++j) {
      const auto byte = static_cast<uint8_t>(static_cast<uint64_t>(grid[k]) >> (8 * j));
      int l = 0;
      while (l < sh.levels && sh.level_bytes[l] != byte) ++l;
      if (l == sh.levels) fail("", "format", "i-quant grid entry " + std::to_string(k) + " has an unknown byte");
      g.q[k][j] = static_cast<int8_t>(2 * l + 1);
      packed |= static_cast<uint32_t>(l) << (sh.bits * j);
    }
    g.map[packed] = static_cast<int32_t>(k);
  }
  std::vector<std::pair<int, int>> dist(grid.size());
  for (int code = 0; code < codes; ++code) {
    if (g.map[code] >= 0) continue;
    int pos[8];
    bool reachable = true;
    for (int j = 0; j < sh.weights; ++j) {
      const int l = (code >> (sh.bits * j)) & ((1 << sh.bits) - 1);
      reachable = reachable && l < sh.levels;
      pos[j] = 2 * l + 1;
    }
    if (!reachable) {
      g.map[code] = kUnreachable;
      continue;
    }
    for (size_t k = 0; k < grid.size(); ++k) {
      int d2 = 0;
      for (int j = 0; j < sh.weights; ++j) d2 += (g.q[k][j] - pos[j]) * (g.q[k][j] - pos[j]);
      dist[k] = {d2, static_cast<int>(k)};
    }
    std::sort(dist.begin(), dist.end());
    g.map[code] = -static_cast<int32_t>(g.neighbours.size() + 1);
    const size_t start = g.neighbours.size();
    g.neighbours.push_back(0);
    int have = 1, d2 = dist[0].first;
    for (const auto& [d, k] : dist) {
      if (d > d2) {
        if (have == sh.want) break;
        d2 = d;
        ++have;
      }
      g.neighbours.push_back(static_cast<uint16_t>(k));
    }
    g.neighbours[start] = static_cast<uint16_t>(g.neighbours.size() - start - 1);
  }
  return g;
}

// The grid point among an off-grid code's neighbours nearest to xval at `scale` (error weighted by w); its levels
// go to L. llama.cpp's iq2_find_best_neighbour.
int best_neighbour(const Lattice& g, int32_t entry, const float* xval, const float* w, float scale, int8_t* L) {
  const uint16_t* nb = g.neighbours.data() + (-entry - 1);
  const int n = g.shape.weights;
  float best = FLT_MAX;
  int index = nb[1];
  for (int j = 1; j <= nb[0]; ++j) {
    const auto& pq = g.q[nb[j]];
    float d2 = 0;
    for (int i = 0; i < n; ++i) {
      const float q = pq[i];
      const float diff = scale * q - xval[i];
      d2 += w[i] * diff * diff;
    }
    if (d2 < best) best = d2, index = nb[j];
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>((g.q[index][i] - 1) / 2);
  return index;
}

// The map entry of a group's levels (each 0..levels-1): its grid index, or < 0 when it is not a grid point.
int32_t grid_index(const Lattice& g, const int8_t* L) {
  uint32_t u = 0;
  for (int i = 0; i < g.shape.weights; ++i) u |= static_cast<uint32_t>(L[i]) << (g.shape.bits * i);
  return g.map[u];
}

// llama.cpp's make_qp_quants, including what its uint8_t codes do with negative levels (the sign-flipped weight of a
// group can round below 0 and wraps there): only its returned step is used here. ggml_kquants.cpp's
// search_unsigned_scales is the same search for non-negative inputs; it clamps at 0, so it cannot stand in here.
float make_qp_step(int n, int nmax, const float* x, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) return 0.0f;
  uint8_t L[32];
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) best_mse = mse, iscale = iscale_is;
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    sumlx += qw[i] * x[i] * l;
    suml2 += qw[i] * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int nl = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (nl != L[i]) {
          slx += w * x[i] * nl;
          sl2 += w * nl * nl;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(nl);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// The five types.
enum class Start { QpStep, Max };  // where the scale trials centre: make_qp_quants's step (x3), or the largest value
// After the trials: every group re-rounded at the chosen step, only the off-grid ones, or all when any is off.
enum class Reround { All, OffGrid, AllIfAnyOff };
// Error weights without importance: sqrt(sigma2 + x^2) (importance 1), x^2, or sigma2 / 4 + x^2.
enum class Plain { Ones, Squares, QuarterSigma };
struct Spec {
  DType dtype;
  const char* name;
  size_t bytes;
  int group;         // weights per 4-bit scale
  const Shape* shape;
  float sigma2_mult;  // sigma2 = mult * mean(x^2)
  float eps;          // a group whose largest magnitude is below this is all zero
  Start start;
  int trials;         // t = -trials..trials
  float step;         // trial spacing
  Reround reround;
  bool on_grid_init;  // what a group counts as before any trial wins (iq3_s: off the grid)
  float fudge;        // the stored d is d x fudge
  float db_mult;      // decode: db = d (0.5 + ls) db_mult, or (0: iq3_s) db = d (1 + 2 ls)
  Plain plain;         // the error weights without importance
  bool parity_signs;   // 7 stored signs per 8 weights and an even number negated (else all 8 stored)
};
constexpr Spec kXxs = {DType::IQ2_XXS, "iq2_xxs", 66, 32, &kIq2Shape, 1.0f, 1e-15f, Start::QpStep, 6, 0.1f,
                       Reround::All, true, 1.0f, 0.25f, Plain::Ones, true};
constexpr Spec kXs = {DType::IQ2_XS, "iq2_xs", 74, 16, &kIq2Shape, 1.0f, 1e-15f, Start::Max, 9, 0.1f,
                      Reround::OffGrid, true, 1.0f, 0.25f, Plain::Ones, true};
constexpr Spec kIq3Xxs = {DType::IQ3_XXS, "iq3_xxs", 98, 32, &kIq3Shape, 2.0f, 1e-8f, Start::Max, 15, 0.2f,
                          Reround::OffGrid, true, 1.0125f, 0.5f, Plain::Squares, true};
// eps 0: only an exactly zero group is skipped.
constexpr Spec kIq3S = {DType::IQ3_S, "iq3_s", 110, 32, &kIq3sShape, 2.0f, 0.0f, Start::Max, 9, 0.2f,
                        Reround::AllIfAnyOff, false, 1.033f, 0.0f, Plain::Squares, false};
constexpr Spec kIq2S = {DType::IQ2_S, "iq2_s", 82, 16, &kIq2sShape, 2.0f, 1e-8f, Start::Max, 9, 0.1f,
                        Reround::OffGrid, true, 0.9875f, 0.25f, Plain::QuarterSigma, false};

// What every i-quant format shares: 256-weight blocks decoded by ggml_decode_other.cpp, d stored as fp16(d x fudge),
// BlockParams from this family's fit (one code per weight, one 3- or 4-bit scale per group), and the argument checks.
class IqFormatBase : public GgmlFormat {
 public:
  IqFormatBase(DType t, const char* name, size_t bytes, int group, float fudge, int max_scale)
      : dtype_(t), name_(name), bytes_(bytes), group_(group), fudge_(fudge), max_scale_(max_scale) {}
  std::string name() const override { return name_; }
  int block() const override { return kSuper; }
  size_t block_bytes() const override { return bytes_; }
  DType dtype() const override { return dtype_; }
  void decode(const std::byte* in, std::span<float> out) const override {
    if (out.size() != static_cast<size_t>(kSuper)) fail("", "format", name() + ": decode needs 256 outputs");
    ggml_decode_other_row(dtype_, in, kSuper, out.data());
  }
  float dot(const std::byte* in, const float* x) const override {
    return ggml_detail::dot_by_decode<kSuper>(*this, in, x);
  }

 protected:
  void check_fit_args(std::span<const float> w, std::span<const float> importance) const {
    if (w.size() != static_cast<size_t>(kSuper))
      fail("", "format", name() + ": fit got " + std::to_string(w.size()) + " weights for a block of 256");
    if (!importance.empty() && importance.size() != w.size())
      fail("", "format", name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                             std::to_string(w.size()) + " weights");
    for (float v : w)
      if (!std::isfinite(v)) fail("", "format", name() + ": fit got a non-finite weight");
  }
  void check_encode_args(std::span<const float> w, const BlockParams& p) const {
    if (w.size() != static_cast<size_t>(kSuper))
      fail("", "format", name() + ": encode got " + std::to_string(w.size()) + " weights for a block of 256");
    check_params(p);
  }
  // round_vector's arguments: the 8 weights (and importances, if any) of the vector at `first`, and p's shape.
  void check_vector_args(std::span<const float> w, std::span<const float> importance, int first,
                         const BlockParams& p) const {
    check_params(p);
    if (w.size() != 8 || first < 0 || first % 8 != 0 || first >= kSuper || (!importance.empty() && importance.size() != 8))
      fail("", "format", name() + ": round_vector takes the 8 weights of one vector (first a multiple of 8 below 256)");
  }
  void check_params(const BlockParams& p) const {
    if (p.codes.size() != static_cast<size_t>(kSuper) ||
        p.sub_scales.size() != static_cast<size_t>(kSuper / group_))
      fail("", "format", name() + ": BlockParams need 256 codes and " + std::to_string(kSuper / group_) +
                             " sub_scales (from this format's fit)");
  }
  // Every scale group's fit (fit(x, e, codes) -> its step) into p's codes and `scales`; returns the largest step.
  template <class GroupFit>
  float fit_groups(std::span<const float> w, const float* e, BlockParams& p, std::array<float, 16>& scales,
                   const GroupFit& fit) const {
    p.codes.assign(kSuper, 0);
    p.sub_scales.assign(static_cast<size_t>(kSuper / group_), 0.0f);
    float max_scale = 0;
    for (int ib = 0; ib < kSuper / group_; ++ib) {
      scales[ib] = fit(w.data() + ib * group_, e + ib * group_, p.codes.data() + ib * group_);
      max_scale = std::max(max_scale, scales[ib]);
    }
    return max_scale;
  }
  void check_index(int i) const {
    if (i < 0 || i >= kSuper) fail("", "format", name() + ": weight index " + std::to_string(i) + " outside the block");
  }
  uint16_t stored_d(const BlockParams& p) const { return f32_to_f16(p.scale * fudge_); }
  int sub_scale(const BlockParams& p, int g) const {
    const float v = p.sub_scales[g];
    return std::clamp(std::isfinite(v) ? static_cast<int>(std::lround(v)) : 0, 0, max_scale_);
  }

 private:
  DType dtype_;
  const char* name_;
  size_t bytes_;
  int group_;
  float fudge_;
  int max_scale_;
};

class LatticeFormat final : public IqFormatBase {
 public:
  explicit LatticeFormat(const Spec& s)
      : IqFormatBase(s.dtype, s.name, s.bytes, s.group, s.fudge, 15), s_(s), g_(lattice(s.dtype)) {}

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override {
    check_fit_args(w, importance);
    std::array<float, kSuper> imp;
    bool any = false;
    for (size_t i = 0; i < importance.size(); ++i) {
      imp[i] = std::max(0.0f, importance[i]);  // negative or NaN importance counts as 0
      any = any || imp[i] > 0.0f;
    }
    float sumx2 = 0;
    for (int i = 0; i < kSuper; ++i) sumx2 += w[i] * w[i];
    const float sigma2 = s_.sigma2_mult * sumx2 / kSuper;
    std::array<float, kSuper> e;  // the error weights
    for (int i = 0; i < kSuper; ++i)
      e[i] = any                             ? imp[i] * std::sqrt(sigma2 + w[i] * w[i])
             : s_.plain == Plain::Squares     ? w[i] * w[i]
             : s_.plain == Plain::QuarterSigma ? 0.25f * sigma2 + w[i] * w[i]
                                               : std::sqrt(sigma2 + w[i] * w[i]);

    const int groups = kSuper / s_.group;
    BlockParams p;
    std::array<float, 16> scales{};
    const float max_scale = fit_groups(w, e.data(), p, scales, [&](const float* x, const float* ew, uint8_t* c) {
      return fit_group(x, ew, c);
    });
    if (!(max_scale > 0)) {  // llama.cpp writes an all-zero block
      std::fill(p.codes.begin(), p.codes.end(), uint8_t{0});
      return p;
    }
    const float d = max_scale / 31;
    const float id = 1 / d;
    p.scale = d;
    for (int ib = 0; ib < groups; ++ib)
      p.sub_scales[ib] = static_cast<float>(std::clamp(nearest_int(0.5f * (id * scales[ib] - 1)), 0, 15));
    return p;
  }

  float round(float /*w*/, const BlockParams& p, int index_in_block) const override {
    check_params(p);
    check_index(index_in_block);
    const uint8_t c = p.codes[index_in_block];
    const int level = std::min(c & 0x7f, s_.shape->levels - 1);
    const int ls = sub_scale(p, index_in_block / s_.group);
    const float d = f16_to_f32(stored_d(p));
    const float db = s_.db_mult > 0 ? d * (0.5f + static_cast<float>(ls)) * s_.db_mult : d * static_cast<float>(1 + 2 * ls);
    return db * static_cast<float>(s_.shape->level_bytes[level]) * (c & 0x80 ? -1.0f : 1.0f);
  }

  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override {
    check_encode_args(w, p);
    std::memset(out, 0, s_.bytes);
    ggml_detail::store_u16(out, stored_d(p));
    std::byte* qs = out + 2;
    const int gw = s_.shape->weights;
    auto store_u32 = [](std::byte* at, uint32_t v) {
      for (int j = 0; j < 4; ++j) at[j] = static_cast<std::byte>(v >> (8 * j));
    };
    switch (s_.dtype) {
      case DType::IQ2_XXS:
      case DType::IQ3_XXS: {
        // Grid index bytes, then per 32 weights a u32 of 4 x 7 signs and the scale (iq2_xxs: interleaved per 32
        // weights, 4 bytes + u32; iq3_xxs: all 64 index bytes first, then the 8 u32).
        const bool iq3 = s_.dtype == DType::IQ3_XXS;
        for (int ib = 0; ib < 8; ++ib) {
          uint32_t meta = static_cast<uint32_t>(sub_scale(p, ib)) << 28;
          for (int l = 0; l < 4; ++l) meta |= signs_of(p, 32 * ib + 8 * l) << (7 * l);
          for (int k = 0; k < 32 / gw; ++k)
            qs[8 * ib + k] = static_cast<std::byte>(index_of(p, 32 * ib + gw * k));
          store_u32(iq3 ? qs + 64 + 4 * ib : qs + 8 * ib + 4, meta);
        }
        break;
      }
      case DType::IQ2_XS:
        for (int k = 0; k < kSuper / 8; ++k)
          ggml_detail::store_u16(qs + 2 * k, static_cast<uint16_t>(index_of(p, 8 * k) | (signs_of(p, 8 * k) << 9)));
        for (int ib = 0; ib < 8; ++ib)
          out[66 + ib] = static_cast<std::byte>(sub_scale(p, 2 * ib) | (sub_scale(p, 2 * ib + 1) << 4));
        break;
      case DType::IQ2_S: {
        // idx_lo[32] | signs[32] (all 8 per 8 weights) | qh[8] (bits 2j..2j+1: bits 8-9 of group 4b + j) | scales[8]
        for (int k = 0; k < 32; ++k) {
          const uint32_t index = index_of(p, 8 * k);
          qs[k] = static_cast<std::byte>(index & 255);
          qs[64 + k / 4] |= static_cast<std::byte>((index >> 8) << (2 * (k % 4)));
          qs[32 + k] = static_cast<std::byte>(signs_of(p, 8 * k) | ((p.codes[8 * k + 7] >> 7) << 7));
        }
        for (int ib = 0; ib < 8; ++ib)
          qs[72 + ib] = static_cast<std::byte>(sub_scale(p, 2 * ib) | (sub_scale(p, 2 * ib + 1) << 4));
        break;
      }
      case DType::IQ3_S: {
        // idx_lo[64] | qh[8] (bit k of qh[b]: bit 8 of group k's index in 32-block b) | signs[32] | scales[4]
        std::byte* qh = qs + 64;
        std::byte* signs = qs + 72;
        for (int k = 0; k < 64; ++k) {
          const uint32_t index = index_of(p, 4 * k);
          qs[k] = static_cast<std::byte>(index & 255);
          qh[k / 8] |= static_cast<std::byte>((index >> 8) << (k % 8));
        }
        for (int k = 0; k < 32; ++k) signs[k] = static_cast<std::byte>(signs_of(p, 8 * k) | ((p.codes[8 * k + 7] >> 7) << 7));
        for (int ib = 0; ib < 4; ++ib)
          qs[104 + ib] = static_cast<std::byte>(sub_scale(p, 2 * ib) | (sub_scale(p, 2 * ib + 1) << 4));
        break;
      }
      default:
        fail("", "format", name() + ": no layout");
    }
  }


  // The 8 weights that share a sign byte are one vector: GPTQ re-chooses their grid points and signs at the block's
  // fitted scales, minimising sum e (decoded - w)^2 (e = importance, 1 without) over every grid point.
  int vector_size() const override { return 8; }
  void round_vector(std::span<const float> w, std::span<const float> importance, int first,
                    BlockParams& p) const override {
    check_vector_args(w, importance, first, p);
    const int ls = sub_scale(p, first / s_.group);
    const float d = f16_to_f32(stored_d(p));
    const float db = s_.db_mult > 0 ? d * (0.5f + static_cast<float>(ls)) * s_.db_mult : d * static_cast<float>(1 + 2 * ls);
    if (!(db > 0)) return;  // a zero group decodes to its level-0 magnitudes whatever the codes: keep them
    const int gw = s_.shape->weights;
    float e[8];
    unsigned signs = 0;
    int negatives = 0;
    for (int i = 0; i < 8; ++i) {
      e[i] = importance.empty() ? 1.0f : std::max(0.0f, importance[i]);
      negatives += w[i] < 0;
    }
    // Every grid point of each grid group (exhaustive: 256..1024 points of 4 or 8 weights), signs from the weights;
    // with the parity rule an odd count flips the weight where that costs least, e 4 db b |w| (b its magnitude).
    const uint8_t* bytes = s_.shape->level_bytes;
    int8_t L[8];
    float flip_cost[8];
    for (int k = 0; k < 8 / gw; ++k) {
      float best_err = FLT_MAX;
      int pick = 0;
      for (size_t j = 0; j < g_.q.size(); ++j) {
        float err = 0;
        for (int i = 0; i < gw; ++i) {
          const float diff = db * bytes[(g_.q[j][i] - 1) / 2] - std::fabs(w[k * gw + i]);
          err += e[k * gw + i] * diff * diff;
        }
        if (gw == 8 && s_.parity_signs && negatives % 2) {
          float cheapest = FLT_MAX;
          for (int i = 0; i < 8; ++i)
            cheapest = std::min(cheapest, e[i] * 4 * db * bytes[(g_.q[j][i] - 1) / 2] * std::fabs(w[i]));
          err += cheapest;
        }
        if (err < best_err) best_err = err, pick = static_cast<int>(j);
      }
      for (int i = 0; i < gw; ++i) {
        L[k * gw + i] = static_cast<int8_t>((g_.q[pick][i] - 1) / 2);
        flip_cost[k * gw + i] = e[k * gw + i] * 4 * db * bytes[L[k * gw + i]] * std::fabs(w[k * gw + i]);
      }
    }
    signs = 0;
    for (int i = 0; i < 8; ++i)
      if (w[i] < 0) signs |= 1u << i;
    if (s_.parity_signs && negatives % 2) {
      int imin = 0;
      for (int i = 1; i < 8; ++i)
        if (flip_cost[i] < flip_cost[imin]) imin = i;
      signs ^= 1u << imin;
    }
    for (int i = 0; i < 8; ++i) p.codes[first + i] = static_cast<uint8_t>(L[i] | (((signs >> i) & 1u) << 7));
  }

 private:
  // One scale group of n = s_.group weights x with error weights e: its codes (level | sign << 7) into c, its step
  // returned (0: an all-zero group, codes 0).
  float fit_group(const float* xb, const float* e, uint8_t* c) const {
    const int n = s_.group, gw = s_.shape->weights, nlev = s_.shape->levels;
    float waux[32] = {}, xval[32] = {};
    int8_t L[32] = {}, Laux[32] = {};
    uint8_t block_signs[4] = {};
    for (int i = 0; i < n; ++i) waux[i] = std::sqrt(e[i]);
    for (int k = 0; k < n / 8; ++k) {  // signs per 8 weights, an even number negated
      int nflip = 0;
      uint8_t s = 0;
      for (int i = 0; i < 8; ++i) {
        if (xb[8 * k + i] >= 0) {
          xval[8 * k + i] = xb[8 * k + i];
        } else {
          xval[8 * k + i] = -xb[8 * k + i];
          ++nflip;
          s |= static_cast<uint8_t>(1 << i);
        }
      }
      if (s_.parity_signs && nflip % 2) {
        int imin = 0;
        float min = e[8 * k] * xb[8 * k] * xb[8 * k];
        for (int i = 1; i < 8; ++i) {
          const float ax = e[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
          if (ax < min) min = ax, imin = i;
        }
        xval[8 * k + imin] = -xval[8 * k + imin];
        s ^= static_cast<uint8_t>(1 << imin);
      }
      block_signs[k] = s_.parity_signs ? s & 127 : s;
    }
    float max = xval[0];
    for (int i = 1; i < n; ++i) max = std::max(max, xval[i]);
    if (s_.eps > 0 ? max < s_.eps : max == 0) return 0.0f;  // codes stay 0: llama.cpp writes nothing for this group

    float scale, m;
    if (s_.start == Start::QpStep) {
      scale = make_qp_step(n, nlev + 1, xval, e);
      m = scale * nlev;
      if (m <= 0) return 0.0f;
    } else {
      scale = max / (2 * nlev - 1);
      m = max;
    }
    // Levels nearest to x at inverse step id for grid group k, snapped to the grid: to L + gw k; false if the
    // rounded levels were off the grid.
    auto round_group = [&](float id, float step, int k, int8_t* out) {
      for (int i = 0; i < gw; ++i)
        out[gw * k + i] =
            static_cast<int8_t>(std::max(0, std::min(nlev - 1, nearest_int(0.5f * (id * xval[gw * k + i] - 1)))));
      const int32_t entry = grid_index(g_, out + gw * k);
      if (entry >= 0) return true;
      best_neighbour(g_, entry, xval + gw * k, waux + gw * k, step, out + gw * k);
      return false;
    };
    auto sums = [&](const int8_t* Lq, float& sumqx, float& sumq2) {
      sumqx = 0, sumq2 = 0;
      for (int i = 0; i < n; ++i) {
        const float q = 2 * Lq[i] + 1;
        sumqx += e[i] * xval[i] * q;
        sumq2 += e[i] * q * q;
      }
    };
    const int ng = n / gw;
    bool on_grid[8], on_grid_aux[8];
    std::fill(on_grid, on_grid + 8, s_.on_grid_init);
    float best = 0;
    for (int is = -s_.trials; is <= s_.trials; ++is) {
      const float id = (2 * nlev - 1 + is * s_.step) / m;
      const float this_scale = 1 / id;
      for (int k = 0; k < ng; ++k) on_grid_aux[k] = round_group(id, this_scale, k, Laux);
      float sumqx, sumq2;
      sums(Laux, sumqx, sumq2);
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        scale = sumqx / sumq2;
        best = scale * sumqx;
        std::memcpy(L, Laux, static_cast<size_t>(n));
        std::copy(on_grid_aux, on_grid_aux + ng, on_grid);
      }
    }
    bool refit = s_.reround == Reround::All;
    for (int k = 0; k < ng; ++k) refit = refit || !on_grid[k];
    if (refit && scale > 0) {
      const float id = 1 / scale;
      for (int k = 0; k < ng; ++k)
        if (s_.reround != Reround::OffGrid || !on_grid[k]) round_group(id, scale, k, L);
      float sumqx, sumq2;
      sums(L, sumqx, sumq2);
      if (sumq2 > 0) scale = sumqx / sumq2;
    }
    if (scale < 0) {  // llama.cpp: "should never happen"; the step stays positive and the signs flip
      scale = -scale;
      for (int k = 0; k < n / 8; ++k) block_signs[k] = static_cast<uint8_t>(~block_signs[k] & (s_.parity_signs ? 127 : 255));
    }
    for (int k = 0; k < ng; ++k)
      if (grid_index(g_, L + gw * k) < 0) fail("", "format", name() + ": the search left a group off the grid (a bug)");
    for (int k = 0; k < n / 8; ++k) {
      const unsigned seven = block_signs[k];
      const unsigned eighth = s_.parity_signs ? static_cast<unsigned>(std::popcount(seven) & 1) : (seven >> 7) & 1u;
      for (int i = 0; i < 8; ++i) {
        const unsigned sign = i < 7 ? (seven >> i) & 1u : eighth;
        c[8 * k + i] = static_cast<uint8_t>(L[8 * k + i] | (sign << 7));
      }
    }
    return scale;
  }

  // The grid index of the group of weights starting at i0 (its levels must be a grid point).
  uint32_t index_of(const BlockParams& p, int i0) const {
    int8_t L[8];
    for (int i = 0; i < s_.shape->weights; ++i) {
      const int l = p.codes[i0 + i] & 0x7f;
      if (l >= s_.shape->levels)
        fail("", "format", name() + ": code " + std::to_string(l) + " at weight " + std::to_string(i0 + i) +
                               " is not a level (expected 0.." + std::to_string(s_.shape->levels - 1) + ")");
      L[i] = static_cast<int8_t>(l);
    }
    const int32_t index = grid_index(g_, L);
    if (index < 0) fail("", "format", name() + ": the codes at weight " + std::to_string(i0) + " are not a grid point");
    return static_cast<uint32_t>(index);
  }
  // The 7 stored sign bits of the 8 weights starting at i0.
  static uint32_t signs_of(const BlockParams& p, int i0) {
    uint32_t s = 0;
    for (int i = 0; i < 7; ++i)
      if (p.codes[i0 + i] & 0x80) s |= 1u << i;
    return s;
  }

  static const Lattice& lattice(DType t) {
    // Built on first use, once per type (thread-safe statics).
    switch (t) {
      case DType::IQ2_XXS: { static const Lattice g = build_lattice(kIq2Shape, ggml_iq2_grid(t)); return g; }
      case DType::IQ2_XS: { static const Lattice g = build_lattice(kIq2Shape, ggml_iq2_grid(t)); return g; }
      case DType::IQ2_S: { static const Lattice g = build_lattice(kIq2sShape, ggml_iq2_grid(t)); return g; }
      case DType::IQ3_XXS: { static const Lattice g = build_lattice(kIq3Shape, ggml_iq3_grid(t)); return g; }
      default: { static const Lattice g = build_lattice(kIq3sShape, ggml_iq3_grid(DType::IQ3_S)); return g; }
    }
  }

  Spec s_;
  const Lattice& g_;
};

// ---- IQ1_S / IQ1_M: three values per weight (-1, 0, 1) shifted by +-1/8 ----------------------------------------
//   iq1_s  256 w, 50 B: d fp16 | idx_lo[32] | 8 x u16 qh (bits 3k..3k+2: bits 8-10 of group k's 11-bit index,
//                       bits 12..14: ls, bit 15: delta -1/8 instead of +1/8)      weight = d (2 ls + 1) (g + delta)
//   iq1_m  256 w, 56 B: idx_lo[32] | qh[16] (per 16 w: bits 8-10 of its two indices in the nibbles, bits 3 / 7
//                       their deltas) | 4 x u16: 3-bit ls per 16 w and, in the top nibbles, the fp16 d
// fit is quantize_row_iq1_s_impl / quantize_row_iq1_m_impl: per scale group (32 / 16 weights) an exhaustive
// search over the two boundaries splitting the sorted weights into -1 / 0 / +1, for both deltas (iq1_m: for the
// four delta pairs of its two groups of 8), scored by the weighted least-squares fit; groups of 8 off the grid go
// to the nearest of their neighbour grid points (llama.cpp's iq1_find_best_neighbour2), then a refit.
// d = (largest group step) / 15, stored x 1.125 (iq1_s); iq1_m refits d over the whole block with the 3-bit
// scales and stores it x 1.1125. Error weights: importance * sqrt(sigma2 + x^2) (sigma2 = 2 mean(x^2)), x^2
// without importance (llama.cpp's iq1_m plain path; llama-quantize refuses iq1_s without an imatrix).
// BlockParams: scale = d (before the fudge), sub_scales = the 3-bit ls per group, codes = per weight its level
// (0, 1, 2 for -1, 0, 1) | 0x40 when its group's delta is -1/8.
constexpr uint8_t kIq1Bytes[3] = {0xff, 0x00, 0x01};  // the grid's int8 values -1, 0, 1
constexpr Shape kIq1Shape = {8, 2, 3, kIq1Bytes, 3};
constexpr float kIq1Delta = 0.125f;

struct Iq1Spec {
  DType dtype;
  const char* name;
  size_t bytes;
  int group;       // weights per scale: 32 (iq1_s) or 16 (iq1_m)
  float eps;
  float fudge;
};
constexpr Iq1Spec kIq1S = {DType::IQ1_S, "iq1_s", 50, 32, 1e-12f, 1.125f};
constexpr Iq1Spec kIq1M = {DType::IQ1_M, "iq1_m", 56, 16, 1e-7f, 1.1125f};

// The grid point among an off-grid code's neighbours best for x (signed) at `scale` with the values xg of the three
// levels, error weighted by w (not its square root, unlike the other types); its levels go to L.
int best_neighbour_iq1(const Lattice& g, int32_t entry, const float* x, const float* w, float scale, const float* xg,
                       int8_t* L) {
  const uint16_t* nb = g.neighbours.data() + (-entry - 1);
  float best = FLT_MAX;
  int index = -1;
  for (int j = 1; j <= nb[0]; ++j) {
    const auto& pq = g.q[nb[j]];
    float d2 = 0;
    for (int i = 0; i < 8; ++i) {
      const float q = xg[(pq[i] - 1) / 2];
      const float wi = w[i];
      const float diff = scale * q - x[i];
      d2 += wi * diff * diff;
    }
    if (d2 < best) best = d2, index = nb[j];
  }
  if (index < 0) fail("", "format", "iq1: no neighbour grid point scored (non-finite weights?)");
  for (int i = 0; i < 8; ++i) L[i] = static_cast<int8_t>((g.q[index][i] - 1) / 2);
  return index;
}

class Iq1Format final : public IqFormatBase {
 public:
  explicit Iq1Format(const Iq1Spec& s) : IqFormatBase(s.dtype, s.name, s.bytes, s.group, s.fudge, 7), s_(s), g_(lattice()) {}

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override {
    check_fit_args(w, importance);
    bool any = false;
    for (float v : importance) any = any || v > 0.0f;
    float sumx2 = 0;
    for (int i = 0; i < kSuper; ++i) sumx2 += w[i] * w[i];
    const float sigma2 = 2 * sumx2 / kSuper;
    std::array<float, kSuper> e;
    for (int i = 0; i < kSuper; ++i)
      e[i] = any ? std::max(0.0f, importance[i]) * std::sqrt(sigma2 + w[i] * w[i]) : w[i] * w[i];

    const int groups = kSuper / s_.group;
    BlockParams p;
    std::array<float, 16> scales{};
    const float max_scale = fit_groups(w, e.data(), p, scales, [&](const float* x, const float* ew, uint8_t* c) {
      return fit_group(x, ew, c);
    });
    if (!(max_scale > 0)) {
      std::fill(p.codes.begin(), p.codes.end(), uint8_t{0});
      return p;
    }
    float d = max_scale / 15;
    const float id = 1 / d;
    for (int ib = 0; ib < groups; ++ib)
      p.sub_scales[ib] = static_cast<float>(std::clamp(nearest_int(0.5f * (id * scales[ib] - 1)), 0, 7));
    if (s_.dtype == DType::IQ1_M) {  // d refitted over the block with the stored grid points and scales
      float sumqx = 0, sumq2 = 0;
      for (int ib = 0; ib < groups; ++ib) {
        const int l = sub_scale(p, ib);
        for (int k = 0; k < 2; ++k) {
          const int i0 = 16 * ib + 8 * k;
          const float* xx = p.codes[i0] & 0x40 ? kXm : kXp;
          for (int j = 0; j < 8; ++j) {
            const float wj = e[i0 + j];
            const float q = xx[p.codes[i0 + j] & 3] * (2 * l + 1);
            sumqx += wj * q * w[i0 + j];
            sumq2 += wj * q * q;
          }
        }
      }
      if (sumq2 > 0) d = sumqx / sumq2;
    }
    p.scale = d;
    return p;
  }

  float round(float /*w*/, const BlockParams& p, int index_in_block) const override {
    check_params(p);
    check_index(index_in_block);
    const uint8_t c = p.codes[index_in_block];
    const float dl = f16_to_f32(stored_d(p)) * static_cast<float>(2 * sub_scale(p, index_in_block / s_.group) + 1);
    const float delta = c & 0x40 ? -kIq1Delta : kIq1Delta;
    return dl * (static_cast<float>(std::min(c & 3, 2) - 1) + delta);
  }

  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override {
    check_encode_args(w, p);
    std::memset(out, 0, s_.bytes);
    const uint16_t d16 = stored_d(p);
    if (s_.dtype == DType::IQ1_S) {
      ggml_detail::store_u16(out, d16);
      for (int ib = 0; ib < 8; ++ib) {
        uint32_t qh = static_cast<uint32_t>(sub_scale(p, ib)) << 12;
        if (p.codes[32 * ib] & 0x40) qh |= 0x8000;
        for (int k = 0; k < 4; ++k) {
          const uint32_t index = index_of(p, 32 * ib + 8 * k);
          out[2 + 4 * ib + k] = static_cast<std::byte>(index & 255);
          qh |= (index >> 8) << (3 * k);
        }
        ggml_detail::store_u16(out + 34 + 2 * ib, static_cast<uint16_t>(qh));
      }
    } else {
      uint16_t sc[4] = {};
      for (int ib = 0; ib < 16; ++ib) {
        uint32_t qh = 0;
        for (int k = 0; k < 2; ++k) {
          const uint32_t index = index_of(p, 16 * ib + 8 * k);
          out[2 * ib + k] = static_cast<std::byte>(index & 255);
          qh |= (index >> 8) << (4 * k);
          if (p.codes[16 * ib + 8 * k] & 0x40) qh |= 0x08u << (4 * k);
        }
        out[32 + ib] = static_cast<std::byte>(qh);
        sc[ib / 4] = static_cast<uint16_t>(sc[ib / 4] | (sub_scale(p, ib) << (3 * (ib % 4))));
      }
      sc[0] = static_cast<uint16_t>(sc[0] | ((d16 & 0x000f) << 12));
      sc[1] = static_cast<uint16_t>(sc[1] | ((d16 & 0x00f0) << 8));
      sc[2] = static_cast<uint16_t>(sc[2] | ((d16 & 0x0f00) << 4));
      sc[3] = static_cast<uint16_t>(sc[3] | (d16 & 0xf000));
      for (int k = 0; k < 4; ++k) ggml_detail::store_u16(out + 48 + 2 * k, sc[k]);
    }
  }

  // GPTQ's vector step: the 8 weights of one grid point re-chosen at the block's fitted scales, minimising
  // sum e (decoded - w)^2 over all 2048 grid points (each weight's three costs computed once, then 8 adds per
  // point). An IQ1_M vector owns its delta sign and picks it too; IQ1_S's delta belongs to its 32-weight group and
  // stays as fitted (the group's later vectors are re-chosen under it).
  int vector_size() const override { return 8; }
  void round_vector(std::span<const float> w, std::span<const float> importance, int first,
                    BlockParams& p) const override {
    check_vector_args(w, importance, first, p);
    const float dl = f16_to_f32(stored_d(p)) * static_cast<float>(2 * sub_scale(p, first / s_.group) + 1);
    if (!(dl > 0)) return;  // a zero group decodes to zero whatever the codes: keep them
    const bool own_delta = s_.dtype == DType::IQ1_M;
    const bool group_minus = (p.codes[first / s_.group * s_.group] & 0x40) != 0;
    float best = FLT_MAX;
    int pick = 0;
    bool pick_minus = group_minus;
    for (int minus = 0; minus < 2; ++minus) {
      if (!own_delta && (minus != 0) != group_minus) continue;
      const float* xx = minus ? kXm : kXp;
      float cost[8][3];
      for (int i = 0; i < 8; ++i) {
        const float e = importance.empty() ? 1.0f : std::max(0.0f, importance[i]);
        for (int l = 0; l < 3; ++l) {
          const float diff = dl * xx[l] - w[i];
          cost[i][l] = e * diff * diff;
        }
      }
      for (size_t j = 0; j < g_.q.size(); ++j) {
        float err = 0;
        for (int i = 0; i < 8; ++i) err += cost[i][(g_.q[j][i] - 1) / 2];
        if (err < best) best = err, pick = static_cast<int>(j), pick_minus = minus != 0;
      }
    }
    for (int i = 0; i < 8; ++i)
      p.codes[first + i] = static_cast<uint8_t>((g_.q[pick][i] - 1) / 2 | (pick_minus ? 0x40 : 0));
  }

 private:
  static constexpr float kXp[3] = {-1 + kIq1Delta, kIq1Delta, 1 + kIq1Delta};
  static constexpr float kXm[3] = {-1 - kIq1Delta, -kIq1Delta, 1 - kIq1Delta};

  // One scale group: codes into c, its step returned (0: a zero group, whose codes stay index 0 with delta +).
  float fit_group(const float* xb, const float* e, uint8_t* c) const {
    const int n = s_.group;
    const bool m1 = s_.dtype == DType::IQ1_M;
    float max = std::fabs(xb[0]);
    for (int i = 1; i < n; ++i) max = std::max(max, std::fabs(xb[i]));
    if (max < s_.eps) return 0.0f;
    // Weights in ascending order (a stable sort, as glibc's qsort of these pairs is).
    int idx[32];
    for (int j = 0; j < n; ++j) idx[j] = j;
    std::stable_sort(idx, idx + n, [&](int a, int b) { return xb[a] < xb[b]; });
    float best_score = -FLT_MAX, scale = max;
    int besti1 = -1, besti2 = -1, best_k = -1;
    if (!m1) {
      float sumx[33], sumw[33];
      sumx[0] = sumw[0] = 0;
      for (int j = 0; j < n; ++j) {
        const int i = idx[j];
        sumx[j + 1] = sumx[j] + e[i] * xb[i];
        sumw[j + 1] = sumw[j] + e[i];
      }
      for (int i1 = 0; i1 <= n; ++i1)
        for (int i2 = i1; i2 <= n; ++i2)
          for (int k = 0; k < 2; ++k) {  // k 0: delta +1/8 (llama.cpp's shift 1), 1: -1/8
            const float* x3 = k == 0 ? kXp : kXm;
            const float sumqx = (sumx[i1] - sumx[0]) * x3[0] + (sumx[i2] - sumx[i1]) * x3[1] + (sumx[n] - sumx[i2]) * x3[2];
            const float sumq2 = (sumw[i1] - sumw[0]) * x3[0] * x3[0] + (sumw[i2] - sumw[i1]) * x3[1] * x3[1] +
                                (sumw[n] - sumw[i2]) * x3[2] * x3[2];
            if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
              scale = sumqx / sumq2;
              best_score = scale * sumqx;
              besti1 = i1, besti2 = i2, best_k = k;
            }
          }
    } else {
      // Four delta pairs for the two groups of 8: k = 0 (+, +), 1 (+, -), 2 (-, +), 3 (-, -).
      for (int i1 = 0; i1 <= n; ++i1)
        for (int i2 = i1; i2 <= n; ++i2) {
          float sumqx[4] = {}, sumq2[4] = {};
          for (int j = 0; j < n; ++j) {
            const int i = idx[j];
            const int part = j < i1 ? 0 : j < i2 ? 1 : 2;
            const float xp = kXp[part], xm = kXm[part];
            if (i < n / 2) {
              sumqx[0] += e[i] * xp * xb[i], sumqx[1] += e[i] * xp * xb[i];
              sumqx[2] += e[i] * xm * xb[i], sumqx[3] += e[i] * xm * xb[i];
              sumq2[0] += e[i] * xp * xp, sumq2[1] += e[i] * xp * xp;
              sumq2[2] += e[i] * xm * xm, sumq2[3] += e[i] * xm * xm;
            } else {
              sumqx[0] += e[i] * xp * xb[i], sumqx[2] += e[i] * xp * xb[i];
              sumqx[1] += e[i] * xm * xb[i], sumqx[3] += e[i] * xm * xb[i];
              sumq2[0] += e[i] * xp * xp, sumq2[2] += e[i] * xp * xp;
              sumq2[1] += e[i] * xm * xm, sumq2[3] += e[i] * xm * xm;
            }
          }
          for (int k = 0; k < 4; ++k)
            if (sumq2[k] > 0 && sumqx[k] * sumqx[k] > best_score * sumq2[k]) {
              scale = sumqx[k] / sumq2[k];
              best_score = scale * sumqx[k];
              besti1 = i1, besti2 = i2, best_k = k;
            }
        }
    }
    if (besti1 < 0 || besti2 < 0 || best_k < 0) return 0.0f;
    int8_t L[32];
    for (int j = 0; j < n; ++j) L[idx[j]] = static_cast<int8_t>(j < besti1 ? 0 : j < besti2 ? 1 : 2);
    if (scale < 0) {
      for (int j = 0; j < n; ++j) L[j] = static_cast<int8_t>(2 - L[j]);
      scale = -scale;
      best_k = m1 ? 3 - best_k : 1 - best_k;
    }
    // Delta of group k of 8: iq1_s one for the group of 32; iq1_m group 0 minus for k 2, 3, group 1 for k 1, 3.
    auto minus = [&](int k) { return m1 ? (k == 0 ? best_k >= 2 : best_k % 2 == 1) : best_k == 1; };
    bool all_on_grid = true;
    for (int k = 0; k < n / 8; ++k) {
      const int32_t entry = grid_index(g_, L + 8 * k);
      if (entry < 0) {
        all_on_grid = false;
        best_neighbour_iq1(g_, entry, xb + 8 * k, e + 8 * k, scale, minus(k) ? kXm : kXp, L + 8 * k);
      }
    }
    if (!all_on_grid) {
      float sumqx = 0, sumq2 = 0;
      for (int k = 0; k < n / 8; ++k) {
        const float* xx = minus(k) ? kXm : kXp;
        for (int j = 0; j < 8; ++j) {
          const float wj = e[8 * k + j];
          const float q = xx[L[8 * k + j]];
          sumqx += wj * q * xb[8 * k + j];
          sumq2 += wj * q * q;
        }
      }
      if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
    }
    for (int k = 0; k < n / 8; ++k)
      for (int j = 0; j < 8; ++j)
        c[8 * k + j] = static_cast<uint8_t>(L[8 * k + j] | (minus(k) ? 0x40 : 0));
    return scale;
  }

  uint32_t index_of(const BlockParams& p, int i0) const {
    int8_t L[8];
    for (int i = 0; i < 8; ++i) {
      const int l = p.codes[i0 + i] & 3;
      if (l > 2 || (p.codes[i0 + i] & 0x40) != (p.codes[i0] & 0x40))
        fail("", "format", name() + ": codes at weight " + std::to_string(i0 + i) + " are not a level of their group");
      L[i] = static_cast<int8_t>(l);
    }
    const int32_t index = grid_index(g_, L);
    if (index < 0) fail("", "format", name() + ": the codes at weight " + std::to_string(i0) + " are not a grid point");
    return static_cast<uint32_t>(index);
  }
  static const Lattice& lattice() {
    static const Lattice g = build_lattice(kIq1Shape, ggml_iq1_grid());
    return g;
  }

  Iq1Spec s_;
  const Lattice& g_;
};

}  // namespace

std::unique_ptr<GgmlFormat> make_ggml_lattice_format(DType t) {
  for (const Spec* s : {&kXxs, &kXs, &kIq2S, &kIq3Xxs, &kIq3S})
    if (s->dtype == t) return std::make_unique<LatticeFormat>(*s);
  for (const Iq1Spec* s : {&kIq1S, &kIq1M})
    if (s->dtype == t) return std::make_unique<Iq1Format>(*s);
  return nullptr;
}

}  // namespace lowbit::formats
