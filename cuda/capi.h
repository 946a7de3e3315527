// COMET CUDA kernels behind a plain C ABI: one library serves the N-API addon (cuda/binding.cc) and the
// Python ctypes benchmark (bench/gemm), which runs cuBLAS beside it in one process on the same tensors.
// Every function returns 0 on success or a CUDA error code / negative COMET code; comet_last_error()
// gives the message. All pointers are device pointers unless named *_host. Streams are cudaStream_t as void*.
#pragma once
#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

const char* comet_last_error(void);

// ---------------------------------------------------------------------------------------------------------
// W4Ax GEMM (DESIGN.md §3.4), owned by cuda/gemm_w4ax*.cu (lab notes: cuda/NOTES-gemm.md).
// Canonical inputs:  a8 int8 [M][K8] · a4 int4x2 [M][(Kp-K8)/2] · sa f16 [M][Kp/B]
//                    w codes int4x2 [N][Kp/2] (canonical) · sw f16 [N][Kp/B]
// B in {32, 64, 128}; Kp and K8 multiples of B; M, N any positive size. Device pointers 16-byte aligned
// (cudaMalloc / torch allocations are). Scales must be finite (W4A4 blocks use an FMA that is exact for them).
// Weights are repacked once at load into the kernel's physical layout (cuda/gemm_w4ax.cuh; its pure-TS twin:
// simulator/layouts/w4_tiled.ts).
// Output y [M][N]: f32 holding f16(sum) exactly (out_f16 = 0) or f16 bits (out_f16 = 1). Bit-exact to §3.4 with
// the schedule below.
// ---------------------------------------------------------------------------------------------------------
typedef struct comet_w4_weight comet_w4_weight;  // opaque: repacked codes + transposed scales + shape

/** Repack canonical device buffers into the kernel layout (on `stream`; the inputs may be freed once it has
 *  run). Also grows the library's decode split-K workspace to what this shape needs (may synchronize the device
 *  then; never during comet_gemm_w4ax, so GEMM launches can be captured in CUDA graphs). */
int comet_w4_create(const uint8_t* codes, const uint16_t* scales, int N, int Kp, int B, int K8,
                    comet_w4_weight** out, void* stream);
void comet_w4_destroy(comet_w4_weight* w);

/** Y = A · W^T with the FMPQ epilogue. Chooses the decode kernel (M <= 64) or the tiled prefill kernel.
 *  The decode kernel's split-K uses one workspace per process: run W4Ax GEMMs of one process on one stream
 *  (or serialize them). */
int comet_gemm_w4ax(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const comet_w4_weight* w,
                    void* y, int out_f16, void* stream);

/** The partial-sum schedule the kernel will use for (M, N, Kp, B, K8) on the current device with the current
 *  forced variant: n_splits ranges of B-blocks [ranges[2i], ranges[2i+1]), each summed from +0 in ascending
 *  block order, then added in index order (sum = +0; sum = f32(sum + partial_i)). Returns n_splits
 *  (<= max_splits) or a negative error. The prefill kernels never split (1 range); the decode kernel splits K
 *  into k-tile-aligned slices so its grid is one full wave (depends on N, Kp, M and the SM count). */
int comet_gemm_w4ax_schedule(int M, int N, int Kp, int B, int K8, int* ranges_host, int max_splits);

/** Force a kernel variant for tests/benchmarks: 0 auto, 1 decode GEMV (M <= 64 only), 2 prefill sm_90 path
 *  (s8 mma), 3 prefill sm_80 path (s4 mma for W4A4 blocks when B >= 64, s8 otherwise; emulated but exact on
 *  sm_90). Auto: 1 for M <= 64, else 2 on sm_90+ and 3 below. Process-wide. */
int comet_gemm_w4ax_force(int variant);

// Other ops (embed, rmsnorm_quant, silu_mul_quant, rope, kv_append, attention, ...) are declared below by
// cuda/ops*.cu.

#ifdef __cplusplus
}  // extern "C"
#endif
