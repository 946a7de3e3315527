#!/usr/bin/env bash
# On the GPU machine: the end-of-session verification of main in warm calls back to back, each part a few minutes.
#   PARTS="tests memcheck chaos webgpu" bash device/final.sh     (after `bash device/cuda-tests.sh stage`)
#   PARTS="serve" bash device/final.sh                           (the PyTorch baselines and `comet bench e2e`)
# Parts:
#   tests    every test file with a CUDA row (device/cuda-tests.sh: needs ../shared/models staged first)
#   memcheck compute-sanitizer memcheck on `comet run --backend cuda`, float and W4A4KV4 (B = 32) models
#   chaos    bench/chaos against `comet serve --backend cuda`, max-batch 256, batched prefill (issue 16)
#   webgpu   bench/webgpu/decode.ts: WebGPU (Dawn, Vulkan over the NVIDIA driver) beside CUDA at batch 1 (issue 21)
#   serve    device/serve.sh MODE=bench (issue 16: baselines, decode steps, TTFT, max throughput, prefix cache)
#   quant    issue 17: wikillama-28M quantized layer by layer with RTN and GPTQ on the simulator and on CUDA (four
#            processes at once, the machine has 16 cores), perplexity of each on the first 16 windows of
#            wiki_heldout_a.txt (evaluated on CUDA, bit-equal to the simulator); then device/quant-llama3.sh
#            (LAYERS of the LLaMA-3-8B shape with GPTQ on CUDA). Needs ../shared/models staged and .device/quant.
# Here first: build the addon (cmake -S cuda -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/cbuild -j2),
#   bash device/pack.sh; mkdir -p .device/final; tar -cJf .device/final/addon.tar.xz -C /tmp/cbuild/Release .
#   node bin/comet.js quantize --model models/stories260K.bin --calib ../shared/models/texts/tinystories_valid_head.txt \
#     --block 32 --out .device/final/s260k-w4a4kv4.comet
# Carry .device/node.xz .device/node_modules.tar.xz .device/final .gl; the cuda-tests part also wants
# .device/cuda-tests/addon.tar.xz (or copies .device/final's). Every part's logs go into $OUT/final-<part>.tgz
# (the call returns at most 8 files), and a summary to stdout.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/comet-out}; F=$PWD/.device/final
mkdir -p "$OUT" .device/cuda-tests
[ -f .device/cuda-tests/addon.tar.xz ] || cp "$F/addon.tar.xz" .device/cuda-tests/
source device/unpack.sh; set +e
mkdir -p /tmp/addon && tar -xJf "$F/addon.tar.xz" -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node PYTHONUNBUFFERED=1
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
since() { echo "$(( $(date +%s) - T0 )) s"; }
pack() { mkdir -p "/tmp/final/$1"; tar -czf "$OUT/final-$1.tgz" -C "/tmp/final/$1" . ; }

for part in ${PARTS:-tests memcheck chaos webgpu}; do
  L=/tmp/final/$part; mkdir -p "$L"
  echo "=== $part [$(since)]"
  case $part in
    tests)
      OUT=$L TESTS_S=${TESTS_S:-300} SANITIZE=0 bash device/cuda-tests.sh ;;
    memcheck)
      for m in models/stories260K.bin "$F/s260k-w4a4kv4.comet"; do
        n=$(basename "$m"); n=${n%%.*}
        timeout 150 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
          node bin/comet.js run "Once upon a time" --model "$m" --backend cuda --temperature 0 --max-tokens 40 > "$L/memcheck-$n.log" 2>&1
        echo "$n rc=$? $(grep -E 'ERROR SUMMARY' "$L/memcheck-$n.log" | tail -1)"
      done ;;
    chaos)
      COMET_DEVICE_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" timeout 110 node node_modules/tsx/dist/cli.mjs bench/chaos/run.ts \
        --backend cuda --max-batch 256 --max-queue 64 --kv-memory 8M --max-step-tokens 4096 --requests 200 --rounds 2 \
        --concurrency 64 --deadline 90 --out "$L" > "$L/chaos.log" 2>&1
      echo "rc=$?"; tail -12 "$L/chaos.log" ;;
    webgpu)
      timeout 200 node node_modules/tsx/dist/cli.mjs bench/webgpu/decode.ts --shape llama3.2-1b --steps 128 --out "$L" > "$L/decode.log" 2>&1
      echo "rc=$?"; tail -25 "$L/decode.log" ;;
    quant)
      M=../shared/models/wikillama-28M; TX=../shared/models/texts/wiki_heldout_a.txt
      for b in sim cuda; do for w in rtn gptq; do
        ( /usr/bin/time -f "%e s wall, %M KB peak" timeout 300 node bin/comet.js quantize --model $M --calib $TX --out /tmp/wl-$b-$w.comet \
            --weights $w --backend $b --json > "$L/q-$b-$w.json" 2> "$L/q-$b-$w.err" ) &
      done; done; wait
      for b in sim cuda; do for w in rtn gptq; do
        echo "$b $w: $(tail -1 "$L/q-$b-$w.err") $(sha256sum /tmp/wl-$b-$w.comet 2>/dev/null | cut -c1-16)"
        timeout 120 node bin/comet.js eval ppl --model /tmp/wl-$b-$w.comet --text $TX --windows 16 --backend cuda --json > "$L/ppl-$b-$w.json" 2>&1
        echo "  ppl16 $(tail -c 300 "$L/ppl-$b-$w.json")"
      done; done
      OUT=$L LAYERS=${LAYERS:-4} bash device/quant-llama3.sh ;;
    serve)
      OUT=$L SERVE_DIR=$F MODE=bench BUDGET_S=${SERVE_S:-300} bash device/serve.sh ;;
  esac
  pack "$part"
done
echo "done after $(since)"
