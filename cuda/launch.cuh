// Kernel launches with programmatic dependent launch (PDL, sm_90+), for every kernel of a model step (the ops and
// the GEMMs; not the one-off repacks, the GPTQ solver or the profiling spin).
//
// Why: a decode step at batch 1 is ~350 small kernels (11 a layer); without PDL each waits for the previous one to
// drain, then for its own launch and ramp. Measured on the H200 (2026-12-03, LLaMA-3-8B shape, NOTES-ops §15): eager
// steps 0.2-0.6 ms faster (the engine's mixed prefill + decode steps run eagerly); CUDA-graph replays unchanged.
// With the attribute, kernel N+1 is launched as soon as every CTA of kernel N has executed
// `griddepcontrol.launch_dependents` (pdl_trigger), runs its independent prologue (the decode GEMM issues its first
// weight loads: weights never depend on an earlier kernel), and blocks in `griddepcontrol.wait` (pdl_wait) until
// kernel N has completed and its memory is visible. Stream order, CUDA-graph capture (programmatic edges) and the
// results are unchanged: nothing a kernel reads or writes that another kernel of the stream writes or reads is
// touched before its pdl_wait, and completion is transitive (N+1 completes after its wait returned, so after N).
//
// The rule for every kernel launched through `pdl_launch`: call pdl_trigger() and pdl_wait() (pdl_enter) before
// touching any global memory other than immutable weights (both are no-ops off sm_90, and when the kernel was launched without the
// attribute). A kernel that triggers at its top lets its dependent's CTAs become resident while it runs; they only
// take the SM room its own CTAs leave (all of them have started by then), so no kernel is starved.
#pragma once
#include <cuda_runtime.h>

#include <utility>

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/** The top of a kernel that has no independent prologue: let the next kernel launch, then wait for the previous. */
__device__ __forceinline__ void pdl_enter() {
  pdl_trigger();
  pdl_wait();
}

/** Whether the current device takes the PDL launch attribute (compute capability 9.0 and up; cached). */
inline bool pdl_device() {
  static int v = -1;
  if (v < 0) {
    int dev = 0, major = 0;
    v = cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9;
  }
  return v == 1;
}

/** kernel<<<grid, block, smem, s>>>(args...) with programmatic stream serialization allowed (on sm_90+). Errors are
 *  returned and, like a <<<>>> launch's, left for cudaGetLastError (the callers' check_launch). */
template <typename... KArgs, typename... Args>
inline cudaError_t pdl_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_device() ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}
