#!/usr/bin/env bash
# On the GPU machine: a synthetic LLaMA-3-8B-shape Hugging Face checkpoint (bench/quant/synth_llama3.py: bf16
# shards, outlier channels; LAYERS of the 32 layers, embedding and untied classifier of 128256 rows) quantized
# layer by layer with GPTQ on CUDA (B 128, 15% INT8 MACs, KV4; src/quant/layered.ts, cuda/quant_gptq.cu), then
# served (`comet run --backend cuda`) and the greedy gate against the simulator (`comet eval verify`; 2026-12-03: 32 layers in
# 215 s, 3.48 GB peak RSS, gate equal). The
# quantize summary (--json) has the time each layer finished per pass and the peak RSS: 32 layers ≈ the fixed
# part + 32 × the per-layer time. (The GPTQ kernels' bit-equality with gptq.ts is test/quant-layered.test.ts,
# run by device/cuda-tests.sh.)
# Here first:
#   cmake -S cuda -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/cbuild -j2 && bash device/pack.sh
#   mkdir -p .device/quant && tar -cJf .device/quant/addon.tar.xz -C /tmp/cbuild/Release .
#   cp ../shared/models/wikillama-28M/tokenizer*.json .device/quant/ && tail -c 40000 ../shared/models/texts/wiki_heldout_a.txt > .device/quant/calib.txt
# Carry .device/node.xz .device/node_modules.tar.xz .device/quant.   LAYERS=4 bash device/quant-llama3.sh
# STEPS (default "synth quantize run verify") runs some of them (a later warm call can verify the file kept in /tmp).
set -uo pipefail
OUT=${OUT:-/tmp/comet-out}; P=.device/quant; LAYERS=${LAYERS:-4}
mkdir -p "$OUT"
source device/unpack.sh
set +e
if [ -z "${COMET_CUDA_ADDON:-}" ]; then mkdir -p /tmp/addon && tar -xJf $P/addon.tar.xz -C /tmp/addon; export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node; fi
has() { case " ${STEPS:-synth quantize run verify} " in *" $1 "*) return 0;; esac; return 1; }
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/timeline.txt"; }
el "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
if has synth; then
  timeout 240 python3 bench/quant/synth_llama3.py /tmp/l3 "$LAYERS" $P/tokenizer.json > "$OUT/synth.log" 2>&1; el "synth rc=$? $(du -sh /tmp/l3 | cut -f1)"
fi
if has quantize; then
  /usr/bin/time -v timeout ${QUANT_S:-400} node bin/comet.js quantize --model /tmp/l3 --calib $P/calib.txt --out /tmp/l3.comet --weights gptq --block 128 \
    --int8-fraction 0.15 --kv kv4 --calib-tokens ${CALIB_TOKENS:-4096} --backend cuda --no-weight-error --json > "$OUT/quantize.json" 2> "$OUT/quantize.err"; el "quantize rc=$?"
  grep -E "Maximum resident|Elapsed" "$OUT/quantize.err"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print({k: d[k] for k in ('seconds','phaseSeconds','passes','peakRssBytes','int8MacFraction') if k in d}); print('layerDone', d.get('layerDone'))" "$OUT/quantize.json" 2>&1 | cut -c1-1500
  tail -c 300 "$OUT/quantize.err"; ls -la /tmp/l3.comet
fi
if has run; then
  timeout 60 node bin/comet.js run "The history of" --model /tmp/l3.comet --backend cuda --steps 8 --temperature 0 > "$OUT/run.txt" 2>&1; el "run rc=$?"
fi
if has verify; then
  timeout ${VERIFY_S:-240} node bin/comet.js eval verify --model /tmp/l3.comet --backend cuda --prompt "The history of" --steps ${VERIFY_STEPS:-3} --json > "$OUT/verify.json" 2>&1; el "verify rc=$?"
  tail -c 600 "$OUT/verify.json"
fi
