#!/usr/bin/env python3
"""GPTQ's device kernels (cuda/quant_gptq.cu) at LLaMA-3-8B/70B shapes, timed one by one through the C ABI (ctypes,
inputs made with torch on the GPU): Hessian accumulation of T tokens, permute + damp, the inverse's upper Cholesky
factor, and the blocked quantization of N rows. Usage: gptq_kernels.py --lib libcomet_cuda.so [--shapes 8b|70b|small]
Prints one line per kernel and shape; --json writes them."""
import argparse, ctypes, json, time
import torch

SHAPES = {  # (name, K, N rows sharing the Hessian)
    '8b': [('qkv', 4096, 6144), ('o', 4096, 4096), ('gate_up', 4096, 28672), ('down', 14336, 4096)],
    '70b': [('qkv', 8192, 10240), ('o', 8192, 8192), ('gate_up', 8192, 57344), ('down', 28672, 8192)],
    'small': [('small', 520, 300)],
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lib', required=True)
    ap.add_argument('--shapes', default='8b')
    ap.add_argument('--tokens', type=int, default=2048)
    ap.add_argument('--B', type=int, default=128)
    ap.add_argument('--json')
    a = ap.parse_args()
    L = ctypes.CDLL(a.lib)
    L.comet_last_error.restype = ctypes.c_char_p
    vp, i, d = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    L.comet_gptq_hessian_add.argtypes = [vp, i, i, vp, vp]
    L.comet_gptq_permute.argtypes = [vp, i, i, vp, vp, d, vp, vp]
    L.comet_gptq_inv_chol_upper.argtypes = [vp, i, vp, vp]
    L.comet_gptq_quantize.argtypes = [vp, i, i, i, i, vp, vp, i, vp, vp, vp]
    dev = torch.device('cuda')
    stream = torch.cuda.current_stream().cuda_stream
    rows = []

    def timed(name, f):
        torch.cuda.synchronize(); t = time.perf_counter()
        rc = f()
        torch.cuda.synchronize(); s = time.perf_counter() - t
        if rc != 0: raise SystemExit(f'{name}: rc {rc}: {L.comet_last_error().decode()}')
        return s

    for name, K, N in SHAPES[a.shapes]:
        g = torch.Generator(device=dev).manual_seed(1)
        x = torch.randn(a.tokens, K, device=dev, generator=g)
        x[:, :8] *= 20  # a few outlier channels
        H = torch.zeros(K, K, dtype=torch.float64, device=dev)
        Kp = (K + a.B - 1) // a.B * a.B
        P = torch.empty(Kp, Kp, dtype=torch.float64, device=dev)
        U = torch.empty_like(P)
        perm = torch.argsort(x.abs().amax(0), descending=True).to(torch.int32)
        w = torch.randn(N, K, device=dev, generator=g) * 0.02
        codes = torch.empty(N, Kp, dtype=torch.int8, device=dev)
        scales = torch.empty(N, Kp // a.B, dtype=torch.int16, device=dev)
        r = {'shape': name, 'K': K, 'N': N, 'tokens': a.tokens}
        r['hessian_s'] = timed('hessian', lambda: L.comet_gptq_hessian_add(x.data_ptr(), a.tokens, K, H.data_ptr(), stream))
        r['permute_s'] = timed('permute', lambda: L.comet_gptq_permute(H.data_ptr(), K, Kp, perm.data_ptr(), None, 1.0, P.data_ptr(), stream))
        r['factor_s'] = timed('factor', lambda: L.comet_gptq_inv_chol_upper(P.data_ptr(), Kp, U.data_ptr(), stream))
        r['quantize_s'] = timed('quantize', lambda: L.comet_gptq_quantize(w.data_ptr(), N, K, Kp, a.B, perm.data_ptr(), U.data_ptr(), 20, codes.data_ptr(), scales.data_ptr(), stream))
        r['codes_in_range'] = bool(((codes >= -8) & (codes <= 7)).all().item())
        r['codes_hist'] = torch.bincount((codes.flatten().to(torch.int64) + 8), minlength=16).tolist()
        print(json.dumps(r), flush=True)
        rows.append(r)
        del x, H, P, U, w, codes, scales
        torch.cuda.empty_cache()
    if a.json:
        json.dump({'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'device': torch.cuda.get_device_name(), 'rows': rows}, open(a.json, 'w'), indent=1)

if __name__ == '__main__':
    main()
