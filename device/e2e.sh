#!/usr/bin/env bash
# On the GPU machine, in one call: the CUDA op tests (cuda half), `comet bench e2e` (ours, then the PyTorch FP16
# baseline, bounded), then the CUDA end-to-end test with the time left. Here first:
#   cmake -S cuda -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j
#   bash device/pack.sh   (once: .device/node.xz, .device/node_modules.tar.xz)
#   mkdir -p .device/e2e && tar -cJf .device/e2e/addon.tar.xz -C build/Release .
# Carry .device/node.xz .device/node_modules.tar.xz .device/e2e. Env: SHAPE (llama3-8b), BATCHES, STEPS,
# BUDGET_S (whole script, default 560), BASELINE_S (default 200), CLIP_SEARCH (1 | 0).
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/comet-out}
mkdir -p "$OUT/res"
source device/unpack.sh
set +e
mkdir -p /tmp/addon && tar -xJf .device/e2e/addon.tar.xz -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
SHAPE=${SHAPE:-llama3-8b}; BATCHES=${BATCHES:-1,8,32,64,128,256}; STEPS=${STEPS:-10}
BUDGET_S=${BUDGET_S:-560}; BASELINE_S=${BASELINE_S:-200}
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "=== op tests (cuda) [$(left) s left]"
COMET_TEST_CUDA=1 timeout 100 node node_modules/vitest/vitest.mjs run test/ops.test.ts -t cuda > "$OUT/ops.log" 2>&1; echo "rc=$?"
grep -E "×|FAIL|Tests |AssertionError" "$OUT/ops.log" | head -30

echo "=== bench e2e $SHAPE [$(left) s left]"
COMET_E2E_CLIP_SEARCH=${CLIP_SEARCH:-1} COMET_E2E_BASELINE_TIMEOUT=$BASELINE_S PYTHONUNBUFFERED=1 \
  timeout $(( $(left) - 30 )) node bin/comet.js bench e2e --shape "$SHAPE" --backend cuda --batches "$BATCHES" --steps "$STEPS" --out "$OUT/res" \
  > /dev/null 2> "$OUT/bench.log"
echo "rc=$?"
grep -vE "^\s*$" "$OUT/bench.log" | tail -40

L=$(left)
if [ "$L" -gt 40 ]; then
  echo "=== cuda end to end test [$L s left]"
  COMET_TEST_CUDA=1 timeout $(( L - 10 )) node node_modules/vitest/vitest.mjs run test/e2e.test.ts -t "on cuda" > "$OUT/cuda-e2e.log" 2>&1; echo "rc=$?"
  grep -E "✓|×|FAIL|Tests |first difference" "$OUT/cuda-e2e.log" | head -12
else echo "=== cuda end to end test skipped ($L s left)"; fi
ls -la "$OUT" "$OUT/res"
cat "$OUT"/res/*.md 2>/dev/null | head -80
