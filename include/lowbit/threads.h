// lowbit: thread count used by every parallel kernel (OpenMP for our loops, OpenBLAS for GEMM).
#pragma once

namespace lowbit {

// n <= 0 means "all cores". Applies to OpenMP regions and to OpenBLAS.
void set_num_threads(int n);
int num_threads();
int hardware_threads();

}  // namespace lowbit
