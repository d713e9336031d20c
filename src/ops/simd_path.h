// Which hand-written x86 kernels a Highway target compiles. Evaluated inside each target's pass of
// hwy/foreach_target.h (HWY_TARGET changes from pass to pass), so it is a macro, not a constant.
//
// The AVX-512 VNNI / VBMI kernels need what Highway's AVX3_DL target guarantees (Ice Lake, Zen 4 and later), and
// every better target has it too. In Highway a lower target value is a better target: 1.1+ adds AVX3_ZEN4 and
// AVX3_SPR below AVX3_DL, and Zen 4 / Sapphire Rapids dispatch to them, so the test is `<=`, never `==` (with `==`
// those CPUs would silently take the 256-bit path). HWY_ARCH_X86 first: other architectures' targets have other
// values.
#pragma once

#define LOWBIT_AVX512_VNNI_PATH (HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3_DL)
