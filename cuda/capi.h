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
// sa must be 4-byte aligned (a contract kept from v7, which copied it in 4-byte words).
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

/** Y = A · W^T with the FMPQ epilogue. Chooses the decode kernel (M <= 32; M <= 64 with B != 128, or with B = 128
 *  and N <= 10240, Kp <= 8192) or a tiled kernel (otherwise: on sm_90+ with B = 128 the tiled kernel v5, else v4 /
 *  the sm_80 path). The split-K kernels share workspaces per process: run W4Ax GEMMs of one process on one stream
 *  (or serialize them). */
int comet_gemm_w4ax(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M, const comet_w4_weight* w,
                    void* y, int out_f16, void* stream);

/** Several weights against one activation: ys[i] = comet_gemm_w4ax(a8, a4, sa, M, ws[i], ys[i], ..) bit for bit, for
 *  n = 1..4 weights of the same Kp, B and K8 (N may differ: q/k/v, gate/up). Where every weight's variant is the
 *  decode kernel, ONE launch covers all n problems, each with the split-K slices it gets alone (so
 *  comet_gemm_w4ax_schedule per weight stays the schedule) and its own workspace region, unless every weight
 *  already fills a wave alone with long CTAs (large gate/up: measured slower grouped). Otherwise (tiled kernels, those
 *  large weights, a group whose workspaces do not fit the reserved one at M = 33..64) one launch per weight. */
int comet_gemm_w4ax_many(const int8_t* a8, const uint8_t* a4, const uint16_t* sa, int M,
                         const comet_w4_weight* const* ws, void* const* ys, int n, int out_f16, void* stream);

/** How comet_gemm_w4ax_many launches (for benchmarks; the outputs are the same in every mode): 0 auto (above),
 *  1 one launch wherever every weight is on the decode kernel, 2 one launch per weight. Process-wide. */
int comet_gemm_w4ax_group_mode(int mode);

/** The partial-sum schedule of every W4Ax GEMM against an (N, Kp, B, K8) weight on the current device: n_splits
 *  ranges of B-blocks [ranges[2i], ranges[2i+1]), each summed from +0 in ascending block order, then added in index
 *  order (sum = +0; sum = f32(sum + partial_i)). Returns n_splits (<= max_splits) or a negative error. It depends on
 *  the weight's shape and the SM count only, never on M or the kernel variant, so a row's output bits do not depend
 *  on how many tokens share the GEMM. The rule: k-tile-aligned slices (slice k = k-tiles [k*T/KS, (k+1)*T/KS)), KS
 *  = the decode kernel's one-wave split at 9 <= M <= 16 (3 CTAs per SM; schedule_slices, cuda/gemm_w4ax_decode.cuh). */
int comet_gemm_w4ax_schedule(int N, int Kp, int B, int K8, int* ranges_host, int max_splits);

/** Force a kernel variant for tests/benchmarks: 0 auto, 1 decode GEMV (M <= 64 only), 2 prefill v4 (s8 mma.sync),
 *  3 prefill sm_80 path (s4 mma for W4A4 blocks when B >= 64, s8 otherwise; emulated but exact on sm_90),
 *  6 v8 (warp-specialized wgmma, sm_90a, B = 128, any M; runs 2 elsewhere). 4 and 5 (v5, v6) are in cuda/lab/.
 *  Auto: 1 for M <= 16; 6 on sm_90 with B = 128; otherwise 1 (M <= 64), 2 (sm_90+) or 3 (sm_80). Process-wide. */
int comet_gemm_w4ax_force(int variant);

// Other ops (embed, rmsnorm_quant, silu_mul_quant, rope, kv_append, attention, ...) are declared below by
// cuda/ops*.cu.


// ---- runtime (cuda/ops_runtime.cu) -----------------------------------------------------------------------
#define COMET_EINVAL (-1)  // bad argument (message says which)
#define COMET_ENOMEM (-2)  // out of GPU memory (message says how much was asked and is free)

void comet_clear_error(void);
/** A short text for a return code (a cudaError_t name for codes > 0). */
const char* comet_error_string(int code);

typedef struct {
  char name[256];
  int count;  // CUDA devices visible
  int major, minor, sms;
  size_t free_bytes, total_bytes;
  int driver_version, runtime_version;
} comet_device_facts;
/** Select `device` and describe it. Fails with the driver's message when there is no driver or no GPU. */
int comet_device_info(int device, comet_device_facts* out);

int comet_malloc(void** p, size_t bytes);  // COMET_ENOMEM when the GPU is full
int comet_free(void* p);
int comet_memcpy_h2d(void* dst, const void* src_host, size_t bytes, void* stream);  // async (pageable: staged)
int comet_memcpy_d2h(void* dst_host, const void* src, size_t bytes, void* stream);  // waits for the stream
int comet_memcpy_d2d(void* dst, const void* src, size_t bytes, void* stream);
int comet_memset(void* p, int value, size_t bytes, void* stream);
int comet_stream_create(void** out);
int comet_stream_destroy(void* s);
int comet_stream_sync(void* s);
/** CUDA graphs: capture the work enqueued on `stream` between begin and end, replay it with launch. */
int comet_graph_begin(void* stream);
int comet_graph_end(void* stream, void** exec_out);
/** Kernel launches (kernel nodes) of the graph comet_graph_end last made. */
int comet_graph_kernels(void);
int comet_graph_launch(void* exec, void* stream);
int comet_graph_destroy(void* exec);

// ---- float ops (cuda/ops_float.cu). x [T][C] row-major f32; w [N][K] ([out, in]) -------------------------
/** out [T][D] = table[tokens[t]] ; tokens [T] device int32, already checked to be < V */
int comet_embed_f32(const float* table, int D, const int32_t* tokens, int T, float* out, void* stream);
/** comet_embed_f32 with an f16 table [V][D] (bits; rows widened to f32, exactly). */
int comet_embed_f16(const uint16_t* table, int D, const int32_t* tokens, int T, float* out, void* stream);
/** llama2.c RMSNorm: ss = sum x^2 (f64); out = w * (x / sqrt(ss/C + eps)), f64 math, f32 store */
int comet_rmsnorm_f32(const float* x, const float* w, int T, int C, double eps, float* out, void* stream);
int comet_add_f32(const float* a, const float* b, size_t n, float* out, void* stream);
/** The residual add folded into the norm, one launch: sum [T][C] = x + y (f32, as comet_add_f32) and out =
 *  comet_rmsnorm_f32 of sum, bit for bit the two ops. */
int comet_add_rmsnorm_f32(const float* x, const float* y, const float* w, int T, int C, double eps, float* sum,
                          float* out, void* stream);
/** out = silu(g) * u, f64 math as the simulator */
int comet_silu_mul_f32(const float* g, const float* u, size_t n, float* out, void* stream);
/** interleaved RoPE: pairs (2i, 2i+1) of each head of x [T][n_heads*head_dim] rotated by pos[t]*freqs[i] */
int comet_rope_f32(const float* x, int T, int n_heads, int head_dim, const int32_t* pos, const float* freqs,
                   float* out, void* stream);
/** y [T][N] = x [T][K] . w [N][K]^T, products and sums in f64 (the simulator's order up to f64 rounding) */
int comet_gemm_f32(const float* x, int T, int K, const float* w, int N, float* y, void* stream);
/** y = x . w^T with f16 weights w [N][K] (bits): tensor cores, x as f16 hi + lo, f32 accumulation over k ascending in
 *  fixed k16 steps (K % 32 == 0; else the f64 GEMV), one kernel for every T: a row's result does not depend on T. */
int comet_gemm_f16w(const float* x, int T, int K, const uint16_t* w, int N, float* y, void* stream);
/** out [R][C] = x[rows[r]]; rows device int32 */
int comet_rows_f32(const float* x, int C, const int32_t* rows, int R, float* out, void* stream);
/** out [R] = first index of the maximum of each row of x [R][C] */
int comet_argmax_f32(const float* x, int R, int C, int32_t* out, void* stream);
/** x [R][C] f32 -> per row the k largest (1 <= k <= min(C, 1024)), value descending then index ascending (-0 = +0):
 *  vals [R][k] f32, idx [R][k] int32 (simulator/kernels/float.ts topk). */
int comet_topk_f32(const float* x, int R, int C, int k, float* vals, int32_t* idx, void* stream);
/** Op profiler (cuda/ops_float.cu): a spin kernel of `us` µs; an event mark; the elapsed ms of mark pairs
 *  (0,1), (2,3), ... (waits; returns the pair count and forgets the marks). */
int comet_prof_spin(void* stream, int us);
int comet_prof_mark(void* stream);
int comet_prof_read(float* ms, int max);
/** Page-locked host memory (never freed; for the fixed step buffers of captured CUDA graphs). */
int comet_host_alloc(void** p, size_t bytes);

// ---- FMPQ activation quantizers (cuda/ops_quant.cu), DESIGN §3.2 ------------------------------------------
// Output: a8 int8 [T][K8] | a4 int4x2 [T][(Kp-K8)/2] | sa f16 [T][Kp/B]; perm [K] device int32 or NULL.
int comet_quantize_act(const float* x, int T, int K, int B, int Kp, int K8, const int32_t* perm, int8_t* a8,
                       uint8_t* a4, uint16_t* sa, void* stream);
/** rmsnorm (as comet_rmsnorm_f32, rounded to f32), then quantize_act of the result (C = K) */
int comet_rmsnorm_quant(const float* x, const float* w, int T, double eps, int K, int B, int Kp, int K8,
                        const int32_t* perm, int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream);
/** sum [T][K] = x + y (as comet_add_f32), then comet_rmsnorm_quant of sum, bit for bit, in one launch */
int comet_add_rmsnorm_quant(const float* x, const float* y, const float* w, int T, double eps, int K, int B, int Kp,
                            int K8, const int32_t* perm, float* sum, int8_t* a8, uint8_t* a4, uint16_t* sa,
                            void* stream);
/** silu(g)*u (as comet_silu_mul_f32, rounded to f32), then quantize_act */
int comet_silu_mul_quant(const float* g, const float* u, int T, int K, int B, int Kp, int K8, const int32_t* perm,
                         int8_t* a8, uint8_t* a4, uint16_t* sa, void* stream);

// ---- paged KV cache and attention (cuda/ops_kv.cu, cuda/ops_attention.cu), DESIGN §3.5 ---------------------
/** Where each token of a step goes. pos, seq [T]; block table of sequence s: bt[bt_off[s] ...]. Device int32. */
typedef struct {
  const int32_t* pos;
  const int32_t* seq;
  const int32_t* bt;
  const int32_t* bt_off;
  int T;
} comet_step;
/** Cache geometry. f32: k and v are separate [num_pages][n_kv_heads][P][head_dim] f32 (per layer).
 *  kv4: one buffer [num_pages][n_kv_heads][head_bytes] (per layer), each (page, head) chunk holding
 *  kCodes u4x2 [P][hd/2] | vCodes u4x2 [P][hd/2] | kSZ f16 [P][hd/G][2] | vSZ f16 [P][hd/G][2] (simulator/kv4.ts). */
typedef struct {
  int n_kv_heads, head_dim, page_size, group;
} comet_kv_geom;
int comet_kv_append_f32(float* kc, float* vc, const float* k, const float* v, comet_step st, comet_kv_geom g,
                        void* stream);
int comet_kv_append_kv4(uint8_t* cache, const float* k, const float* v, comet_step st, comet_kv_geom g, void* stream);
/** RoPE folded into the append, one launch: q_out [T][n_heads*hd] = comet_rope_f32(q), and comet_kv_append_* of
 *  (comet_rope_f32(k), v), bit for bit those three ops (k, v [T][n_kv_heads*hd]; freqs [hd/2] as comet_rope_f32). */
int comet_rope_kv_append_f32(float* kc, float* vc, const float* q, const float* k, const float* v, int n_heads,
                             const float* freqs, float* q_out, comet_step st, comet_kv_geom g, void* stream);
int comet_rope_kv_append_kv4(uint8_t* cache, const float* q, const float* k, const float* v, int n_heads,
                             const float* freqs, float* q_out, comet_step st, comet_kv_geom g, void* stream);
/** Bytes of workspace attention needs for T tokens, n_heads heads, positions up to max_len (f32 or kv4 cache). */
size_t comet_attention_workspace(int T, int n_heads, int head_dim, int max_len);
/** out [T][n_heads*hd] = softmax(q k^T / sqrt(hd)) v over positions 0..pos[t] of the token's sequence, GQA.
 *  Split over the sequence (flash-decoding): partial (max, sum, acc) per split in `ws`, then one combine. */
int comet_attention_f32(const float* q, const float* kc, const float* vc, comet_step st, comet_kv_geom g,
                        int n_heads, int max_len, void* ws, float* out, void* stream);
/** KV4: the contract of simulator/kernels/attention_kv4.ts (DESIGN §3.5.1), bit for bit: q as INT8 per (token,
 *  head), integer q·k and P·V, chunks of 64 keys, segments of 128 (cuda/ops_attention.cu). */
int comet_attention_kv4(const float* q, const uint8_t* cache, comet_step st, comet_kv_geom g, int n_heads,
                        int max_len, void* ws, float* out, void* stream);

// ---- GPTQ (cuda/quant_gptq.cu): src/quant/gptq.ts and calibrate.ts in the same f64 operations and order ----
/** H [K][K] f64 += f32(X^T X) for x [T][K] f32, each element as simulator/kernels/float.ts matmul sums it (even-t
 *  and odd-t sums in ascending t, then their sum rounded to f32): calibrate.ts accumulate of one window. */
int comet_gptq_hessian_add(const float* x, int T, int K, double* H, void* stream);
/** P [Kp][Kp] = gptq.ts permutedHessian(H [K][K], {K, Kp, perm}, damp); perm [K] device int32 or NULL. */
int comet_gptq_permute(const double* H, int K, int Kp, const int32_t* perm, const double* scale, double damp, double* P, void* stream);
/** U [n][n] = gptq.ts invCholUpper(P) (upper factor of P^-1). Allocates 2·n²·8 bytes of workspace; waits for the
 *  stream. COMET_EINVAL naming the pivot when P is not positive definite. */
int comet_gptq_inv_chol_upper(const double* P, int n, double* U, void* stream);
/** gptq.ts gptqW4: w [N][K] f32 (original column order, gathered by perm [K] device int32 or NULL), U [Kp][Kp]
 *  -> codes int8 [N][Kp] (-8..7, padding 0), scales f16 bits [N][Kp/B]; clip search over `grid` points (<= 32); B in {32, 64, 128}. Allocates (N·Kp + N·B)·8
 *  bytes of f64 rows and errors; waits for the stream. */
int comet_gptq_quantize(const float* w, int N, int K, int Kp, int B, const int32_t* perm, const double* U, int grid,
                        int8_t* codes, uint16_t* scales, void* stream);

#ifdef __cplusplus
}  // extern "C"
#endif
