// N-API binding (node-addon-api) of the C ABI in capi.h: device memory, the ops, the W4Ax GEMM, CUDA graphs.
// Device pointers cross into JS as numbers (exact: user-space addresses are < 2^53). Every function throws a JS
// Error whose message is comet_last_error() (or the CUDA error name) and whose `code` is 'COMET_ENOMEM',
// 'COMET_EINVAL' or 'CUDA_ERROR_<n>'. All work goes to one stream, created by init(); only download() and
// sync() wait for it. The TS side is backends/cuda/cuda.ts.
#define NAPI_CPP_EXCEPTIONS
#include <napi.h>

#include <string>

#include "capi.h"

namespace {

void* g_stream = nullptr;

[[noreturn]] void fail(Napi::Env env, int rc, const char* op) {
  const char* msg = comet_last_error();
  std::string m = std::string(op) + ": " + (msg && *msg ? msg : comet_error_string(rc));
  Napi::Error e = Napi::Error::New(env, m);
  e.Set("code", Napi::String::New(env, rc == COMET_ENOMEM   ? "COMET_ENOMEM"
                                       : rc == COMET_EINVAL ? "COMET_EINVAL"
                                                            : "CUDA_ERROR_" + std::to_string(rc)));
  throw e;
}

inline void check(Napi::Env env, int rc, const char* op) {
  if (rc != 0) fail(env, rc, op);
}

struct Args {
  const Napi::CallbackInfo& info;
  explicit Args(const Napi::CallbackInfo& i) : info(i) {}
  double num(size_t i) const {
    if (i >= info.Length() || !info[i].IsNumber())
      throw Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a number");
    return info[i].As<Napi::Number>().DoubleValue();
  }
  template <class T = void>
  T* ptr(size_t i) const { return (T*)(uintptr_t)num(i); }
  int i32(size_t i) const { return (int)num(i); }
  size_t sz(size_t i) const { return (size_t)num(i); }
};

Napi::Value ptrValue(Napi::Env env, const void* p) { return Napi::Number::New(env, (double)(uintptr_t)p); }

// ---- runtime -----------------------------------------------------------------------------------------------
Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int dev = info.Length() > 0 ? Args(info).i32(0) : 0;
  comet_clear_error();
  comet_device_facts f;
  check(env, comet_device_info(dev, &f), "device");
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", f.name);
  o.Set("count", f.count);
  o.Set("major", f.major);
  o.Set("minor", f.minor);
  o.Set("sms", f.sms);
  o.Set("freeBytes", (double)f.free_bytes);
  o.Set("totalBytes", (double)f.total_bytes);
  o.Set("driverVersion", f.driver_version);
  o.Set("runtimeVersion", f.runtime_version);
  return o;
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Value facts = DeviceInfo(info);
  if (!g_stream) check(env, comet_stream_create(&g_stream), "stream");
  return facts;
}

Napi::Value Malloc(const Napi::CallbackInfo& info) {
  void* p = nullptr;
  comet_clear_error();
  check(info.Env(), comet_malloc(&p, Args(info).sz(0)), "alloc");
  return ptrValue(info.Env(), p);
}

void Free(const Napi::CallbackInfo& info) { check(info.Env(), comet_free(Args(info).ptr(0)), "free"); }

/** upload(dst, view: TypedArray | DataView) */
void Upload(const Napi::CallbackInfo& info) {
  Args a(info);
  if (!info[1].IsTypedArray() && !info[1].IsDataView())
    throw Napi::TypeError::New(info.Env(), "upload: argument 1 must be a TypedArray");
  const uint8_t* src;
  size_t n;
  if (info[1].IsTypedArray()) {
    Napi::TypedArray t = info[1].As<Napi::TypedArray>();
    src = (const uint8_t*)t.ArrayBuffer().Data() + t.ByteOffset();
    n = t.ByteLength();
  } else {
    Napi::DataView d = info[1].As<Napi::DataView>();
    src = (const uint8_t*)d.ArrayBuffer().Data() + d.ByteOffset();
    n = d.ByteLength();
  }
  if (n) check(info.Env(), comet_memcpy_h2d(a.ptr(0), src, n, g_stream), "upload");
}

/** download(src, bytes) -> ArrayBuffer (waits for the stream) */
Napi::Value Download(const Napi::CallbackInfo& info) {
  Args a(info);
  const size_t n = a.sz(1);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(info.Env(), n);
  if (n) check(info.Env(), comet_memcpy_d2h(buf.Data(), a.ptr(0), n, g_stream), "download");
  return buf;
}

void Copy(const Napi::CallbackInfo& info) {
  Args a(info);
  check(info.Env(), comet_memcpy_d2d(a.ptr(0), a.ptr(1), a.sz(2), g_stream), "copy");
}
void Memset(const Napi::CallbackInfo& info) {
  Args a(info);
  check(info.Env(), comet_memset(a.ptr(0), a.i32(1), a.sz(2), g_stream), "memset");
}
void Sync(const Napi::CallbackInfo& info) { check(info.Env(), comet_stream_sync(g_stream), "sync"); }

void GraphBegin(const Napi::CallbackInfo& info) { check(info.Env(), comet_graph_begin(g_stream), "graph"); }
Napi::Value GraphEnd(const Napi::CallbackInfo& info) {
  void* x = nullptr;
  check(info.Env(), comet_graph_end(g_stream, &x), "graph");
  return ptrValue(info.Env(), x);
}
Napi::Value GraphKernels(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), comet_graph_kernels()); }
void GraphLaunch(const Napi::CallbackInfo& info) {
  check(info.Env(), comet_graph_launch(Args(info).ptr(0), g_stream), "graph");
}
void GraphDestroy(const Napi::CallbackInfo& info) {
  check(info.Env(), comet_graph_destroy(Args(info).ptr(0)), "graph");
}

// ---- W4Ax GEMM ---------------------------------------------------------------------------------------------
/** w4Create(codes, scales, N, Kp, B, K8) -> handle */
Napi::Value W4Create(const Napi::CallbackInfo& info) {
  Args a(info);
  comet_w4_weight* w = nullptr;
  comet_clear_error();
  check(info.Env(),
        comet_w4_create(a.ptr<uint8_t>(0), a.ptr<uint16_t>(1), a.i32(2), a.i32(3), a.i32(4), a.i32(5), &w, g_stream),
        "w4_create");
  return ptrValue(info.Env(), w);
}
void W4Destroy(const Napi::CallbackInfo& info) { comet_w4_destroy(Args(info).ptr<comet_w4_weight>(0)); }

/** gemmW4ax(a8, a4, sa, M, w, y, outF16) */
void GemmW4ax(const Napi::CallbackInfo& info) {
  Args a(info);
  comet_clear_error();
  check(info.Env(),
        comet_gemm_w4ax(a.ptr<int8_t>(0), a.ptr<uint8_t>(1), a.ptr<uint16_t>(2), a.i32(3), a.ptr<comet_w4_weight>(4),
                        a.ptr(5), a.i32(6), g_stream),
        "gemm_w4ax");
}

/** gemmW4axMany(a8, a4, sa, M, ws: number[], ys: number[], outF16): ys[i] = gemmW4ax(.., ws[i], ys[i], ..) */
void GemmW4axMany(const Napi::CallbackInfo& info) {
  Args a(info);
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[4].IsArray() || !info[5].IsArray())
    throw Napi::TypeError::New(env, "gemmW4axMany: arguments 4 and 5 must be arrays of pointers");
  Napi::Array wa = info[4].As<Napi::Array>(), ya = info[5].As<Napi::Array>();
  const uint32_t n = wa.Length();
  if (n < 1 || n > 4 || ya.Length() != n)
    throw Napi::TypeError::New(env, "gemmW4axMany: 1..4 weights and as many outputs");
  const comet_w4_weight* ws[4];
  void* ys[4];
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value w = wa[i], y = ya[i];
    if (!w.IsNumber() || !y.IsNumber()) throw Napi::TypeError::New(env, "gemmW4axMany: pointers must be numbers");
    ws[i] = (const comet_w4_weight*)(uintptr_t)w.As<Napi::Number>().DoubleValue();
    ys[i] = (void*)(uintptr_t)y.As<Napi::Number>().DoubleValue();
  }
  comet_clear_error();
  check(env,
        comet_gemm_w4ax_many(a.ptr<int8_t>(0), a.ptr<uint8_t>(1), a.ptr<uint16_t>(2), a.i32(3), ws, ys, (int)n,
                             a.i32(6), g_stream),
        "gemm_w4ax_many");
}

/** gemmSchedule(N, Kp, B, K8) -> Int32Array of [b0, b1) pairs */
Napi::Value GemmSchedule(const Napi::CallbackInfo& info) {
  Args a(info);
  int ranges[2 * 1024];
  comet_clear_error();
  const int n = comet_gemm_w4ax_schedule(a.i32(0), a.i32(1), a.i32(2), a.i32(3), ranges, 1024);
  if (n < 0) fail(info.Env(), n, "gemm_w4ax_schedule");
  Napi::Int32Array out = Napi::Int32Array::New(info.Env(), 2 * n);
  for (int i = 0; i < 2 * n; i++) out[i] = ranges[i];
  return out;
}
void GemmForce(const Napi::CallbackInfo& info) {
  check(info.Env(), comet_gemm_w4ax_force(Args(info).i32(0)), "gemm_w4ax_force");
}

// ---- ops ---------------------------------------------------------------------------------------------------
#define OP(name, call)                                \
  void name(const Napi::CallbackInfo& info) {         \
    Args a(info);                                     \
    comet_clear_error();                              \
    check(info.Env(), call, #name);                   \
  }

// embed(table, D, tokens, T, out)
OP(Embed, comet_embed_f32(a.ptr<float>(0), a.i32(1), a.ptr<int32_t>(2), a.i32(3), a.ptr<float>(4), g_stream))
OP(EmbedF16, comet_embed_f16(a.ptr<uint16_t>(0), a.i32(1), a.ptr<int32_t>(2), a.i32(3), a.ptr<float>(4), g_stream))
// rmsnorm(x, w, T, C, eps, out)
OP(Rmsnorm, comet_rmsnorm_f32(a.ptr<float>(0), a.ptr<float>(1), a.i32(2), a.i32(3), a.num(4), a.ptr<float>(5), g_stream))
// addRmsnorm(x, y, w, T, C, eps, sum, out)
OP(AddRmsnorm, comet_add_rmsnorm_f32(a.ptr<float>(0), a.ptr<float>(1), a.ptr<float>(2), a.i32(3), a.i32(4), a.num(5),
                                     a.ptr<float>(6), a.ptr<float>(7), g_stream))
// add(a, b, n, out)
OP(Add, comet_add_f32(a.ptr<float>(0), a.ptr<float>(1), a.sz(2), a.ptr<float>(3), g_stream))
// siluMul(g, u, n, out)
OP(SiluMul, comet_silu_mul_f32(a.ptr<float>(0), a.ptr<float>(1), a.sz(2), a.ptr<float>(3), g_stream))
// rope(x, T, nHeads, headDim, pos, freqs, out)
OP(Rope, comet_rope_f32(a.ptr<float>(0), a.i32(1), a.i32(2), a.i32(3), a.ptr<int32_t>(4), a.ptr<float>(5),
                        a.ptr<float>(6), g_stream))
// gemmF32(x, T, K, w, N, y)
OP(GemmF32, comet_gemm_f32(a.ptr<float>(0), a.i32(1), a.i32(2), a.ptr<float>(3), a.i32(4), a.ptr<float>(5), g_stream))
OP(GemmF16w, comet_gemm_f16w(a.ptr<float>(0), a.i32(1), a.i32(2), a.ptr<uint16_t>(3), a.i32(4), a.ptr<float>(5), g_stream))
// rows(x, C, rows, R, out)
OP(Rows, comet_rows_f32(a.ptr<float>(0), a.i32(1), a.ptr<int32_t>(2), a.i32(3), a.ptr<float>(4), g_stream))
// argmax(x, R, C, out)
OP(Argmax, comet_argmax_f32(a.ptr<float>(0), a.i32(1), a.i32(2), a.ptr<int32_t>(3), g_stream))
// topk(x, R, C, k, vals, idx)
OP(Topk, comet_topk_f32(a.ptr<float>(0), a.i32(1), a.i32(2), a.i32(3), a.ptr<float>(4), a.ptr<int32_t>(5), g_stream))
// quantizeAct(x, T, K, B, Kp, K8, perm, a8, a4, sa)
OP(QuantizeAct, comet_quantize_act(a.ptr<float>(0), a.i32(1), a.i32(2), a.i32(3), a.i32(4), a.i32(5),
                                   a.ptr<int32_t>(6), a.ptr<int8_t>(7), a.ptr<uint8_t>(8), a.ptr<uint16_t>(9), g_stream))
// rmsnormQuant(x, w, T, eps, K, B, Kp, K8, perm, a8, a4, sa)
OP(RmsnormQuant, comet_rmsnorm_quant(a.ptr<float>(0), a.ptr<float>(1), a.i32(2), a.num(3), a.i32(4), a.i32(5),
                                     a.i32(6), a.i32(7), a.ptr<int32_t>(8), a.ptr<int8_t>(9), a.ptr<uint8_t>(10),
                                     a.ptr<uint16_t>(11), g_stream))
// addRmsnormQuant(x, y, w, T, eps, K, B, Kp, K8, perm, sum, a8, a4, sa)
OP(AddRmsnormQuant, comet_add_rmsnorm_quant(a.ptr<float>(0), a.ptr<float>(1), a.ptr<float>(2), a.i32(3), a.num(4),
                                           a.i32(5), a.i32(6), a.i32(7), a.i32(8), a.ptr<int32_t>(9), a.ptr<float>(10),
                                           a.ptr<int8_t>(11), a.ptr<uint8_t>(12), a.ptr<uint16_t>(13), g_stream))
// siluMulQuant(g, u, T, K, B, Kp, K8, perm, a8, a4, sa)
OP(SiluMulQuant, comet_silu_mul_quant(a.ptr<float>(0), a.ptr<float>(1), a.i32(2), a.i32(3), a.i32(4), a.i32(5),
                                      a.i32(6), a.ptr<int32_t>(7), a.ptr<int8_t>(8), a.ptr<uint8_t>(9),
                                      a.ptr<uint16_t>(10), g_stream))

// step and geometry arguments: (pos, seq, bt, btOff, T) and (nKvHeads, headDim, pageSize, group)
comet_step stepAt(const Args& a, size_t i) {
  return comet_step{a.ptr<int32_t>(i), a.ptr<int32_t>(i + 1), a.ptr<int32_t>(i + 2), a.ptr<int32_t>(i + 3), a.i32(i + 4)};
}
comet_kv_geom geomAt(const Args& a, size_t i) { return comet_kv_geom{a.i32(i), a.i32(i + 1), a.i32(i + 2), a.i32(i + 3)}; }

// kvAppendF32(kc, vc, k, v, step x5, geom x4)
OP(KvAppendF32, comet_kv_append_f32(a.ptr<float>(0), a.ptr<float>(1), a.ptr<float>(2), a.ptr<float>(3), stepAt(a, 4),
                                    geomAt(a, 9), g_stream))
// kvAppendKv4(cache, k, v, step x5, geom x4)
OP(KvAppendKv4, comet_kv_append_kv4(a.ptr<uint8_t>(0), a.ptr<float>(1), a.ptr<float>(2), stepAt(a, 3), geomAt(a, 8),
                                    g_stream))
// ropeKvAppendF32(kc, vc, q, k, v, nHeads, freqs, qOut, step x5, geom x4)
OP(RopeKvAppendF32, comet_rope_kv_append_f32(a.ptr<float>(0), a.ptr<float>(1), a.ptr<float>(2), a.ptr<float>(3),
                                             a.ptr<float>(4), a.i32(5), a.ptr<float>(6), a.ptr<float>(7), stepAt(a, 8),
                                             geomAt(a, 13), g_stream))
// ropeKvAppendKv4(cache, q, k, v, nHeads, freqs, qOut, step x5, geom x4)
OP(RopeKvAppendKv4, comet_rope_kv_append_kv4(a.ptr<uint8_t>(0), a.ptr<float>(1), a.ptr<float>(2), a.ptr<float>(3),
                                             a.i32(4), a.ptr<float>(5), a.ptr<float>(6), stepAt(a, 7), geomAt(a, 12),
                                             g_stream))
// attentionF32(q, kc, vc, step x5, geom x4, nHeads, maxLen, ws, out)
OP(AttentionF32, comet_attention_f32(a.ptr<float>(0), a.ptr<float>(1), a.ptr<float>(2), stepAt(a, 3), geomAt(a, 8),
                                     a.i32(12), a.i32(13), a.ptr(14), a.ptr<float>(15), g_stream))
// attentionKv4(q, cache, step x5, geom x4, nHeads, maxLen, ws, out)
OP(AttentionKv4, comet_attention_kv4(a.ptr<float>(0), a.ptr<uint8_t>(1), stepAt(a, 2), geomAt(a, 7), a.i32(11),
                                     a.i32(12), a.ptr(13), a.ptr<float>(14), g_stream))

// GPTQ (cuda/quant_gptq.cu). gptqHessianAdd(x, T, K, H)
OP(GptqHessianAdd, comet_gptq_hessian_add(a.ptr<float>(0), a.i32(1), a.i32(2), a.ptr<double>(3), g_stream))
// gptqPermute(H, K, Kp, perm, scale, damp, P)
OP(GptqPermute, comet_gptq_permute(a.ptr<double>(0), a.i32(1), a.i32(2), a.ptr<int32_t>(3), a.ptr<double>(4), a.num(5), a.ptr<double>(6), g_stream))
// gptqInvCholUpper(P, n, U)  (waits for the stream)
OP(GptqInvCholUpper, comet_gptq_inv_chol_upper(a.ptr<double>(0), a.i32(1), a.ptr<double>(2), g_stream))
// gptqQuantize(w, N, K, Kp, B, perm, U, grid, codes, scales)
OP(GptqQuantize, comet_gptq_quantize(a.ptr<float>(0), a.i32(1), a.i32(2), a.i32(3), a.i32(4), a.ptr<int32_t>(5),
                                     a.ptr<double>(6), a.i32(7), a.ptr<int8_t>(8), a.ptr<uint16_t>(9), g_stream))

/** hostAlloc(bytes) -> ArrayBuffer over page-locked memory (uploads from it can be captured in a graph) */
Napi::Value HostAlloc(const Napi::CallbackInfo& info) {
  void* p = nullptr;
  const size_t n = Args(info).sz(0);
  comet_clear_error();
  check(info.Env(), comet_host_alloc(&p, n), "hostAlloc");
  return Napi::ArrayBuffer::New(info.Env(), p, n);
}

// profSpin(us), profMark(), profRead() -> Float32Array of mark-pair times (ms)
OP(ProfSpin, comet_prof_spin(g_stream, a.i32(0)))
void ProfMark(const Napi::CallbackInfo& info) { check(info.Env(), comet_prof_mark(g_stream), "prof"); }
Napi::Value ProfRead(const Napi::CallbackInfo& info) {
  static float ms[1 << 13];
  const int n = comet_prof_read(ms, 1 << 13);
  if (n < 0) fail(info.Env(), n, "prof");
  Napi::Float32Array out = Napi::Float32Array::New(info.Env(), n);
  for (int i = 0; i < n; i++) out[i] = ms[i];
  return out;
}

Napi::Value AttentionWorkspace(const Napi::CallbackInfo& info) {
  Args a(info);
  return Napi::Number::New(info.Env(), (double)comet_attention_workspace(a.i32(0), a.i32(1), a.i32(2), a.i32(3)));
}

Napi::Object Module(Napi::Env env, Napi::Object exports) {
#define EXPORT(js, fn) exports.Set(js, Napi::Function::New(env, fn, js))
  EXPORT("init", Init);
  EXPORT("deviceInfo", DeviceInfo);
  EXPORT("malloc", Malloc);
  EXPORT("free", Free);
  EXPORT("upload", Upload);
  EXPORT("download", Download);
  EXPORT("copy", Copy);
  EXPORT("memset", Memset);
  EXPORT("sync", Sync);
  EXPORT("graphBegin", GraphBegin);
  EXPORT("graphEnd", GraphEnd);
  EXPORT("graphLaunch", GraphLaunch);
  EXPORT("graphKernels", GraphKernels);
  EXPORT("graphDestroy", GraphDestroy);
  EXPORT("w4Create", W4Create);
  EXPORT("w4Destroy", W4Destroy);
  EXPORT("gemmW4ax", GemmW4ax);
  EXPORT("gemmW4axMany", GemmW4axMany);
  EXPORT("gemmSchedule", GemmSchedule);
  EXPORT("gemmForce", GemmForce);
  EXPORT("embed", Embed);
  EXPORT("embedF16", EmbedF16);
  EXPORT("rmsnorm", Rmsnorm);
  EXPORT("add", Add);
  EXPORT("siluMul", SiluMul);
  EXPORT("rope", Rope);
  EXPORT("gemmF32", GemmF32);
  EXPORT("gemmF16w", GemmF16w);
  EXPORT("rows", Rows);
  EXPORT("argmax", Argmax);
  EXPORT("topk", Topk);
  EXPORT("quantizeAct", QuantizeAct);
  EXPORT("rmsnormQuant", RmsnormQuant);
  EXPORT("addRmsnorm", AddRmsnorm);
  EXPORT("addRmsnormQuant", AddRmsnormQuant);
  EXPORT("ropeKvAppendF32", RopeKvAppendF32);
  EXPORT("ropeKvAppendKv4", RopeKvAppendKv4);
  EXPORT("siluMulQuant", SiluMulQuant);
  EXPORT("kvAppendF32", KvAppendF32);
  EXPORT("kvAppendKv4", KvAppendKv4);
  EXPORT("attentionF32", AttentionF32);
  EXPORT("attentionKv4", AttentionKv4);
  EXPORT("attentionWorkspace", AttentionWorkspace);
  EXPORT("profSpin", ProfSpin);
  EXPORT("hostAlloc", HostAlloc);
  EXPORT("profMark", ProfMark);
  EXPORT("profRead", ProfRead);
  EXPORT("gptqHessianAdd", GptqHessianAdd);
  EXPORT("gptqPermute", GptqPermute);
  EXPORT("gptqInvCholUpper", GptqInvCholUpper);
  EXPORT("gptqQuantize", GptqQuantize);
#undef EXPORT
  return exports;
}

}  // namespace

NODE_API_MODULE(comet_cuda, Module)
