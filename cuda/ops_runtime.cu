// Runtime side of the C ABI: the error message buffer, device facts, memory, streams, CUDA graphs.
// comet_last_error is defined here (strong; gemm_w4ax.cu keeps a weak fallback).
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ops.cuh"

static thread_local char g_msg[1024];

namespace comet_ops {
int set_error(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_msg, sizeof g_msg, fmt, ap);
  va_end(ap);
  return code ? code : -1;
}

int check_spec(const char* op, const ActSpec& sp) {
  const bool ok = (sp.B == 32 || sp.B == 64 || sp.B == 128) && sp.K > 0 && sp.Kp % sp.B == 0 && sp.Kp >= sp.K &&
                  sp.Kp - sp.K < sp.B && sp.K8 % sp.B == 0 && sp.K8 >= 0 && sp.K8 <= sp.Kp;
  return ok ? 0 : set_error(COMET_EINVAL, "%s: bad activation spec K=%d B=%d Kp=%d K8=%d", op, sp.K, sp.B, sp.Kp, sp.K8);
}
}  // namespace comet_ops

using comet_ops::set_error;

extern "C" const char* comet_last_error(void) { return g_msg; }
extern "C" void comet_clear_error(void) { g_msg[0] = 0; }
extern "C" const char* comet_error_string(int code) {
  return code > 0 ? cudaGetErrorString((cudaError_t)code) : code == COMET_EINVAL ? "invalid argument" : "error";
}

// Does this library hold code the GPU can run (its SASS, or PTX the driver can JIT)? A library built for other
// architectures would otherwise fail at the first kernel launch, deep inside a model.
__global__ void comet_probe_kernel() {}
#ifndef COMET_CUDA_GENCODE_STR
#define COMET_CUDA_GENCODE_STR "(unknown)"
#endif

extern "C" int comet_device_info(int device, comet_device_facts* out) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return set_error((int)e, "no usable CUDA device: %s", cudaGetErrorString(e));
  if (device < 0 || device >= n) return set_error(COMET_EINVAL, "CUDA device %d does not exist (%d found)", device, n);
  cudaDeviceProp p;
  COMET_TRY("cudaGetDeviceProperties", cudaGetDeviceProperties(&p, device));
  COMET_TRY("cudaSetDevice", cudaSetDevice(device));
  cudaFuncAttributes fa;
  e = cudaFuncGetAttributes(&fa, comet_probe_kernel);
  if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction || e == cudaErrorUnsupportedPtxVersion) {
    cudaGetLastError();
    return set_error((int)e, "this build of the COMET CUDA library has no code for %s (sm_%d%d): it was built with %s; "
                     "rebuild it for this GPU (npm run build:cuda on a machine with a CUDA toolkit that knows it)",
                     p.name, p.major, p.minor, COMET_CUDA_GENCODE_STR);
  }
  COMET_TRY("cudaFuncGetAttributes", e);
  size_t fr = 0, tot = 0;
  COMET_TRY("cudaMemGetInfo", cudaMemGetInfo(&fr, &tot));
  memset(out, 0, sizeof *out);
  strncpy(out->name, p.name, sizeof out->name - 1);
  out->count = n;
  out->major = p.major;
  out->minor = p.minor;
  out->sms = p.multiProcessorCount;
  out->free_bytes = fr;
  out->total_bytes = tot;
  int drv = 0, rt = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  out->driver_version = drv;
  out->runtime_version = rt;
  return 0;
}

extern "C" int comet_malloc(void** p, size_t bytes) {
  *p = nullptr;
  if (bytes == 0) bytes = 1;
  cudaError_t e = cudaMalloc(p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free allocation error
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    return set_error(COMET_ENOMEM, "out of GPU memory: asked for %.1f MiB, %.1f MiB free of %.1f MiB",
                     bytes / 1048576.0, fr / 1048576.0, tot / 1048576.0);
  }
  if (e != cudaSuccess) return set_error((int)e, "cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e));
  return 0;
}

extern "C" int comet_free(void* p) {
  COMET_TRY("cudaFree", cudaFree(p));
  return 0;
}

extern "C" int comet_memcpy_h2d(void* dst, const void* src_host, size_t bytes, void* stream) {
  COMET_TRY("upload", cudaMemcpyAsync(dst, src_host, bytes, cudaMemcpyHostToDevice, comet_ops::S(stream)));
  return 0;
}

extern "C" int comet_memcpy_d2h(void* dst_host, const void* src, size_t bytes, void* stream) {
  COMET_TRY("download", cudaMemcpyAsync(dst_host, src, bytes, cudaMemcpyDeviceToHost, comet_ops::S(stream)));
  COMET_TRY("download (stream sync)", cudaStreamSynchronize(comet_ops::S(stream)));
  return 0;
}

extern "C" int comet_memcpy_d2d(void* dst, const void* src, size_t bytes, void* stream) {
  COMET_TRY("copy", cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, comet_ops::S(stream)));
  return 0;
}

extern "C" int comet_memset(void* p, int value, size_t bytes, void* stream) {
  COMET_TRY("memset", cudaMemsetAsync(p, value, bytes, comet_ops::S(stream)));
  return 0;
}

extern "C" int comet_stream_create(void** out) {
  cudaStream_t s;
  COMET_TRY("cudaStreamCreate", cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  *out = s;
  return 0;
}
extern "C" int comet_stream_destroy(void* s) {
  COMET_TRY("cudaStreamDestroy", cudaStreamDestroy(comet_ops::S(s)));
  return 0;
}
extern "C" int comet_stream_sync(void* s) {
  COMET_TRY("stream sync", cudaStreamSynchronize(comet_ops::S(s)));
  return 0;
}

extern "C" int comet_graph_begin(void* stream) {
  COMET_TRY("graph capture begin", cudaStreamBeginCapture(comet_ops::S(stream), cudaStreamCaptureModeThreadLocal));
  return 0;
}
static int g_graph_kernels = 0;  // kernel nodes of the last graph captured
extern "C" int comet_graph_kernels(void) { return g_graph_kernels; }
extern "C" int comet_graph_end(void* stream, void** exec_out) {
  cudaGraph_t g;
  COMET_TRY("graph capture end", cudaStreamEndCapture(comet_ops::S(stream), &g));
  size_t n = 0;
  g_graph_kernels = 0;
  if (cudaGraphGetNodes(g, nullptr, &n) == cudaSuccess && n) {
    cudaGraphNode_t* nodes = new cudaGraphNode_t[n];
    cudaGraphNodeType type;
    if (cudaGraphGetNodes(g, nodes, &n) == cudaSuccess)
      for (size_t i = 0; i < n; i++) g_graph_kernels += cudaGraphNodeGetType(nodes[i], &type) == cudaSuccess && type == cudaGraphNodeTypeKernel;
    delete[] nodes;
  }
  cudaGraphExec_t x;
  cudaError_t e = cudaGraphInstantiate(&x, g, 0);
  cudaGraphDestroy(g);
  if (e != cudaSuccess) return set_error((int)e, "graph instantiate: %s", cudaGetErrorString(e));
  *exec_out = x;
  return 0;
}
extern "C" int comet_graph_launch(void* exec, void* stream) {
  COMET_TRY("graph launch", cudaGraphLaunch((cudaGraphExec_t)exec, comet_ops::S(stream)));
  return 0;
}
extern "C" int comet_graph_destroy(void* exec) {
  COMET_TRY("graph destroy", cudaGraphExecDestroy((cudaGraphExec_t)exec));
  return 0;
}
