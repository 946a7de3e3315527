#!/usr/bin/env bash
# On the GPU machine, one call (issue 15, decode: KV4 attention on tensor cores, the f16 classifier on tensor cores):
#   1. test/ops.test.ts, the CUDA rows of the KV4 attention and f16-weight tests (the attention contract bit for bit at LLaMA shapes; f16 matmul vs the simulator
#      and rows alone == rows in T = 37 / 300 calls)
#   2. `comet bench e2e --shape llama3-8b --backend cuda --batches 1,16,64,256 --steps 5 --throughput 0
#      --no-baseline` (its own greedy gate: the embedded stories260K; then decode steps and the per-op table)
#   3. greedy gate `comet eval verify` on CUDA for the carried .comet files (wikillama-28M: head_dim 64, GQA 2, the
#      tensor-core attention; stories260K)
# Here first (the tree is this worktree, not /work/main's):
#   cmake -S cuda -B /tmp/build-decode -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/build-decode -j2
#   D=/work/main/.device/decode; mkdir -p $D
#   git ls-files -co --exclude-standard | tar -czf $D/tree.tgz -T -
#   tar -cJf $D/addon.tar.xz -C /tmp/build-decode/Release .
#   (cd /work/main && tar -cf - --exclude=node_modules/webgpu --exclude=node_modules/@typescript \
#      --exclude=node_modules/typescript --exclude=node_modules/playwright-core --exclude=node_modules/openai \
#      --exclude=node_modules/lightningcss-linux-x64-gnu node_modules | xz -T2 -6 > $D/nm.tar.xz)
#   xz -9 -c some-wikillama-28M.comet > $D/wl.comet.xz   (optional)
# Carry .device/node.xz (or put node.xz in $D) and .device/decode. Logs and results in $OUT.
set -uo pipefail
T0=$(date +%s); OUT=${OUT:-/tmp/comet-out}; D=$PWD/.device/decode; BUDGET_S=${BUDGET_S:-285}
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
mkdir -p "$OUT/res" /tmp/w/.device /tmp/addon
# the tree: $D/tree.tgz (a worktree not yet merged), else the checkout the call runs in
if [ -f $D/tree.tgz ]; then tar -xzf $D/tree.tgz -C /tmp/w; else tar -cf - --exclude=./.device . | tar -xf - -C /tmp/w; fi
cp $( [ -f $D/node.xz ] && echo $D/node.xz || echo .device/node.xz ) /tmp/w/.device/node.xz && tar -xJf $D/addon.tar.xz -C /tmp/addon
cd /tmp/w && tar -xJf $D/nm.tar.xz && source device/unpack.sh
set +e
[ -f $D/wl.comet.xz ] && xz -dc $D/wl.comet.xz > /tmp/wl.comet
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "unpacked in $(( $(date +%s) - T0 )) s"

echo "=== op tests, cuda rows [$(left) s left]"
COMET_TEST_CUDA=1 timeout 120 node node_modules/vitest/vitest.mjs run test/ops.test.ts -t "ops on cuda.*(attention kv4|f16 weights)" \
  --reporter=verbose > "$OUT/ops.log" 2>&1; echo "rc=$?"
grep -E "×|✗|FAIL|Tests |differ|AssertionError" "$OUT/ops.log" | head -30
grep -E "ops on cuda" "$OUT/ops.log" | grep -E "attention kv4|f16 weights" | grep -vE "↓" | sed 's/.*ops on cuda[^>]*> //' | head -24

echo "=== bench e2e llama3-8b [$(left) s left]"
COMET_E2E_CLIP_SEARCH=0 PYTHONUNBUFFERED=1 timeout $(( $(left) - 50 )) node bin/comet.js bench e2e --shape llama3-8b --backend cuda \
  --batches 1,16,64,256 --steps 5 --throughput 0 --no-baseline --out "$OUT/res" > /dev/null 2> "$OUT/bench.log"
echo "rc=$?"; grep -vE "^\s*$" "$OUT/bench.log" | tail -25

for m in /tmp/wl.comet models/stories260K.comet; do
  [ -f $m ] || continue
  L=$(left); [ "$L" -gt 15 ] || { echo "=== verify $m skipped ($L s left)"; continue; }
  echo "=== greedy gate: comet eval verify --model $m --backend cuda [$L s left]"
  timeout $(( L - 5 )) node bin/comet.js eval verify --model $m --backend cuda --steps 32 > "$OUT/verify_$(basename $m).log" 2>&1; echo "rc=$?"
  tail -5 "$OUT/verify_$(basename $m).log"
done
echo "total $(( $(date +%s) - T0 )) s"
