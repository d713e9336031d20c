// lowbit: thread count used by every parallel kernel (OpenMP for our loops, OpenBLAS for GEMM).
#pragma once
#include <cstdint>
#include <functional>

namespace lowbit {

// n <= 0 means "all cores". Applies to OpenMP regions and to OpenBLAS.
void set_num_threads(int n);
int num_threads();

// Bit-identical results for any thread count: body(i0, i1) runs on fixed chunks [i0, min(i0 + chunk, n)) in an
// OpenMP team while OpenBLAS is single-threaded, so every BLAS call inside has the same shape and summation order
// whatever num_threads() is. (OpenBLAS's own threading splits a GEMM by thread count: measured, sgemm and dgemm
// results differ in the last bits between 1 and 2 threads; dsyrk happens not to.) body must not throw.
void parallel_fixed_chunks(int64_t n, int64_t chunk, const std::function<void(int64_t, int64_t)>& body);

// While set, ops::matmul's batched path (prefill, calibration) runs through parallel_fixed_chunks: quantize uses it
// so its output bytes do not depend on the thread count.
void set_deterministic_blas(bool on);
bool deterministic_blas();
int hardware_threads();
// Physical cores of the online CPUs (distinct package / core ids in /sys; SMT siblings count once), else
// hardware_threads(): llama-bench's default thread count.
int physical_cores();

}  // namespace lowbit
