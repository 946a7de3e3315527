#!/usr/bin/env bash
# Issue 16 on the GPU machine in one call. MODE=bench: the PyTorch baselines (torch_fast.py: FP16 compiled, INT4
# weight-only, FP8) run on the GPU while COMET quantizes its synthetic model on the host; then `comet bench e2e`
# (gate, decode steps, TTFT, the max-throughput run through the engine) reads their JSON. MODE=checks: the engine
# tests on CUDA (batched prefill == alone), the chaos test against `comet serve --backend cuda` at max-batch 256
# with batched prefill, then a throughput run of the engine with the time left.
# Here first (the tree as it will be on main, the addon built from it, node packed):
#   cmake -S cuda -B /tmp/build-serving -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/build-serving -j2
#   P=/work/main/.device/serving; mkdir -p $P && tar -cJf $P/addon.tar.xz -C /tmp/build-serving/Release .
#   git ls-files -co --exclude-standard | grep -v '^node_modules$' | tar -czf $P/tree.tgz -T -
#   comet quantize --model models/stories260K.bin --calib <text> --block 32 --out $P/s260k-w4a4kv4.comet (the gate)
# Carry .device/node.xz .device/node_modules.tar.xz .device/serving; the call's command:
#   mkdir -p /tmp/w && tar -xzf .device/serving/tree.tgz -C /tmp/w device/serve.sh && MODE=bench bash /tmp/w/device/serve.sh
# Env: MODE (bench | checks), SERVE_DIR (.device/serving: addon.tar.xz, the gate .comet, tree.tgz when not main's), BUDGET_S (285),
# BASE_S (baselines' deadline, 135), N (requests of the throughput run, 256), BATCHES (1,16,64,256), STEP_TOKENS (4096).
# $OUT gets at most 8 files back: bench: res/ (md, json, 2 svg), bench.log, baseline.log, baseline.json.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/comet-out}; P=${SERVE_DIR:-$PWD/.device/serving}
mkdir -p "$OUT/res" /tmp/w/.device
if [ -f "$P/tree.tgz" ]; then  # a helper's tree, not main's: run there
  tar -xzf "$P/tree.tgz" -C /tmp/w && cp .device/node.xz .device/node_modules.tar.xz /tmp/w/.device/ && cd /tmp/w || exit 1
fi
source device/unpack.sh; set +e
mkdir -p /tmp/addon && tar -xJf "$P/addon.tar.xz" -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node PYTHONUNBUFFERED=1
MODE=${MODE:-bench}; BUDGET_S=${BUDGET_S:-285}; BASE_S=${BASE_S:-135}; N=${N:-256}
BATCHES=${BATCHES:-1,16,64,256}; STEP_TOKENS=${STEP_TOKENS:-4096}
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; git log -1 --format=%H 2>/dev/null

if [ "$MODE" = bench ]; then
  echo "=== baselines (GPU) beside COMET's host-side model build [$(left) s left]"
  ( timeout $(( BASE_S + 15 )) python3 bench/e2e/torch_fast.py --shape llama3-8b --batches "$BATCHES" --ctx 1024 --in-len 1024 --out-len 512 \
      --requests "$N" --throughput-variants "${TP_VARIANTS:-fp16,fp8}" --deadline-s "$BASE_S" --partial /tmp/baseline-partial.json \
      > /tmp/baseline.out 2> "$OUT/baseline.log"
    rc=$?; tail -1 /tmp/baseline.out > "$OUT/baseline.json"
    python3 -c "import json,sys; json.load(open('$OUT/baseline.json'))" 2>/dev/null || cp /tmp/baseline-partial.json "$OUT/baseline.json" 2>/dev/null
    echo "baselines rc=$rc after $(( $(date +%s) - T0 )) s" >> "$OUT/baseline.log"; touch /tmp/baseline.done ) &
  COMET_E2E_DEADLINE_S=$(( $(left) - 5 )) COMET_E2E_CLIP_SEARCH=0 timeout $(( $(left) - 3 )) node bin/comet.js bench e2e --shape llama3-8b --backend cuda --batches "$BATCHES" \
    --steps 10 --check "$P/s260k-w4a4kv4.comet" --throughput "$N" --prefix "${PREFIX:-8}" --step-tokens "$STEP_TOKENS" --baseline-json "$OUT/baseline.json" \
    --wait-for /tmp/baseline.done --out "$OUT/res" > /dev/null 2> "$OUT/bench.log"
  echo "bench rc=$? after $(( $(date +%s) - T0 )) s"
  wait
  grep -E "rc=|copy|decode batch|ttft|throughput|failed|rror" "$OUT/baseline.log" | head -40
  grep -vE "^\s*$" "$OUT/bench.log" | tail -30
fi

if [ "$MODE" = checks ]; then
  # $OUT: engine-cuda.log, chaos.log, chaos.md, chaos.json, fp8.json, fp8.log, serve.md, serve.json
  echo "=== engine tests on cuda: rows alone bit for bit, batching, batched prefill, prefix caching [$(left) s left]"
  COMET_TEST_CUDA=1 timeout 110 node node_modules/vitest/vitest.mjs run test/engine.test.ts -t "on cuda" > "$OUT/engine-cuda.log" 2>&1; echo "rc=$?"
  grep -E "✓|×|Tests |AssertionError|Expected|Received|expected" "$OUT/engine-cuda.log" | head -24
  echo "=== chaos: comet serve --backend cuda, max-batch 256, batched prefill [$(left) s left]"
  COMET_DEVICE_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" timeout 90 node node_modules/tsx/dist/cli.mjs bench/chaos/run.ts \
    --backend cuda --max-batch 256 --max-queue 64 --kv-memory 8M --max-step-tokens 4096 --requests 200 --rounds 2 --concurrency 64 --deadline 80 \
    --out /tmp/chaos > "$OUT/chaos.log" 2>&1; echo "rc=$?"
  cp /tmp/chaos/chaos-*.md "$OUT/chaos.md"; cp /tmp/chaos/chaos-*.json "$OUT/chaos.json"
  tail -14 "$OUT/chaos.log"
  if [ "$(left)" -gt 60 ]; then
    echo "=== FP8 baseline (torch._scaled_mm) [$(left) s left]"
    timeout 70 python3 bench/e2e/torch_fast.py --shape llama3-8b --variants fp8 --compile none --batches "$BATCHES" --ctx 1024 --in-len 1024 \
      --out-len 512 --requests "$N" --throughput-variants fp8 --deadline-s 60 --partial /tmp/fp8-partial.json > /tmp/fp8.out 2> "$OUT/fp8.log"
    echo "rc=$?"; tail -1 /tmp/fp8.out > "$OUT/fp8.json"; python3 -c "import json; json.load(open('$OUT/fp8.json'))" 2>/dev/null || cp /tmp/fp8-partial.json "$OUT/fp8.json"
    grep -E "decode|ttft|throughput|rror" "$OUT/fp8.log" | head
  fi
  L=$(left)
  if [ "$L" -gt 90 ]; then
    echo "=== COMET serve run again (device argmax in mixed steps) [$L s left]"
    COMET_E2E_DEADLINE_S=$(( L - 5 )) COMET_E2E_CLIP_SEARCH=0 COMET_E2E_FAST=0 COMET_E2E_OPS=0 timeout $(( L - 3 )) node bin/comet.js bench e2e --shape llama3-8b \
      --backend cuda --batches 256 --steps 5 --throughput "$N" --prefix 4 --step-tokens "$STEP_TOKENS" --no-baseline --out /tmp/res2 > /dev/null 2> /tmp/bench2.log
    echo "rc=$?"; grep -E "serve run|prefix|decode batch|ttft|rror" /tmp/bench2.log | head
    cp /tmp/res2/*.md "$OUT/serve.md"; cp /tmp/res2/*.json "$OUT/serve.json"
  fi
fi
ls -la "$OUT" "$OUT"/res 2>/dev/null | head -30
echo "done after $(( $(date +%s) - T0 )) s"
