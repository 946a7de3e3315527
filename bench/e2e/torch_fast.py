"""The baselines a performance-minded PyTorch user would run instead of COMET (issue 16), same GPU, same call.

A compact LLaMA of our own (gpt-fast style), random weights of a named shape, in three precisions:
  fp16  FP16 weights and activations, F.linear (cuBLAS)
  int4  weight-only INT4, group 128: torch._weight_int4pack_mm (tinygemm, what gpt-fast and torchao int4wo
        use), bf16 activations
  fp8   FP8 e4m3 weights and activations, per-tensor scales (activations: dynamic amax), torch._scaled_mm,
        bf16 out
Every variant: static KV cache [L][slots][KVH][max_len][hd] (fp16 / bf16), RoPE, GQA attention through
F.scaled_dot_product_attention (decode: the G query heads of one KV head as G query rows over that head's cache,
so K/V are read once with a key mask; prefill: causal SDPA over K/V heads repeated for GQA), SwiGLU; the decode step (embed ->
layers -> norm -> head -> argmax) replayed as ONE CUDA graph per batch size; the decoder layer compiled with
torch.compile (inductor, batch dimension dynamic: one compile per precision) where --compile names the
precision, else eager inside the graph. A compile that fails falls back to eager and says so in the JSON.
Measures per variant: (a) decode step at batch B, context ctx; (c) TTFT of one in_len prompt (eager prefill, causal
SDPA, logits of the last token); (b) a max-throughput run: --requests prompts of in_len tokens, out_len greedy
tokens each, through a simple batched loop (prompts prefilled together in chunks of <= --prefill-tokens tokens,
then the whole batch decoded step by step as graph replays), timed end to end.
Copy bandwidth (read + write) measured first, for every roofline of the call. Each measurement is guarded: a
failure is recorded with its message and the run goes on. Prints one JSON object (last line of stdout) and
rewrites --partial after each measurement.

  python3 bench/e2e/torch_fast.py --shape llama3-8b --batches 1,16,64,256 --ctx 1024 --requests 256
"""
import argparse, gc, json, math, os, sys, time, traceback
import torch
import torch.nn.functional as F

SHAPES = {
    "llama3-8b": dict(dim=4096, hidden=14336, layers=32, heads=32, kv_heads=8, vocab=128256),
    "llama3-70b": dict(dim=8192, hidden=28672, layers=80, heads=64, kv_heads=8, vocab=128256),
}
GROUP = 128  # INT4 group size along K
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, file=sys.stderr, flush=True)


def shape_of(name):
    if name in SHAPES:
        return dict(SHAPES[name])
    j = json.load(open(name))  # a COMET LlamaConfig JSON
    return dict(dim=j["dim"], hidden=j["hiddenDim"], layers=j["nLayers"], heads=j["nHeads"], kv_heads=j["nKvHeads"], vocab=j["vocabSize"])


def timed(fn, warm=3, iters=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2]


# ---- linear layers of the three precisions (weights random: speed does not depend on the values) ----
class LinFP16:
    def __init__(self, n, k, dtype):
        self.w = (torch.randn(n, k, device="cuda", dtype=dtype) * k ** -0.5)
        self.bytes = self.w.numel() * 2

    @property
    def args(self):
        return (self.w,)

    @staticmethod
    def apply(x, w):
        return F.linear(x, w)

    def __call__(self, x):
        return self.apply(x, *self.args)


class LinInt4:
    def __init__(self, n, k, dtype):
        packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, device="cuda")
        self.w = torch.ops.aten._convert_weight_to_int4pack(packed, 8)  # inner_k_tiles 8 (gpt-fast's default)
        sz = torch.empty(k // GROUP, n, 2, dtype=torch.bfloat16, device="cuda")
        sz[..., 0].uniform_(0.001, 0.01); sz[..., 1].zero_()
        self.sz = sz
        self.bytes = n * k // 2 + sz.numel() * 2

    @property
    def args(self):
        return (self.w, self.sz)

    @staticmethod
    def apply(x, w, sz):
        sh = x.shape
        y = torch.ops.aten._weight_int4pack_mm(x.reshape(-1, sh[-1]), w, GROUP, sz)
        return y.reshape(*sh[:-1], sz.shape[1])

    def __call__(self, x):
        return self.apply(x, *self.args)


class LinFP8:
    def __init__(self, n, k, dtype):
        self.w = (torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.05).to(torch.float8_e4m3fn)
        self.sw = torch.tensor(0.02, device="cuda", dtype=torch.float32)
        self.bytes = n * k

    @property
    def args(self):
        return (self.w, self.sw)

    def __call__(self, x):
        return self.apply(x, *self.args)

    @staticmethod
    def apply(x, w, sw):
        sh = x.shape
        x2 = x.reshape(-1, sh[-1])
        m = x2.shape[0]
        pad = (-m) % 16  # _scaled_mm wants rows in multiples of 16 on some versions: pad (decode B=1 -> 16 rows)
        if pad:
            x2 = F.pad(x2, (0, 0, 0, pad))
        sa = (x2.abs().amax().float() / 448.0).clamp(min=1e-12)
        xq = (x2 / sa.to(x2.dtype)).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, w.t(), scale_a=sa, scale_b=sw, out_dtype=torch.bfloat16)
        if pad:
            y = y[:m]
        return y.reshape(*sh[:-1], w.shape[0])


LINEARS = {"fp16": (LinFP16, torch.float16), "int4": (LinInt4, torch.bfloat16), "fp8": (LinFP8, torch.bfloat16)}


def rms(x, w, eps=1e-5):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def rope(x, cos, sin):
    # x [B, T, h, hd]; cos/sin [B or 1, T, 1, hd/2] (half-split rotation, as HF LLaMA)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h].float(), x[..., h:].float()
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(x.dtype)


class Llama:
    """The model and its static cache of `slots` sequences x `max_len` positions."""

    def __init__(self, s, kind, slots, max_len):
        Lin, dt = LINEARS[kind]
        torch.manual_seed(0)
        self.s, self.kind, self.dt = s, kind, dt
        d, hd = s["dim"], s["dim"] // s["heads"]
        self.hd, self.H, self.KVH = hd, s["heads"], s["kv_heads"]
        self.embed = torch.randn(s["vocab"], d, device="cuda", dtype=dt) * 0.05
        self.layers = []
        for _ in range(s["layers"]):
            self.layers.append(dict(
                an=torch.ones(d, device="cuda", dtype=dt), fn=torch.ones(d, device="cuda", dtype=dt),
                wqkv=Lin((self.H + 2 * self.KVH) * hd, d, dt), wo=Lin(d, self.H * hd, dt),
                w13=Lin(2 * s["hidden"], d, dt), w2=Lin(d, s["hidden"], dt)))
        self.norm = torch.ones(d, device="cuda", dtype=dt)
        self.out = LinFP16(s["vocab"], d, dt)  # the classifier stays 16-bit in every variant (as gpt-fast does)
        self.weight_bytes = sum(L[k].bytes for L in self.layers for k in ("wqkv", "wo", "w13", "w2")) + self.out.bytes
        self.alloc_cache(slots, max_len)
        inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device="cuda").float() / hd))
        ang = torch.outer(torch.arange(8192, device="cuda").float(), inv)
        self.cos, self.sin = ang.cos(), ang.sin()
        self.lin = Lin.apply
        self.layer_fn = self.layer_eager
        self.compiled = None

    def alloc_cache(self, slots, max_len):
        self.k = self.v = None
        torch.cuda.empty_cache()
        max_len = (max_len + 15) // 16 * 16  # key-mask rows aligned for the memory-efficient SDPA kernel
        # one allocation per layer: a compiled layer sees the same (offset-0) cache tensor shape in every layer
        shp = (slots, self.KVH, max_len, self.hd)
        self.k = [torch.zeros(shp, device="cuda", dtype=self.dt) for _ in range(self.s["layers"])]
        self.v = [torch.zeros(shp, device="cuda", dtype=self.dt) for _ in range(self.s["layers"])]
        self.max_len = max_len
        self.cache_bytes = 2 * self.s["layers"] * self.k[0].numel() * 2

    def free(self):
        """Drop every device tensor now: torch.compile's caches keep a reference to this object (the compiled
        layer is a bound method), so deleting the object alone would leave its weights and cache on the GPU."""
        self.k = self.v = self.embed = self.layers = self.out = self.cos = self.sin = None
        self.compiled = self.layer_fn = self.lin = None

    def kv_bytes_per_token(self):
        return 2 * self.s["layers"] * self.KVH * self.hd * 2

    def compile(self):
        try:
            self.compiled = torch.compile(self.layer_eager, dynamic=True, fullgraph=False)
            self.layer_fn = self.compiled
            return None
        except Exception as e:  # noqa: BLE001
            self.layer_fn = self.layer_eager
            return f"torch.compile failed: {type(e).__name__}: {e}"

    # one decoder layer of a decode step: x [B, 1, d], pos [B] (each row its own position), mask [B, 1, 1, max_len];
    # weights as plain tensors (tuples per linear), so one compiled graph serves every layer
    def layer_eager(self, x, an, fn, wqkv, wo, w13, w2, kc, vc, pos, cos, sin, mask):
        lin = self.lin
        B, H, KVH, hd = x.shape[0], self.H, self.KVH, self.hd
        qkv = lin(rms(x, an), *wqkv)
        q = qkv[..., :H * hd].view(B, 1, H, hd)
        k = qkv[..., H * hd:(H + KVH) * hd].view(B, 1, KVH, hd)
        v = qkv[..., (H + KVH) * hd:].view(B, 1, KVH, hd)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        rows = torch.arange(B, device=x.device)
        kc[rows, :, pos] = k[:, 0]
        vc[rows, :, pos] = v[:, 0]
        # GQA: the H/KVH query heads of a KV head are that head's query rows: [B, KVH, G, hd] against [B, KVH, Lmax, hd]
        qg = q.view(B, KVH, H // KVH, hd)
        o = F.scaled_dot_product_attention(qg, kc[:B], vc[:B], attn_mask=mask)
        x = x + lin(o.reshape(B, 1, H * hd), *wo)
        gu = lin(rms(x, fn), *w13)
        hdim = gu.shape[-1] // 2
        return x + lin(F.silu(gu[..., :hdim]) * gu[..., hdim:], *w2)

    def decode(self, tok, pos):
        """tok [B] ids, pos [B] positions -> next ids [B] (greedy). Slots 0..B-1 of the cache."""
        B = tok.shape[0]
        x = self.embed[tok].view(B, 1, -1)
        cos, sin = self.cos[pos].view(B, 1, 1, -1), self.sin[pos].view(B, 1, 1, -1)
        mask = (torch.arange(self.max_len, device=tok.device).view(1, -1) <= pos.view(-1, 1)).view(B, 1, 1, self.max_len)
        for l, L in enumerate(self.layers):
            x = self.layer_fn(x, L["an"], L["fn"], L["wqkv"].args, L["wo"].args, L["w13"].args, L["w2"].args, self.k[l], self.v[l], pos, cos, sin, mask)
        return self.out(rms(x[:, 0], self.norm)).argmax(-1)

    def prefill(self, tok, slot0):
        """tok [b, T] prompts (positions 0..T-1) into slots slot0..slot0+b-1 -> next ids [b]. Eager, causal SDPA."""
        b, T = tok.shape
        H, KVH, hd = self.H, self.KVH, self.hd
        x = self.embed[tok]
        cos, sin = self.cos[:T].view(1, T, 1, -1), self.sin[:T].view(1, T, 1, -1)
        for l, L in enumerate(self.layers):
            qkv = L["wqkv"](rms(x, L["an"]))
            q = rope(qkv[..., :H * hd].view(b, T, H, hd), cos, sin)
            k = rope(qkv[..., H * hd:(H + KVH) * hd].view(b, T, KVH, hd), cos, sin)
            v = qkv[..., (H + KVH) * hd:].view(b, T, KVH, hd)
            self.k[l][slot0:slot0 + b, :, :T] = k.transpose(1, 2)
            self.v[l][slot0:slot0 + b, :, :T] = v.transpose(1, 2)
            # GQA by repeating K/V heads (a few MB): plain causal SDPA, which the flash kernel takes
            kr, vr = (t.transpose(1, 2).repeat_interleave(H // KVH, dim=1) for t in (k, v))
            o = F.scaled_dot_product_attention(q.transpose(1, 2), kr, vr, is_causal=True)
            x = x + L["wo"](o.transpose(1, 2).reshape(b, T, H * hd))
            gu = L["w13"](rms(x, L["fn"]))
            hdim = gu.shape[-1] // 2
            x = x + L["w2"](F.silu(gu[..., :hdim]) * gu[..., hdim:])
        return self.out(rms(x[:, -1], self.norm)).argmax(-1)


class Graph:
    """The decode step of B rows as one CUDA graph; replay(tok, pos) copies the inputs in first."""

    def __init__(self, m, B):
        self.tok = torch.zeros(B, dtype=torch.long, device="cuda")
        self.pos = torch.zeros(B, dtype=torch.long, device="cuda")
        s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(3):  # warm-up (compilation, cuBLAS handles, autotuning) outside the capture
                m.decode(self.tok, self.pos)
        torch.cuda.current_stream().wait_stream(s)
        self.g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.g), torch.no_grad():
            self.out = m.decode(self.tok, self.pos)

    def replay(self):
        self.g.replay()
        return self.out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama3-8b")
    ap.add_argument("--variants", default="fp16,int4,fp8")
    ap.add_argument("--compile", default="fp16", help="variants whose decoder layer is torch.compiled (others: eager + CUDA graph)")
    ap.add_argument("--batches", default="1,16,64,256")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--in-len", type=int, default=1024)
    ap.add_argument("--out-len", type=int, default=512)
    ap.add_argument("--requests", type=int, default=256, help="max-throughput run: prompts submitted at once (0 = skip)")
    ap.add_argument("--throughput-variants", default="fp16,int4,fp8")
    ap.add_argument("--prefill-tokens", type=int, default=8192, help="tokens per prefill forward in the throughput loop")
    ap.add_argument("--deadline-s", type=float, default=280, help="skip measurements that would start after this")
    ap.add_argument("--partial", default="")
    a = ap.parse_args()
    s = shape_of(a.shape)
    free, total = torch.cuda.mem_get_info()
    res = dict(shape=a.shape, device=torch.cuda.get_device_name(), torch=torch.__version__, gpu_bytes=total,
               gpu_free_bytes=free, ctx=a.ctx, in_len=a.in_len, out_len=a.out_len, variants={})

    def save():
        if a.partial:
            with open(a.partial + ".tmp", "w") as f:
                json.dump(res, f)
            os.replace(a.partial + ".tmp", a.partial)

    def left():
        return a.deadline_s - (time.time() - T0)

    # copy bandwidth (bytes read + written): the roofline of every engine in this call
    try:
        buf = torch.empty(2 ** 31, dtype=torch.uint8, device="cuda"); dst = torch.empty_like(buf)
        ms = timed(lambda: dst.copy_(buf), warm=3, iters=20)
        res["copy_gbps"] = 2 * buf.numel() / (ms * 1e-3) / 1e9
        del buf, dst
        log(f"copy bandwidth {res['copy_gbps']:.0f} GB/s")
    except Exception as e:  # noqa: BLE001
        res["copy_error"] = repr(e)
    torch.cuda.empty_cache()
    save()

    batches = [int(x) for x in a.batches.split(",") if x]
    L = a.in_len + a.out_len
    for kind in a.variants.split(","):
        v = res["variants"][kind] = dict(decode=[], dtype=str(LINEARS[kind][1]).replace("torch.", ""))
        m = None
        try:
            if left() < 20:
                v["skipped"] = "out of time"; continue
            t = time.time()
            m = Llama(s, kind, max(batches), a.ctx + 1)
            v["weight_bytes"] = m.weight_bytes
            v["mode"] = "eager layer + whole-step CUDA graph"
            if kind in a.compile.split(","):
                err = m.compile()
                v["mode"] = "torch.compile (inductor, dynamic batch) per layer + whole-step CUDA graph" if err is None else "eager layer + whole-step CUDA graph (compile failed)"
                if err:
                    v["compile_error"] = err
            log(f"{kind}: built in {time.time() - t:.1f} s ({m.weight_bytes / 2 ** 30:.2f} GiB of weights read per step); {v['mode']}")
            # (a) decode at context ctx: every row at position ctx (its cache holds ctx tokens)
            for B in batches:
                if left() < 15:
                    v["decode"].append(dict(batch=B, skipped="out of time")); continue
                try:
                    t = time.time()
                    g = Graph(m, B)
                    g.pos.fill_(a.ctx)
                    ms = timed(g.replay, warm=3, iters=20)
                    v["decode"].append(dict(batch=B, step_ms=ms, tok_s=B / ms * 1e3, setup_s=time.time() - t))
                    log(f"{kind} decode batch {B}: {ms:.2f} ms/step ({time.time() - t:.1f} s incl. compile/capture)")
                    del g
                except Exception as e:  # noqa: BLE001
                    if m.compiled is not None and m.layer_fn is m.compiled:  # a compiled layer that dies here: eager from now on
                        v["compile_error"] = f"decode batch {B}: {type(e).__name__}: {str(e)[:300]}"
                        v["mode"] = "eager layer + whole-step CUDA graph (compiled run failed)"
                        m.layer_fn = m.layer_eager
                        log(f"{kind} decode batch {B}: compiled step failed ({type(e).__name__}); eager from here")
                        try:
                            g = Graph(m, B); g.pos.fill_(a.ctx)
                            ms = timed(g.replay, warm=3, iters=20)
                            v["decode"].append(dict(batch=B, step_ms=ms, tok_s=B / ms * 1e3))
                            del g
                            continue
                        except Exception as e2:  # noqa: BLE001
                            e = e2
                    v["decode"].append(dict(batch=B, error=f"{type(e).__name__}: {str(e)[:300]}"))
                    log(f"{kind} decode batch {B}: {type(e).__name__}: {str(e)[:200]}")
                torch.cuda.empty_cache()
                save()
            # (c) TTFT: one in_len prompt, eager prefill, argmax of the last token's logits
            try:
                tok = torch.randint(0, s["vocab"], (1, a.in_len), device="cuda")
                with torch.no_grad():
                    v["ttft_ms"] = timed(lambda: m.prefill(tok, 0), warm=2, iters=5)
                log(f"{kind} ttft {a.in_len}: {v['ttft_ms']:.1f} ms")
            except Exception as e:  # noqa: BLE001
                v["ttft_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            save()
            # (b) max throughput: the same request set as COMET's (requests x in_len prompt, out_len greedy tokens)
            if a.requests > 0 and kind not in a.throughput_variants.split(","):
                v["throughput"] = dict(skipped="not in --throughput-variants")
            elif a.requests > 0 and left() <= 30:
                v["throughput"] = dict(skipped="out of time")
            elif a.requests > 0:
                v["throughput"] = throughput(m, s, a, left)
            save()
        except Exception as e:  # noqa: BLE001
            v["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            log(f"{kind}: {v['error']}")
            traceback.print_exc(file=sys.stderr)
        finally:
            if m is not None:
                m.free()
            del m
            try:
                torch._dynamo.reset()
            except Exception:  # noqa: BLE001
                pass
            gc.collect()
            torch.cuda.empty_cache()
            log(f"{kind}: done; {torch.cuda.mem_get_info()[0] / 2 ** 30:.1f} GiB free")
        save()
    res["total_s"] = time.time() - T0
    print(json.dumps(res))


def throughput(m, s, a, left):
    """All requests submitted at once: slots = as many as the memory holds (at most requests). Each wave: its
    prompts prefilled together (chunks of <= prefill_tokens tokens), then out_len-1 decode steps of the wave as
    graph replays. Output tok/s over the whole run; TTFT per request = from the start to its first token."""
    L = a.in_len + a.out_len
    free, _ = torch.cuda.mem_get_info()
    per_seq = m.kv_bytes_per_token() * ((L + 15) // 16 * 16)
    # keep room for the prefill chunk's activations (~ 12 x dim + 3 x hidden values per token) and the graph pool
    act = a.prefill_tokens * (12 * s["dim"] + 3 * s["hidden"]) * 2 + 2 * 2 ** 30
    slots = int(min(a.requests, (free + m.cache_bytes - act) // per_seq))
    r = dict(requests=a.requests, in_len=a.in_len, out_len=a.out_len, slots=slots, kv_bytes_per_seq=per_seq)
    if slots < 1:
        r["error"] = "no sequence fits"; return r
    try:
        m.alloc_cache(slots, L)
        chunk = max(1, a.prefill_tokens // a.in_len)
        prompts = torch.randint(0, s["vocab"], (a.requests, a.in_len), device="cuda")
        graphs = {}
        # warm: prefill of one chunk and the decode graph of a full wave (capture outside the timed run)
        with torch.no_grad():
            m.prefill(prompts[:min(chunk, slots)], 0)
        g = graphs.setdefault(slots, Graph(m, slots))
        torch.cuda.synchronize()
        ttft, itl, done = [], [], 0
        t0 = time.time()
        while done < a.requests:
            n = min(slots, a.requests - done)
            if n not in graphs:
                graphs[n] = Graph(m, n)  # the last, partial wave (counted in the time)
            g = graphs[n]
            with torch.no_grad():
                for c0 in range(0, n, chunk):
                    b = min(chunk, n - c0)
                    g.tok[c0:c0 + b] = m.prefill(prompts[done + c0:done + c0 + b], c0)
                    torch.cuda.synchronize()
                    ttft += [time.time() - t0] * b
            g.pos.fill_(a.in_len)
            for i in range(a.out_len - 1):
                ts = time.time()
                nxt = g.replay()
                g.tok.copy_(nxt)
                g.pos.add_(1)
                torch.cuda.synchronize()  # each token reaches the host, as a server streams it
                itl.append(time.time() - ts)
            done += n
            if left() < 5 and done < a.requests:
                r["cut"] = f"out of time after {done} requests"; break
        wall = time.time() - t0
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1e3
        r.update(wall_s=wall, output_tok_s=done * a.out_len / wall, ttft_p50_ms=q(ttft, 0.5), ttft_p99_ms=q(ttft, 0.99),
                 itl_p50_ms=q(itl, 0.5), itl_p99_ms=q(itl, 0.99), peak_batch=min(slots, a.requests), prefill_chunk_prompts=chunk)
        log(f"{m.kind} throughput: {done} x {a.in_len}/{a.out_len}: {r['output_tok_s']:.0f} output tok/s, {slots} slots, ttft p50 {r['ttft_p50_ms']:.0f} ms, itl p50 {r['itl_p50_ms']:.1f} ms")
        del graphs, g
    except Exception as e:  # noqa: BLE001
        r["error"] = f"{type(e).__name__}: {str(e)[:400]}"
        log(f"{m.kind} throughput: {r['error']}")
    gc.collect()
    return r


if __name__ == "__main__":
    main()
