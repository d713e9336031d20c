// Microbenchmarks of the ops layer: decode GEMV (weight GB/s), batch-512 prefill matmul (GFLOP/s), the same two
// for lowbit's packed intN formats, and the machine's read bandwidth, at 1 and 2 threads.
//   ./build-ops/lowbit_bench --benchmark_filter='Gemv|ReadBandwidth'
#include <benchmark/benchmark.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <iterator>
#include <string>
#include <utility>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "formats/format.h"
#include "formats/intn.h"
#include "lowbit/threads.h"
#include "ops/kernels.h"
#include "ops/ops.h"
#include "hwy/targets.h"

namespace {

using lowbit::DType;
using lowbit::ops::WeightView;

// One pass over this many bytes of weights comfortably exceeds the caches (the VM reports a large L3), so
// the GEMV benchmarks stream from DRAM like a real decode step does over a whole model.
constexpr size_t kPoolBytes = size_t{1} << 30;

// A shared pool of weight bytes. Every 16-bit word is in [0x3800, 0x3c00): a normal number whether read
// as f16 (0.5..1), bf16 (~1e-5..1e-4) or as the high half of an f32, so no dtype sees NaN or subnormals.
const std::byte* weight_pool() {
  static std::byte* pool = [] {
    auto* p = static_cast<std::byte*>(std::aligned_alloc(size_t{2} << 20, kPoolBytes));
    auto* w = reinterpret_cast<uint16_t*>(p);
    std::mt19937 rng(1);
    std::vector<uint16_t> block(1 << 16);
    for (auto& v : block) v = static_cast<uint16_t>(0x3800 + (rng() & 0x3ff));
    for (size_t i = 0; i < kPoolBytes / 2; i += block.size())
      std::memcpy(w + i, block.data(), std::min(block.size(), kPoolBytes / 2 - i) * 2);
    return p;
  }();
  return pool;
}

size_t element_bytes(DType t) { return t == DType::F32 ? 4 : 2; }

// Views of consecutive rows x cols matrices in the pool (as many as fit).
std::vector<WeightView> pool_views(DType dt, int64_t rows, int64_t cols) {
  const size_t bytes = static_cast<size_t>(rows * cols) * element_bytes(dt);
  std::vector<WeightView> views;
  for (size_t off = 0; off + bytes <= kPoolBytes; off += bytes)
    views.push_back({dt, rows, cols, weight_pool() + off, static_cast<size_t>(cols) * element_bytes(dt)});
  return views;
}

// Wall-clock seconds of the benchmark loop: the work runs on OpenMP/OpenBLAS threads, so rates are per real
// second (a plain counter, so the report reads "GB/s=16.5", not a kIsRate "GB/s=16.5/s").
struct LoopTimer {
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); }
};

std::vector<float> random_floats(size_t n) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (auto& f : v) f = d(rng);
  return v;
}

// Views of consecutive packed rows x cols matrices in the pool (as many as fit). Every 16-bit word of the pool is
// a normal f16, so block scales and zeros are sane.
std::vector<WeightView> packed_views(const lowbit::formats::IntNFormat& f, int64_t rows, int64_t cols) {
  const size_t rb = lowbit::formats::row_bytes(f, cols), bytes = rb * static_cast<size_t>(rows);
  std::vector<WeightView> views;
  for (size_t off = 0; off + bytes <= kPoolBytes; off += bytes) {
    WeightView v{DType::I8, rows, cols, weight_pool() + off, rb};
    v.intn = &f;
    views.push_back(v);
  }
  return views;
}

// Runs the benchmark's loop: one GEMV per iteration on the next view (so weights stream from memory); returns
// seconds per iteration.
double gemv_seconds(benchmark::State& state, const std::vector<WeightView>& views) {
  const std::vector<float> x = random_floats(static_cast<size_t>(views.front().cols));
  std::vector<float> y(static_cast<size_t>(views.front().rows));
  size_t i = 0;
  LoopTimer timer;
  for (auto _ : state) {
    lowbit::ops::matmul(views[i], x.data(), 1, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    i = i + 1 == views.size() ? 0 : i + 1;
  }
  return timer.seconds() / static_cast<double>(state.iterations());
}

// Args: dtype, rows, cols, threads.
void BM_Gemv(benchmark::State& state) {
  const auto dt = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2);
  lowbit::set_num_threads(static_cast<int>(state.range(3)));
  const std::vector<WeightView> views = pool_views(dt, rows, cols);
  const double bytes = static_cast<double>(rows * cols) * element_bytes(dt);
  state.counters["GB/s"] = bytes / gemv_seconds(state, views) / 1e9;
  state.SetLabel(std::string(lowbit::dtype_name(dt)) + " " + lowbit::ops::simd_target());
}

void GemvArgs(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2})
    for (DType dt : {DType::F32, DType::F16, DType::BF16})
      for (auto [rows, cols] : {std::pair{2048, 2048}, {2048, 8192}, {8192, 2048}, {4096, 4096}})
        b->Args({static_cast<int64_t>(dt), rows, cols, threads});
  b->ArgNames({"dtype", "rows", "cols", "threads"});
}
BENCHMARK(BM_Gemv)->Apply(GemvArgs)->UseRealTime()->Unit(benchmark::kMicrosecond);

// The matmul loop shared by the quantized-weight benchmarks: one matmul per iteration on the next view (or the same
// one when hot), then GB/s of weight bytes (tokens 1) or GFLOP/s (batches).
void run_matmul(benchmark::State& state, const std::vector<WeightView>& views, int64_t tokens, bool hot) {
  const WeightView& v0 = views.front();
  const size_t bytes = v0.row_bytes * static_cast<size_t>(v0.rows);
  const std::vector<float> x = random_floats(static_cast<size_t>(v0.cols * tokens));
  std::vector<float> y(static_cast<size_t>(v0.rows * tokens));
  size_t i = 0;
  LoopTimer timer;
  for (auto _ : state) {
    lowbit::ops::matmul(views[i], x.data(), tokens, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    i = hot || i + 1 == views.size() ? 0 : i + 1;
  }
  const double iters = static_cast<double>(state.iterations()), sec = timer.seconds();
  if (tokens == 1)
    state.counters["GB/s"] = static_cast<double>(bytes) * iters / sec / 1e9;
  else
    state.counters["GFLOP/s"] = 2.0 * static_cast<double>(v0.rows * v0.cols * tokens) * iters / sec / 1e9;
}

// Packed intN matmul on consecutive packed matrices in the pool (random code bytes; every 16-bit word is a
// normal f16, so the block scales and zeros are sane). Args: bits, group, rows, cols, tokens, threads.
// tokens 1 is the decode GEMV (GB/s of packed bytes read); tokens 512 the prefill path (GFLOP/s).
// hot 1 multiplies the same (cache-resident) matrix every time: the kernel's compute ceiling.
void BM_MatmulIntN(benchmark::State& state) {
  const bool hot = state.range(6) != 0;
  const int bits = static_cast<int>(state.range(0)), group = static_cast<int>(state.range(1));
  const int64_t rows = state.range(2), cols = state.range(3), tokens = state.range(4);
  lowbit::set_num_threads(static_cast<int>(state.range(5)));
  const std::string name = "int" + std::to_string(bits) + "g" + std::to_string(group) + "a";
  const lowbit::formats::IntNFormat& f = lowbit::formats::intn_format(name);
  run_matmul(state, packed_views(f, rows, cols), tokens, hot);
  state.SetLabel(name + " " + lowbit::ops::simd_target());
}

void MatmulIntNArgs(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    for (auto [bits, group] : {std::pair{4, 128}, {4, 32}, {2, 128}, {3, 128}, {8, 128}})
      for (auto [rows, cols] : {std::pair{4096, 4096}, {11008, 4096}, {4096, 11008}, {2048, 8192}})
        b->Args({bits, group, rows, cols, 1, threads, 0});
    for (auto [rows, cols] : {std::pair{4096, 4096}, {11008, 4096}, {4096, 11008}, {2048, 8192}})
      b->Args({4, 128, rows, cols, 512, threads, 0});
  }
  for (auto [bits, group] : {std::pair{4, 128}, {4, 32}, {2, 128}, {3, 128}, {8, 128}}) {
    b->Args({bits, group, 512 * 4 / bits, 4096, 1, 1, 1});  // 1 MiB of codes: L2-resident
    b->Args({bits, group, 128 * 4 / bits, 16384, 1, 1, 1});
  }
  b->ArgNames({"bits", "group", "rows", "cols", "tokens", "threads", "hot"});
}
BENCHMARK(BM_MatmulIntN)->Apply(MatmulIntNArgs)->UseRealTime()->Unit(benchmark::kMicrosecond);

// llama.cpp block types (ops/ggml_dot.h) on the same pool (every 16-bit word a normal f16: sane block scales).
// Args: ggml type id, rows, cols, tokens, threads, hot (as for MatmulIntN).
void BM_MatmulGgml(benchmark::State& state) {
  const auto dt = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), tokens = state.range(3);
  const bool hot = state.range(5) != 0;
  lowbit::set_num_threads(static_cast<int>(state.range(4)));
  const size_t rb = static_cast<size_t>(*lowbit::dtype_row_bytes(dt, static_cast<uint64_t>(cols)));
  const size_t bytes = rb * static_cast<size_t>(rows);
  std::vector<WeightView> views;
  for (size_t off = 0; off + bytes <= kPoolBytes; off += bytes) views.push_back({dt, rows, cols, weight_pool() + off, rb});
  run_matmul(state, views, tokens, hot);
  state.SetLabel(std::string(lowbit::dtype_name(dt)) + " " + lowbit::ops::simd_target());
}

void MatmulGgmlArgs(benchmark::internal::Benchmark* b) {
  const DType types[] = {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::Q5_K, DType::Q3_K,
                         DType::Q2_K, DType::IQ4_XS};
  for (int threads : {1, 2})
    for (DType t : types) b->Args({static_cast<int64_t>(t), 4096, 4096, 1, threads, 0});
  for (DType t : types) b->Args({static_cast<int64_t>(t), 512, 4096, 1, 1, 1});  // L2-resident: compute ceiling
  for (int threads : {1, 2})
    for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K})
      b->Args({static_cast<int64_t>(t), 4096, 4096, 512, threads, 0});
  b->ArgNames({"type", "rows", "cols", "tokens", "threads", "hot"});
}
BENCHMARK(BM_MatmulGgml)->Apply(MatmulGgmlArgs)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Weights repacked at load (ops.h repack_for_kernels), as a model runs them: one matrix (hot after the first
// pass), decode (tokens 1, GB/s of the file's bytes) or a prefill batch (GFLOP/s). The matrix is encoded from
// random normal weights, so intN zeros are real integers (the pool's random words would leave intN unrepacked).
// Args: kind (0 Q4_0, 1 Q4_K, 2 Q8_0, 3 int4g128a, 4 int4g32a, 5 int8g128a), rows, cols, tokens, threads. The two
// shapes are TinyLlama's attention (2048 x 2048) and FFN down (2048 x 5632) projections.
void BM_MatmulRepacked(benchmark::State& state) {
  const int kind = static_cast<int>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), tokens = state.range(3);
  lowbit::set_num_threads(static_cast<int>(state.range(4)));
  static const char* const kNames[] = {"q4_0", "q4_K", "q8_0", "int4g128a", "int4g32a", "int8g128a"};
  const std::unique_ptr<lowbit::formats::Format> f = lowbit::formats::make_format(kNames[kind]);
  const size_t rb = lowbit::formats::row_bytes(*f, cols);
  std::vector<std::byte> bytes(rb * static_cast<size_t>(rows));
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& x : row) x = nd(rng);
    lowbit::formats::encode_row(*f, row, {}, bytes.data() + static_cast<size_t>(r) * rb);
  }
  WeightView v{DType::I8, rows, cols, bytes.data(), rb};
  if (kind >= 3)
    v.intn = &lowbit::formats::intn_format(kNames[kind]);
  else
    v.dtype = *lowbit::dtype_from_name(kNames[kind]);
  const lowbit::ops::RepackedPtr rp = lowbit::ops::repack_for_kernels(v);
  if (!rp) {
    state.SkipWithError("no repacked layout for this format on this target");
    return;
  }
  v.repacked = rp.get();
  run_matmul(state, {v}, tokens, true);
  state.SetLabel(std::string(kNames[kind]) + " " + lowbit::ops::simd_target());
}
BENCHMARK(BM_MatmulRepacked)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5}, {2048}, {2048, 5632}, {1, 512}, {1}})
    ->ArgNames({"kind", "rows", "cols", "tokens", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The portable kernels (CPUs without AVX-512 VNNI), forced with Highway's target mask: a 4096x4096 packed GEMV
// streamed from the pool, 1 thread. Args: bits, target (hwy::TargetName's bit: AVX2 or SSE4).
void BM_MatmulIntNPortable(benchmark::State& state) {
  const auto target = static_cast<int64_t>(state.range(1));
  if ((hwy::SupportedTargets() & target) == 0) {
    state.SkipWithError("target not supported by this CPU");
    return;
  }
  hwy::SetSupportedTargetsForTest(target);
  const int bits = static_cast<int>(state.range(0));
  const int64_t rows = 4096, cols = 4096;
  lowbit::set_num_threads(1);
  const lowbit::formats::IntNFormat& f = lowbit::formats::intn_format("int" + std::to_string(bits) + "g128a");
  const std::vector<WeightView> views = packed_views(f, rows, cols);
  const double bytes = static_cast<double>(views.front().row_bytes) * static_cast<double>(rows);
  state.counters["GB/s"] = bytes / gemv_seconds(state, views) / 1e9;
  state.SetLabel(f.name() + " " + lowbit::ops::simd_target());
  hwy::SetSupportedTargetsForTest(0);
}
BENCHMARK(BM_MatmulIntNPortable)
    ->ArgsProduct({{2, 3, 4, 5, 6, 7, 8}, {static_cast<int64_t>(HWY_AVX2), static_cast<int64_t>(HWY_SSE4)}})
    ->ArgNames({"bits", "target"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The portable ggml-type kernels, forced the same way: a 4096x4096 GEMV streamed from the pool, 1 thread.
// Args: ggml type id, target (AVX2 or SSE4).
void BM_MatmulGgmlPortable(benchmark::State& state) {
  const auto target = static_cast<int64_t>(state.range(1));
  if ((hwy::SupportedTargets() & target) == 0) {
    state.SkipWithError("target not supported by this CPU");
    return;
  }
  hwy::SetSupportedTargetsForTest(target);
  const auto dt = static_cast<DType>(state.range(0));
  const int64_t rows = 4096, cols = 4096;
  lowbit::set_num_threads(1);
  const size_t rb = static_cast<size_t>(*lowbit::dtype_row_bytes(dt, static_cast<uint64_t>(cols)));
  const size_t bytes = rb * static_cast<size_t>(rows);
  std::vector<WeightView> views;
  for (size_t off = 0; off + bytes <= kPoolBytes; off += bytes) views.push_back({dt, rows, cols, weight_pool() + off, rb});
  state.counters["GB/s"] = static_cast<double>(bytes) / gemv_seconds(state, views) / 1e9;
  state.SetLabel(std::string(lowbit::dtype_name(dt)) + " " + lowbit::ops::simd_target());
  hwy::SetSupportedTargetsForTest(0);
}
BENCHMARK(BM_MatmulGgmlPortable)
    ->ArgsProduct({{static_cast<int64_t>(DType::Q4_0), static_cast<int64_t>(DType::Q8_0),
                    static_cast<int64_t>(DType::Q4_K), static_cast<int64_t>(DType::Q6_K),
                    static_cast<int64_t>(DType::Q5_K), static_cast<int64_t>(DType::Q3_K),
                    static_cast<int64_t>(DType::Q2_K), static_cast<int64_t>(DType::IQ4_XS),
                    static_cast<int64_t>(DType::IQ4_NL), static_cast<int64_t>(DType::Q4_1),
                    static_cast<int64_t>(DType::Q5_0), static_cast<int64_t>(DType::Q5_1)},
                   {static_cast<int64_t>(HWY_AVX2), static_cast<int64_t>(HWY_SSE4)}})
    ->ArgNames({"type", "target"})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// The matmuls of one decode step of a hidden-2048 Llama (TinyLlama-1.1B shapes: GQA k/v 256 x 2048, FFN 5632),
// layer after layer through the pool, as the model graph issues them. Args: dtype, threads.
void BM_DecodeLayerHidden2048(benchmark::State& state) {
  const auto dt = static_cast<DType>(state.range(0));
  lowbit::set_num_threads(static_cast<int>(state.range(1)));
  const std::pair<int64_t, int64_t> shapes[] = {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048},
                                                {5632, 2048}, {5632, 2048}, {2048, 5632}};
  std::vector<WeightView> layer_mats;  // as many whole layers as fit in the pool
  size_t off = 0, layer_bytes = 0;
  for (auto [r, c] : shapes) layer_bytes += static_cast<size_t>(r * c) * element_bytes(dt);
  for (; off + layer_bytes <= kPoolBytes;) {
    for (auto [r, c] : shapes) {
      layer_mats.push_back({dt, r, c, weight_pool() + off, static_cast<size_t>(c) * element_bytes(dt)});
      off += static_cast<size_t>(r * c) * element_bytes(dt);
    }
  }
  const std::vector<float> x = random_floats(5632);
  std::vector<float> y(5632);
  size_t i = 0;
  LoopTimer timer;
  for (auto _ : state) {
    for (size_t m = 0; m < std::size(shapes); ++m) lowbit::ops::matmul(layer_mats[i + m], x.data(), 1, y.data());
    benchmark::DoNotOptimize(y.data());
    i = i + std::size(shapes) >= layer_mats.size() ? 0 : i + std::size(shapes);
  }
  state.counters["GB/s"] = static_cast<double>(layer_bytes) * static_cast<double>(state.iterations()) / timer.seconds() / 1e9;
  state.SetLabel(std::string(lowbit::dtype_name(dt)));
}
BENCHMARK(BM_DecodeLayerHidden2048)
    ->ArgsProduct({{static_cast<int64_t>(DType::F32), static_cast<int64_t>(DType::F16), static_cast<int64_t>(DType::BF16)}, {1, 2}})
    ->ArgNames({"dtype", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Prefill: n_tokens x cols activations times a rows x cols weight. Args: dtype, rows, cols, n_tokens, threads.
void BM_Matmul(benchmark::State& state) {
  const auto dt = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), n = state.range(3);
  lowbit::set_num_threads(static_cast<int>(state.range(4)));
  const WeightView w = pool_views(dt, rows, cols).front();
  const std::vector<float> x = random_floats(static_cast<size_t>(n * cols));
  std::vector<float> y(static_cast<size_t>(n * rows));
  LoopTimer timer;
  for (auto _ : state) {
    lowbit::ops::matmul(w, x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  const double flops = 2.0 * static_cast<double>(n) * rows * cols;
  const double sec = timer.seconds();
  state.counters["GFLOP/s"] = flops * static_cast<double>(state.iterations()) / sec / 1e9;
  state.counters["tok/s"] = static_cast<double>(n) * static_cast<double>(state.iterations()) / sec;
  state.SetLabel(std::string(lowbit::dtype_name(dt)));
}

void MatmulArgs(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2})
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) b->Args({static_cast<int64_t>(dt), 2048, 2048, 512, threads});
  b->ArgNames({"dtype", "rows", "cols", "n_tokens", "threads"});
}
BENCHMARK(BM_Matmul)->Apply(MatmulArgs)->UseRealTime()->Unit(benchmark::kMillisecond);

#if defined(__x86_64__)
// Why a packed GEMV streams below the machine's read bandwidth: the packed kernels' memory pattern (4 interleaved
// rows of 68-byte 4-bit blocks, software prefetch 8 KiB ahead) with three amounts of work per 64-byte line of
// codes: 0 = none (an XOR), 1 = two vpdpbusd (an 8-bit GEMV's work), 2 = the 4-bit split kernel's unpack and
// four vpdpbusd plus a convert and an FMA (RowsDotSplit), 3 = what a 4-bit kernel with int8 activations would do
// (nibbles unpacked, two vpdpbusd, convert, FMA). Single thread, streamed from the pool. Not a kernel:
// activations are a fixed L1-resident buffer and headers are ignored.
#define LOWBIT_BENCH_VNNI __attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))
template <int Work>
LOWBIT_BENCH_VNNI float stream_rows_with_work(const uint8_t* base, size_t bytes, const int8_t* acts) {
  constexpr size_t kBlock = 68, kRowBytes = 32 * kBlock, kRows = 4;
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  alignas(16) static constexpr uint8_t kTimes16[16] = {0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240};
  const __m512i t16 = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kTimes16)));
  const __m512i high = _mm512_set1_epi64(0x3c342c241c140c04LL);
  __m512 acc = _mm512_setzero_ps();
  __m512i x = _mm512_setzero_si512();
  for (size_t g0 = 0; g0 + kRows * kRowBytes <= bytes; g0 += kRows * kRowBytes)
    for (size_t b = 0; b < 32; ++b)
      for (size_t r = 0; r < kRows; ++r) {
        const uint8_t* blk = base + g0 + r * kRowBytes + b * kBlock;
        _mm_prefetch(reinterpret_cast<const char*>(blk) + 8192, _MM_HINT_T0);
        const __m512i v = _mm512_loadu_si512(blk + 4);
        const int8_t* a = acts + (b % 16) * 256;
        if constexpr (Work == 0) {
          x = _mm512_xor_si512(x, v);
        } else if constexpr (Work == 1) {
          __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), v, _mm512_load_si512(a));
          x = _mm512_add_epi32(x, _mm512_dpbusd_epi32(d, v, _mm512_load_si512(a + 64)));
        } else if constexpr (Work == 3) {
          const __m512i lo = _mm512_and_si512(v, m4);
          const __m512i hi = _mm512_and_si512(_mm512_multishift_epi64_epi8(high, v), m4);
          __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_load_si512(a));
          d = _mm512_dpbusd_epi32(d, hi, _mm512_load_si512(a + 64));
          acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(1e-9f), acc);
        } else {
          const __m512i lo = _mm512_and_si512(v, m4), hi16 = _mm512_andnot_si512(m4, v);
          const __m512i lo16 = _mm512_shuffle_epi8(t16, lo);
          const __m512i hi = _mm512_and_si512(_mm512_multishift_epi64_epi8(high, v), m4);
          __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo16, _mm512_load_si512(a));
          d = _mm512_dpbusd_epi32(d, lo, _mm512_load_si512(a + 64));
          d = _mm512_dpbusd_epi32(d, hi16, _mm512_load_si512(a + 128));
          d = _mm512_dpbusd_epi32(d, hi, _mm512_load_si512(a + 192));
          acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_set1_ps(1e-9f), acc);
        }
      }
  return _mm512_reduce_add_ps(acc) + static_cast<float>(_mm512_reduce_add_epi32(x));
}

void BM_StreamRowsWithWork(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512vbmi")) {
    state.SkipWithError("needs AVX-512 VNNI and VBMI");
    return;
  }
  const int work = static_cast<int>(state.range(0));
  alignas(64) static int8_t acts[16 * 256];
  for (int i = 0; i < 16 * 256; ++i) acts[i] = static_cast<int8_t>(i % 17 - 8);
  const auto* pool = reinterpret_cast<const uint8_t*>(weight_pool());
  constexpr size_t kChunk = size_t{9} << 20;  // 9 MiB at a time, like one 4096x4096 int4g128a matrix
  size_t off = 0;
  float sink = 0;
  LoopTimer timer;
  for (auto _ : state) {
    sink += work == 0   ? stream_rows_with_work<0>(pool + off, kChunk, acts)
            : work == 1 ? stream_rows_with_work<1>(pool + off, kChunk, acts)
            : work == 2 ? stream_rows_with_work<2>(pool + off, kChunk, acts)
                        : stream_rows_with_work<3>(pool + off, kChunk, acts);
    off = off + 2 * kChunk > kPoolBytes ? 0 : off + kChunk;
  }
  benchmark::DoNotOptimize(sink);
  state.counters["GB/s"] = static_cast<double>(kChunk) * static_cast<double>(state.iterations()) / timer.seconds() / 1e9;
}
BENCHMARK(BM_StreamRowsWithWork)->DenseRange(0, 3)->ArgName("work")->UseRealTime()->Unit(benchmark::kMicrosecond);
#endif

// The read loop behind ops::measure_read_bandwidth over `bytes` of the pool. Args: bytes (MiB), threads.
void BM_ReadBandwidth(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0)) << 20;
  const int threads = static_cast<int>(state.range(1));
  const auto* p = reinterpret_cast<const float*>(weight_pool());
  LoopTimer timer;
  for (auto _ : state) benchmark::DoNotOptimize(lowbit::ops::detail::parallel_stream_sum(p, bytes / 4, threads));
  state.counters["GB/s"] = static_cast<double>(bytes) * static_cast<double>(state.iterations()) / timer.seconds() / 1e9;
}
BENCHMARK(BM_ReadBandwidth)
    ->ArgsProduct({{16, 256, 1024}, {1, 2}})
    ->ArgNames({"MiB", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The public API as the `bench` command uses it (fresh 1 GiB buffer, best of 5). Args: threads.
void BM_MeasureReadBandwidth(benchmark::State& state) {
  double gbs = 0;
  for (auto _ : state) gbs = lowbit::ops::measure_read_bandwidth(kPoolBytes, static_cast<int>(state.range(0)));
  state.counters["GB/s"] = gbs;
}
BENCHMARK(BM_MeasureReadBandwidth)->Arg(1)->Arg(2)->ArgName("threads")->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace
