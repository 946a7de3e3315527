# A synthetic Hugging Face LLaMA checkpoint of the LLaMA-3-8B layer shape (hidden 4096, intermediate 14336,
# 32 heads / 8 KV heads of 128, vocab 128256, rope_theta 500000, untied), bf16 shards (one per layer plus one for
# embedding/norm/lm_head), random weights with outlier channels: 8 residual channels whose RMSNorm weights are
# 30x (so q/k/v and gate/up inputs have outliers), and 1% of gate/up rows 6x (so down_proj inputs do).
#   python bench/quant/synth_llama3.py OUT_DIR LAYERS [TOKENIZER_JSON]      (on the GPU machine: device/quant-llama3.sh)
# With a tokenizer (a byte-level BPE tokenizer.json of a smaller vocabulary, e.g. wikillama-28M's), it is written
# beside the shards with its vocabulary padded to 128256 entries by tokens "<|synthetic_i|>" (printable ASCII, so
# byte-level decoding shows them as text): every id the model can generate then decodes, as with LLaMA-3's own.
import json, os, struct, sys
import torch
out, L = sys.argv[1], int(sys.argv[2])
tok = sys.argv[3] if len(sys.argv) > 3 else None
D, H, nH, nKV, hd, V = 4096, 14336, 32, 8, 128, 128256
os.makedirs(out, exist_ok=True)
g = torch.Generator(device='cuda').manual_seed(0)
def rnd(*shape, std=0.02):
    return (torch.randn(*shape, generator=g, device='cuda') * std).to(torch.bfloat16)
outl = torch.randperm(D, generator=g, device='cuda')[:8]
def norm():
    w = 1 + 0.1 * torch.randn(D, generator=g, device='cuda')
    w[outl] *= 30
    return w.to(torch.bfloat16)
def write(path, tensors):
    header, off, blobs = {'__metadata__': {'format': 'pt'}}, 0, []
    for name, t in tensors:
        b = t.contiguous().view(torch.int16).cpu().numpy().tobytes()
        header[name] = {'dtype': 'BF16', 'shape': list(t.shape), 'data_offsets': [off, off + len(b)]}
        off += len(b); blobs.append(b)
    h = json.dumps(header).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h))); f.write(h)
        for b in blobs: f.write(b)
wm = {}
def shard(fname, tensors):
    write(os.path.join(out, fname), tensors)
    for n, _ in tensors: wm[n] = fname
shard('embed.safetensors', [('model.embed_tokens.weight', rnd(V, D, std=0.5)), ('model.norm.weight', norm()), ('lm_head.weight', rnd(V, D))])
for l in range(L):
    p = f'model.layers.{l}.'
    gate, up = rnd(H, D), rnd(H, D)
    big = torch.randperm(H, generator=g, device='cuda')[: H // 100]
    gate[big] *= 6; up[big] *= 6
    shard(f'layer-{l:03d}.safetensors', [
        (p + 'input_layernorm.weight', norm()), (p + 'self_attn.q_proj.weight', rnd(nH * hd, D)), (p + 'self_attn.k_proj.weight', rnd(nKV * hd, D)),
        (p + 'self_attn.v_proj.weight', rnd(nKV * hd, D)), (p + 'self_attn.o_proj.weight', rnd(D, nH * hd)), (p + 'post_attention_layernorm.weight', norm()),
        (p + 'mlp.gate_proj.weight', gate), (p + 'mlp.up_proj.weight', up), (p + 'mlp.down_proj.weight', rnd(D, H))])
json.dump({'metadata': {}, 'weight_map': wm}, open(os.path.join(out, 'model.safetensors.index.json'), 'w'))
json.dump({'architectures': ['LlamaForCausalLM'], 'model_type': 'llama', 'hidden_size': D, 'intermediate_size': H, 'num_hidden_layers': L,
           'num_attention_heads': nH, 'num_key_value_heads': nKV, 'head_dim': hd, 'vocab_size': V, 'max_position_embeddings': 8192,
           'rms_norm_eps': 1e-5, 'rope_theta': 500000.0, 'tie_word_embeddings': False, 'bos_token_id': 1, 'eos_token_id': 2,
           'hidden_act': 'silu', 'torch_dtype': 'bfloat16'}, open(os.path.join(out, 'config.json'), 'w'), indent=1)
if tok:
    t = json.load(open(tok))
    vocab = t['model']['vocab']
    for i in range(len(vocab), V): vocab[f'<|synthetic_{i}|>'] = i
    json.dump(t, open(os.path.join(out, 'tokenizer.json'), 'w'))
    cfg = os.path.join(os.path.dirname(tok), 'tokenizer_config.json')
    if os.path.exists(cfg): open(os.path.join(out, 'tokenizer_config.json'), 'w').write(open(cfg).read())
print('wrote', out, L, 'layers')
