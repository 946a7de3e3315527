#!/usr/bin/env bash
# `comet bench e2e` on the GPU machine from a bundle (no node_modules: fits one call beside the .comet files that
# gate it). Payload in .device/e2e2 (made here):
#   comet.mjs    npx esbuild src/cli/main.ts --bundle --platform=node --format=esm --target=node20 \
#                  --outfile=.device/e2e2/comet.mjs --external:webgpu \
#                  --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
#   addon.tar.xz tar -cJf .device/e2e2/addon.tar.xz -C <cmake build>/Release .
#   check.tar.xz the .comet files of the correctness gate (stories260K and wikillama-28M, see bench/results/accuracy)
# Carry .device/node.xz .device/e2e2. Env: SHAPE (llama3-8b), BATCHES, STEPS, BUDGET_S (default 590),
# BASELINE_S (default 300), BASELINE (1 | 0), OPS (1 | 0: per-op timing table). The issue-16 calls: device/serve.sh.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/comet-out}; P=.device/e2e2
mkdir -p "$OUT/res" /tmp/addon /tmp/check
source device/unpack.sh; set +e
tar -xJf $P/addon.tar.xz -C /tmp/addon && xz -dc $P/check.tar.xz | tar -xf - -C /tmp/check
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
SHAPE=${SHAPE:-llama3-8b}; BATCHES=${BATCHES:-1,8,32,64,128,256}; STEPS=${STEPS:-10}
BUDGET_S=${BUDGET_S:-590}; BASELINE_S=${BASELINE_S:-300}
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
NB=""; [ "${BASELINE:-1}" = 0 ] && NB="--no-baseline"
CHECK=$(ls /tmp/check/*.comet | tr '\n' ' ')
echo "=== bench e2e $SHAPE, gate: $CHECK"
COMET_E2E_OPS=${OPS:-1} COMET_E2E_CLIP_SEARCH=0 COMET_E2E_BASELINE_TIMEOUT=$BASELINE_S \
  PYTHONUNBUFFERED=1 timeout $(( BUDGET_S - ($(date +%s) - T0) - 5 )) /tmp/nodebin/node $P/comet.mjs bench e2e --shape "$SHAPE" \
  --backend cuda --batches "$BATCHES" --steps "$STEPS" --check $CHECK --out "$OUT/res" $NB > /dev/null 2> "$OUT/bench.log"
echo "rc=$? after $(( $(date +%s) - T0 )) s"
grep -vE "^\s*$" "$OUT/bench.log" | grep -v "per-op GPU time" | tail -40
ls "$OUT/res"
