// lowbit formats: ggml's 2-bit lattice types IQ2_XXS and IQ2_XS as Formats (see ggml.h for the contract).
//
// Layouts (decoded in ggml_decode_other.cpp, which holds the grids):
//   iq2_xxs 256 w, 66 B: d fp16 | 8 sub-blocks of 32 w x 8 B: 4 grid indices (one byte per 8 weights) | u32 with
//                        4 x 7 sign bits and a 4-bit scale ls in bits 28..31.      weight = db * grid * sign
//   iq2_xs  256 w, 74 B: d fp16 | 32 x u16 (9-bit grid index | 7 sign bits << 9) | scales[8] (4 bits per 16 w)
// with db = d * (0.5 + ls) * 0.25 per scale group (32 weights for iq2_xxs, 16 for iq2_xs). A grid entry gives 8
// weights one of three magnitudes each (bytes 8, 25, 43: "levels" 0, 1, 2, which the fit treats as 2 l + 1); the
// seven sign bits cover weights 0..6 and the eighth sign is their parity (an even number of negated weights).
//
// fit is llama.cpp's importance-weighted search (quantize_row_iq2_xxs_impl / quantize_row_iq2_xs_impl), operation
// for operation, so fit + encode is byte-identical to llama-quantize --imatrix. Per 256-weight block, with error
// weights e_i = importance_i * sqrt(sigma2 + x_i^2), sigma2 = mean(x^2) over the block:
//  - per group of 8 the signs are taken from x; an odd number of negatives flips the sign of the weight with the
//    smallest e x^2 (its magnitude is then coded as a negative number, which the search sees);
//  - per scale group a scale search: trial inverse steps (5 + 0.1 t) / m (iq2_xxs: t = -6..6 around make_qp_quants's
//    step, m = 3 x that step; iq2_xs: t = -9..9, m = the largest magnitude), levels rounded per weight, a group of 8
//    that is not a grid point replaced by the best of its precomputed nearest grid points (error weighted by sqrt
//    e), and the least-squares step of the best trial kept; iq2_xxs then re-rounds every group at that step,
//    iq2_xs only the groups that were off the grid, and the step is refitted;
//  - d = (largest group step) / 31 and each group's 4-bit ls = nearest(0.5 (step / d - 1)).
// Without importance (or with none over a block) every e_i uses importance 1; llama-quantize requires an imatrix
// for these types.
//
// BlockParams: scale = d (unrounded; stored as fp16), sub_scales = the 8 (iq2_xxs) or 16 (iq2_xs) ls values,
// codes = one byte per weight: its level (0..2) | its sign << 7 (weight 7 of each group: the parity of the others).
// The 8 weights of a group are chosen together, so round(w, p, i) is the value the fit chose for weight i (w is
// not re-rounded): GPTQ on these types feeds each block's error forward into the next blocks' fits.
#include <algorithm>
#include <array>
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
constexpr int kMaxQ = 3;            // levels per weight; the fit's magnitudes are 2 l + 1 = 1, 3, 5
constexpr int kMapSize = 0xAAAA + 1;  // 2-bit levels of 8 weights, each at most 2
constexpr uint8_t kLevelBytes[3] = {8, 25, 43};  // a grid byte per level (the decode's magnitudes)

// A grid with what the search needs: each point's 8 magnitudes (2 l + 1), a map from the packed levels of 8 weights
// (2 bits each) to the grid point, and for each packed code that is not on the grid the grid points at its two
// smallest squared distances (llama.cpp's neighbour lists, in the same order: by distance, then index).
struct Lattice {
  std::vector<std::array<int8_t, 8>> q;
  std::vector<int32_t> map;          // grid index, or -(offset + 1) into neighbours; kMapSize entries
  std::vector<uint16_t> neighbours;  // per off-grid code: count, then grid indices
};

Lattice build_lattice(std::span<const uint64_t> grid) {
  Lattice g;
  g.q.resize(grid.size());
  g.map.assign(kMapSize, -1);
  for (size_t k = 0; k < grid.size(); ++k) {
    uint32_t packed = 0;
    for (int j = 0; j < 8; ++j) {
      const auto byte = static_cast<uint8_t>(grid[k] >> (8 * j));
      const int l = byte == kLevelBytes[0] ? 0 : byte == kLevelBytes[1] ? 1 : byte == kLevelBytes[2] ? 2 : -1;
      if (l < 0) fail("", "format", "iq2 grid entry " + std::to_string(k) + " has a byte outside {8, 25, 43}");
      g.q[k][j] = static_cast<int8_t>(2 * l + 1);
      packed |= static_cast<uint32_t>(l) << (2 * j);
    }
    g.map[packed] = static_cast<int32_t>(k);
  }
  constexpr int kWant = 2;  // distinct distances kept per off-grid code
  std::vector<std::pair<int, int>> dist(grid.size());
  for (int code = 0; code < kMapSize; ++code) {
    if (g.map[code] >= 0) continue;
    int pos[8];
    bool reachable = true;  // the search only forms codes whose levels are 0..2
    for (int j = 0; j < 8; ++j) {
      const int l = (code >> (2 * j)) & 3;
      reachable = reachable && l <= 2;
      pos[j] = 2 * l + 1;
    }
    if (!reachable) continue;
    for (size_t k = 0; k < grid.size(); ++k) {
      int d2 = 0;
      for (int j = 0; j < 8; ++j) d2 += (g.q[k][j] - pos[j]) * (g.q[k][j] - pos[j]);
      dist[k] = {d2, static_cast<int>(k)};
    }
    std::sort(dist.begin(), dist.end());
    g.map[code] = -static_cast<int32_t>(g.neighbours.size() + 1);
    const size_t start = g.neighbours.size();
    g.neighbours.push_back(0);
    int have = 1, d2 = dist[0].first;
    for (const auto& [d, k] : dist) {
      if (d > d2) {
        if (have == kWant) break;
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
  float best = FLT_MAX;
  int index = nb[1];
  for (int j = 1; j <= nb[0]; ++j) {
    const auto& pq = g.q[nb[j]];
    float d2 = 0;
    for (int i = 0; i < 8; ++i) {
      const float q = pq[i];
      const float diff = scale * q - xval[i];
      d2 += w[i] * diff * diff;
    }
    if (d2 < best) best = d2, index = nb[j];
  }
  for (int i = 0; i < 8; ++i) L[i] = static_cast<int8_t>((g.q[index][i] - 1) / 2);
  return index;
}

// The grid index of 8 levels packed 2 bits each (-1 when not a grid point).
int32_t grid_index(const Lattice& g, const int8_t* L) {
  uint32_t u = 0;
  for (int i = 0; i < 8; ++i) u |= static_cast<uint32_t>(L[i]) << (2 * i);
  return g.map[u];
}

// llama.cpp's make_qp_quants, including what its uint8_t codes do with negative levels (the sign-flipped weight of a
// group can round below 0 and wraps there): only its returned step is used here.
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

// The two types: scale groups of 32 (iq2_xxs, 256-point grid) or 16 (iq2_xs, 512-point grid) weights.
struct Spec {
  DType dtype;
  const char* name;
  size_t bytes;
  int group;  // weights per scale
};
constexpr Spec kXxs = {DType::IQ2_XXS, "iq2_xxs", 66, 32};
constexpr Spec kXs = {DType::IQ2_XS, "iq2_xs", 74, 16};

class Iq2Format final : public GgmlFormat {
 public:
  explicit Iq2Format(const Spec& s) : s_(s), g_(lattice(s.dtype)) {}
  std::string name() const override { return s_.name; }
  int block() const override { return kSuper; }
  size_t block_bytes() const override { return s_.bytes; }
  DType dtype() const override { return s_.dtype; }

  BlockParams fit(std::span<const float> w, std::span<const float> importance) const override {
    if (w.size() != static_cast<size_t>(kSuper))
      fail("", "format", name() + ": fit got " + std::to_string(w.size()) + " weights for a block of 256");
    if (!importance.empty() && importance.size() != w.size())
      fail("", "format", name() + ": importance has " + std::to_string(importance.size()) + " values for " +
                             std::to_string(w.size()) + " weights");
    for (float v : w)
      if (!std::isfinite(v)) fail("", "format", name() + ": fit got a non-finite weight");
    std::array<float, kSuper> imp;
    bool any = false;
    for (size_t i = 0; i < importance.size(); ++i) {
      imp[i] = std::max(0.0f, importance[i]);  // negative or NaN importance counts as 0
      any = any || imp[i] > 0.0f;
    }
    if (!any) imp.fill(1.0f);

    BlockParams p;
    p.codes.assign(kSuper, 0);
    const int groups = kSuper / s_.group;
    p.sub_scales.assign(static_cast<size_t>(groups), 0.0f);
    float sumx2 = 0;
    for (int i = 0; i < kSuper; ++i) sumx2 += w[i] * w[i];
    const float sigma2 = sumx2 / kSuper;
    std::array<float, 32> scales{};
    float max_scale = 0;
    for (int ib = 0; ib < groups; ++ib) {
      const float scale = fit_group(w.data() + ib * s_.group, imp.data() + ib * s_.group, sigma2,
                                    p.codes.data() + ib * s_.group);
      scales[ib] = scale;
      max_scale = std::max(max_scale, scale);
    }
    if (!(max_scale > 0)) {
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
    if (index_in_block < 0 || index_in_block >= kSuper)
      fail("", "format", name() + ": weight index " + std::to_string(index_in_block) + " outside the block");
    const uint8_t c = p.codes[index_in_block];
    const float db = f16_to_f32(f32_to_f16(p.scale)) * (0.5f + sub_scale(p, index_in_block / s_.group)) * 0.25f;
    return db * static_cast<float>(kLevelBytes[c & 3]) * (c & 0x80 ? -1.0f : 1.0f);
  }

  void encode(std::span<const float> w, const BlockParams& p, std::byte* out) const override {
    if (w.size() != static_cast<size_t>(kSuper))
      fail("", "format", name() + ": encode got " + std::to_string(w.size()) + " weights for a block of 256");
    check_params(p);
    ggml_detail::store_u16(out, f32_to_f16(p.scale));
    std::byte* qs = out + 2;
    if (s_.dtype == DType::IQ2_XXS) {
      for (int ib = 0; ib < 8; ++ib) {  // 4 grid index bytes, then a u32 of 4 x 7 signs and the scale
        uint32_t meta = static_cast<uint32_t>(sub_scale(p, ib)) << 28;
        for (int l = 0; l < 4; ++l) {
          uint32_t signs;
          qs[8 * ib + l] = static_cast<std::byte>(group_index(p, 4 * ib + l, signs));
          meta |= signs << (7 * l);
        }
        for (int j = 0; j < 4; ++j) qs[8 * ib + 4 + j] = static_cast<std::byte>(meta >> (8 * j));
      }
    } else {
      for (int k = 0; k < kSuper / 8; ++k) {
        uint32_t signs;
        const uint32_t index = group_index(p, k, signs);
        ggml_detail::store_u16(qs + 2 * k, static_cast<uint16_t>(index | (signs << 9)));
      }
      for (int ib = 0; ib < 8; ++ib)
        out[66 + ib] = static_cast<std::byte>(sub_scale(p, 2 * ib) | (sub_scale(p, 2 * ib + 1) << 4));
    }
  }

  void decode(const std::byte* in, std::span<float> out) const override {
    if (out.size() != static_cast<size_t>(kSuper)) fail("", "format", name() + ": decode needs 256 outputs");
    ggml_decode_other_row(s_.dtype, in, kSuper, out.data());
  }
  float dot(const std::byte* in, const float* x) const override {
    return ggml_detail::dot_by_decode<kSuper>(*this, in, x);
  }

 private:
  // One scale group of n = s_.group weights: its codes (level | sign << 7) into c, its step returned (0: all zero).
  float fit_group(const float* xb, const float* qw, float sigma2, uint8_t* c) const {
    const int n = s_.group;
    const bool xxs = s_.dtype == DType::IQ2_XXS;
    float weight[32] = {}, waux[32] = {}, xval[32] = {};
    int8_t L[32], Laux[32];
    uint8_t block_signs[4];
    for (int i = 0; i < n; ++i) weight[i] = qw[i] * std::sqrt(sigma2 + xb[i] * xb[i]);
    for (int i = 0; i < n; ++i) waux[i] = std::sqrt(weight[i]);
    for (int k = 0; k < n / 8; ++k) {
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
      if (nflip % 2) {
        int imin = 0;
        float min = weight[8 * k] * xb[8 * k] * xb[8 * k];
        for (int i = 1; i < 8; ++i) {
          const float ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
          if (ax < min) min = ax, imin = i;
        }
        xval[8 * k + imin] = -xval[8 * k + imin];
        s ^= static_cast<uint8_t>(1 << imin);
      }
      block_signs[k] = s & 127;
    }
    float max = xval[0];
    for (int i = 1; i < n; ++i) max = std::max(max, xval[i]);
    std::memset(L, 0, sizeof L);
    if (max < kGroupMaxEps) return 0.0f;  // codes stay 0: llama.cpp writes nothing for this group

    float scale, m;
    int trials;
    if (xxs) {
      scale = make_qp_step(n, kMaxQ + 1, xval, weight);
      m = scale * kMaxQ;
      if (m <= 0) return 0.0f;
      trials = 6;
    } else {
      scale = max / (2 * kMaxQ - 1);
      m = max;
      trials = 9;
    }
    bool on_grid[4] = {true, true, true, true}, on_grid_aux[4];
    float best = 0;
    for (int is = -trials; is <= trials; ++is) {
      const float id = (2 * kMaxQ - 1 + is * 0.1f) / m;
      const float this_scale = 1 / id;
      for (int k = 0; k < n / 8; ++k) {
        for (int i = 0; i < 8; ++i)
          Laux[8 * k + i] = static_cast<int8_t>(std::max(0, std::min(kMaxQ - 1, nearest_int(0.5f * (id * xval[8 * k + i] - 1)))));
        const int32_t e = grid_index(g_, Laux + 8 * k);
        on_grid_aux[k] = e >= 0;
        if (e < 0) best_neighbour(g_, e, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k);
      }
      float sumqx = 0, sumq2 = 0;
      for (int i = 0; i < n; ++i) {
        const float q = 2 * Laux[i] + 1;
        sumqx += weight[i] * xval[i] * q;
        sumq2 += weight[i] * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        scale = sumqx / sumq2;
        best = scale * sumqx;
        std::memcpy(L, Laux, static_cast<size_t>(n));
        std::copy(on_grid_aux, on_grid_aux + n / 8, on_grid);
      }
    }
    // iq2_xxs re-rounds every group at the chosen step, iq2_xs the ones that were off the grid; then a refit.
    bool refit = false;
    for (int k = 0; k < n / 8; ++k) refit = refit || xxs || !on_grid[k];
    if (refit && scale > 0) {
      const float id = 1 / scale;
      for (int k = 0; k < n / 8; ++k) {
        if (!xxs && on_grid[k]) continue;
        int8_t l8[8];
        for (int i = 0; i < 8; ++i)
          l8[i] = static_cast<int8_t>(std::max(0, std::min(kMaxQ - 1, nearest_int(0.5f * (id * xval[8 * k + i] - 1)))));
        std::memcpy(L + 8 * k, l8, 8);
        const int32_t e = grid_index(g_, l8);
        if (e < 0) best_neighbour(g_, e, xval + 8 * k, waux + 8 * k, scale, L + 8 * k);
      }
      float sumqx = 0, sumq2 = 0;
      for (int i = 0; i < n; ++i) {
        const float q = 2 * L[i] + 1;
        sumqx += weight[i] * xval[i] * q;
        sumq2 += weight[i] * q * q;
      }
      if (sumq2 > 0) scale = sumqx / sumq2;
    }
    if (scale < 0) {  // llama.cpp: "should never happen"; the step stays positive and the signs flip
      scale = -scale;
      for (int k = 0; k < n / 8; ++k) block_signs[k] = static_cast<uint8_t>(~block_signs[k] & 127);
    }
    for (int k = 0; k < n / 8; ++k) {
      if (grid_index(g_, L + 8 * k) < 0)
        fail("", "format", name() + ": the search left a group off the grid (a bug)");
      const unsigned seven = block_signs[k];
      const unsigned eighth = static_cast<unsigned>(__builtin_popcount(seven) & 1);
      for (int i = 0; i < 8; ++i) {
        const unsigned sign = i < 7 ? (seven >> i) & 1u : eighth;
        c[8 * k + i] = static_cast<uint8_t>(L[8 * k + i] | (sign << 7));
      }
    }
    return scale;
  }

  // Group k's grid index (its 8 levels must be a grid point) and its 7 explicit sign bits.
  uint32_t group_index(const BlockParams& p, int k, uint32_t& signs) const {
    int8_t L[8];
    signs = 0;
    for (int i = 0; i < 8; ++i) {
      const uint8_t c = p.codes[8 * k + i];
      L[i] = static_cast<int8_t>(c & 3);
      if (i < 7 && (c & 0x80)) signs |= 1u << i;
    }
    const int32_t index = (c_max(L) <= 2) ? grid_index(g_, L) : -1;
    if (index < 0) fail("", "format", name() + ": the codes of group " + std::to_string(k) + " are not a grid point");
    return static_cast<uint32_t>(index);
  }
  static int c_max(const int8_t* L) { return *std::max_element(L, L + 8); }

  void check_params(const BlockParams& p) const {
    if (p.codes.size() != static_cast<size_t>(kSuper) ||
        p.sub_scales.size() != static_cast<size_t>(kSuper / s_.group))
      fail("", "format", name() + ": BlockParams need 256 codes and " + std::to_string(kSuper / s_.group) +
                             " sub_scales (from this format's fit)");
  }
  static int sub_scale(const BlockParams& p, int g) {
    const float v = p.sub_scales[g];
    return std::clamp(std::isfinite(v) ? static_cast<int>(std::lround(v)) : 0, 0, 15);
  }
  static const Lattice& lattice(DType t) {
    static const Lattice xxs = build_lattice(ggml_iq2_grid(DType::IQ2_XXS));
    static const Lattice xs = build_lattice(ggml_iq2_grid(DType::IQ2_XS));
    return t == DType::IQ2_XXS ? xxs : xs;
  }

  Spec s_;
  const Lattice& g_;
};

}  // namespace

std::unique_ptr<GgmlFormat> make_ggml_iq2_format(DType t) {
  if (t == DType::IQ2_XXS) return std::make_unique<Iq2Format>(kXxs);
  if (t == DType::IQ2_XS) return std::make_unique<Iq2Format>(kXs);
  return nullptr;
}

}  // namespace lowbit::formats
