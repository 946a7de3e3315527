"""PyTorch FP16 baseline for `comet bench e2e` (issue 9), run on the GPU machine in the same call as ours.

Hugging Face transformers LlamaForCausalLM built from a config with random weights (FP16), a static KV cache,
torch.compile(mode="reduce-overhead") when it works, else eager with a captured CUDA graph per batch size.
Measures, at the shapes and lengths COMET measures:
  (a) decode step time at batch B, context `ctx` (the KV cache holds ctx tokens per sequence);
  (b) max throughput under a memory budget: `in_len` prompt + `out_len` generated tokens, the largest batch whose
      weights + static KV cache fit the budget, tokens/s of generated tokens (prefill included in the time);
  (c) time to first token for one `in_len`-token prompt.
Prints one JSON object (last line of stdout).

  python3 bench/e2e/torch_baseline.py --shape llama3-8b --batches 1,8,32,64,128,256 --ctx 1024
"""
import argparse, json, math, time, sys, os
import torch

SHAPES = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256),
    "llama3-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                       num_key_value_heads=8, vocab_size=128256),
}


def shape_config(shape, max_len=2048):
    """A transformers LlamaConfig of a named shape or of a config JSON (its size fields)."""
    from transformers import LlamaConfig
    if shape in SHAPES:
        kw = dict(SHAPES[shape])
    else:
        kw = {k: v for k, v in json.load(open(shape)).items() if k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")}
    return LlamaConfig(**kw, max_position_embeddings=max(max_len, 2048), rope_theta=500000.0, tie_word_embeddings=False)


def build(shape, max_len):
    from transformers import LlamaForCausalLM
    cfg = shape_config(shape, max_len)
    torch.manual_seed(0)
    # FP16 from the start (no f32 copy at init): random init on the GPU
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    model.eval()
    return model, cfg


def fp16_params(cfg):
    """Parameters of the model (embedding, layers, norms, untied head), to tell before building it whether it fits."""
    d, h, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = d // cfg.num_attention_heads
    kv = cfg.num_key_value_heads * hd
    return 2 * V * d + d + L * (d * d * 2 + 2 * d * kv + 3 * d * h + 2 * d)


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


class Decoder:
    """One decode step over a static cache of `max_len` positions, as a CUDA graph (captured per batch size)."""

    def __init__(self, model, cfg, batch, max_len, compile_mode):
        from transformers import StaticCache
        self.model, self.batch, self.max_len = model, batch, max_len
        self.cache = StaticCache(config=cfg, max_cache_len=max_len)
        self.tok = torch.randint(0, cfg.vocab_size, (batch, 1), device="cuda")
        self.pos = torch.zeros((1,), dtype=torch.long, device="cuda")
        self.mode = compile_mode
        fwd = lambda tok, pos: model(input_ids=tok, cache_position=pos, past_key_values=self.cache, use_cache=True).logits
        self.fwd = torch.compile(fwd, mode="reduce-overhead", fullgraph=False) if compile_mode == "compile" else fwd
        self.graph = None

    def step(self):
        with torch.no_grad():
            if self.mode == "compile":
                return self.fwd(self.tok, self.pos)
            if self.graph is None:
                s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(2):
                        self.out = self.fwd(self.tok, self.pos)
                torch.cuda.current_stream().wait_stream(s)
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.out = self.fwd(self.tok, self.pos)
            self.graph.replay()
            return self.out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama3-8b")
    ap.add_argument("--batches", default="1,8,32,64,128,256")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--in-len", type=int, default=1024)
    ap.add_argument("--out-len", type=int, default=512)
    ap.add_argument("--mem-budget-gb", type=float, default=0.0, help="0 = GPU memory minus 4 GiB")
    ap.add_argument("--mode", default="compile", choices=["compile", "graph"])
    ap.add_argument("--partial", default="", help="rewrite this JSON file after every measurement (a run cut short keeps them)")
    a = ap.parse_args()

    def save():
        if a.partial:
            with open(a.partial + ".tmp", "w") as f:
                json.dump(res, f)
            os.replace(a.partial + ".tmp", a.partial)
    dev = torch.cuda.get_device_name()
    t0 = time.time()
    need = fp16_params(shape_config(a.shape)) * 2
    total = torch.cuda.get_device_properties(0).total_memory
    if need > total:  # e.g. LLaMA-3-70B: 141 GB of FP16 weights on an 80 GB GPU
        print(json.dumps(dict(shape=a.shape, device=dev, torch=torch.__version__, dtype="float16", mode=a.mode, fits=False,
                              weight_bytes=need, gpu_bytes=total, decode=[],
                              note=f"FP16 weights alone ({need / 1e9:.0f} GB) exceed the GPU's memory ({total / 1e9:.0f} GB): PyTorch FP16 cannot serve this shape on one GPU")))
        return
    model, cfg = build(a.shape, a.in_len + a.out_len)
    n_params = sum(p.numel() for p in model.parameters())
    weight_bytes = n_params * 2
    res = dict(shape=a.shape, device=dev, torch=torch.__version__, dtype="float16", params=n_params, mode=a.mode,
               ctx=a.ctx, decode=[], build_s=time.time() - t0)
    # copy bandwidth, bytes read + written, for the roofline of both engines
    buf = torch.empty(2**30, dtype=torch.uint8, device="cuda"); dst = torch.empty_like(buf)
    ms = timed(lambda: dst.copy_(buf), warm=3, iters=20)
    res["copy_gbps"] = 2 * buf.numel() / (ms * 1e-3) / 1e9
    del buf, dst
    save()
    # (a) decode step at context ctx: a static cache of ctx+1 positions, stepping at position ctx
    for b in [int(x) for x in a.batches.split(",")]:
        try:
            d = Decoder(model, cfg, b, a.ctx + 1, a.mode)
            d.pos.fill_(a.ctx)
            ms = timed(d.step, warm=3, iters=10)
            res["decode"].append(dict(batch=b, step_ms=ms, tok_s=b / ms * 1e3))
            print(f"decode batch {b}: {ms:.2f} ms/step, {b / ms * 1e3:.0f} tok/s", file=sys.stderr, flush=True)
            save()
            del d
        except torch.OutOfMemoryError:
            res["decode"].append(dict(batch=b, oom=True))
            print(f"decode batch {b}: out of memory", file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
    # (c) time to first token, one in_len prompt (prefill + first logits)
    tok = torch.randint(0, cfg.vocab_size, (1, a.in_len), device="cuda")
    with torch.no_grad():
        res["ttft_ms"] = timed(lambda: model(input_ids=tok, use_cache=False, logits_to_keep=1), warm=2, iters=5)
    print(f"ttft {a.in_len} tokens: {res['ttft_ms']:.1f} ms", file=sys.stderr, flush=True)
    save()
    # (b) max throughput under equal memory: largest batch whose static KV cache fits beside the weights
    budget = a.mem_budget_gb * 2**30 if a.mem_budget_gb > 0 else torch.cuda.get_device_properties(0).total_memory - 4 * 2**30
    hd = cfg.hidden_size // cfg.num_attention_heads
    kv_per_tok = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * hd * 2
    L = a.in_len + a.out_len
    # activations of a prefill chunk need room too: keep 10% of the budget free
    max_b = int((0.9 * budget - weight_bytes) // (kv_per_tok * L))
    res["max_throughput"] = dict(budget_bytes=budget, weight_bytes=weight_bytes, kv_bytes_per_token=kv_per_tok, max_batch=max_b)
    if max_b >= 1:
        # time = prefill of every prompt (one sequence at a time: a batched prefill of that many 1024-token
        # prompts does not fit beside the cache) + out_len decode steps of the whole batch, each timed at the
        # middle position in_len + out_len/2 (attention cost grows linearly over the 512 steps)
        try:
            d = Decoder(model, cfg, max_b, L, a.mode)
            with torch.no_grad():
                pre_ms = timed(lambda: model(input_ids=tok, use_cache=False, logits_to_keep=1), warm=1, iters=3) * max_b
                d.pos.fill_(a.in_len + a.out_len // 2)
                step_ms = timed(d.step, warm=2, iters=5)
            total_s = (pre_ms + step_ms * a.out_len) / 1e3
            res["max_throughput"].update(prefill_ms=pre_ms, decode_step_ms=step_ms, tok_s=max_b * a.out_len / total_s,
                                         note="prefill = one-sequence prefill x batch; decode step timed at position in_len + out_len/2")
            print(f"max throughput: batch {max_b}: {max_b * a.out_len / total_s:.0f} tok/s", file=sys.stderr, flush=True)
        except torch.OutOfMemoryError:
            res["max_throughput"]["oom"] = True
    res["total_s"] = time.time() - t0
    print(json.dumps(res))


if __name__ == "__main__":
    main()
