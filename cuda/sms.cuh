// The device's SM count, for the grids sized by it: the W4Ax GEMM's split-K schedule and v8's persistent grid
// (gemm_w4ax*.cu), the activation quantizers' blocks per row (ops_quant.cu), the KV4 attention's split rule.
#pragma once
#include <cuda_runtime.h>

/** The current device's SM count (cached on first use; 132 if the query fails). */
inline int sm_count() {
  static int n = 0;
  if (!n) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0)
      n = 132;
  }
  return n;
}
