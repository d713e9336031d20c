// Which kernel path runs is decided by the CPU, not by which Highway version built us: from the CPU's own feature
// bits (cpuid, through the compiler's __builtin_cpu_supports), work out whether the AVX-512 VNNI kernels must run,
// and check that the dispatch chose them -- on AVX3_DL and on any better target a newer Highway may add (AVX3_ZEN4,
// AVX3_SPR), where a `HWY_TARGET == HWY_AVX3_DL` test would silently take the 256-bit path.
#include <gtest/gtest.h>

#include <string>

#include "ops/ops.h"

namespace lowbit::ops {
namespace {

// Everything Highway's AVX3_DL target requires (hwy/targets.cc): AVX-512 F/VL/DQ/BW plus VNNI, VBMI, VBMI2, BITALG,
// VPOPCNTDQ, VPCLMULQDQ, VAES and GFNI.
bool cpu_has_avx3_dl() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512bitalg") &&
         __builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("vpclmulqdq") &&
         __builtin_cpu_supports("vaes") && __builtin_cpu_supports("gfni");
#else
  return false;
#endif
}

TEST(KernelDispatch, CpuFeaturesDecideTheVnniPath) {
  const bool must = cpu_has_avx3_dl();
  const std::string target = simd_target();
  SCOPED_TRACE("CPU has AVX3_DL's features: " + std::string(must ? "yes" : "no") + ", Highway target " + target);
  if (must) {
    EXPECT_EQ(std::string(ggml_kernel_path()), "avx512-vnni");
    EXPECT_EQ(std::string(intn_kernel_path()), "avx512-vnni");
    // Highway dispatched to AVX3_DL or a better x86 target.
    EXPECT_TRUE(target == "AVX3_DL" || target == "AVX3_ZEN4" || target == "AVX3_SPR") << target;
  } else {
    EXPECT_NE(std::string(ggml_kernel_path()), "avx512-vnni");
    EXPECT_NE(std::string(intn_kernel_path()), "avx512-vnni");
  }
  // Portable SIMD at least, wherever Highway has a SIMD target.
  if (target != "SCALAR" && target != "EMU128") {
    EXPECT_NE(std::string(ggml_kernel_path()), "scalar");
    EXPECT_NE(std::string(intn_kernel_path()), "scalar");
  }
}

}  // namespace
}  // namespace lowbit::ops
