#!/usr/bin/env bash
# On the GPU machine, one call: the decode ops' checks, then before/after timings of them (cuda/NOTES-ops.md).
# The fast KV4 attention (these kernels) runs under COMET_ATTN_FAST=1; the default is the simulator-exact kernel.
# Here first (two addons: the current tree's and a baseline build of an older tree; build from the current tree,
# or test/ops.test.ts's bit-equal attention cases fail for want of comet_attention_kv4_exact):
#   cmake -S cuda -B /tmp/ops-build -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/ops-build -j2
#   mkdir -p .device/ops && tar -cJf .device/ops/addon.tar.xz -C /tmp/ops-build/Release .
#   (the same from the baseline tree into .device/ops/addon-base.tar.xz; .device/ops/l4.json: a LlamaConfig)
# Carry .device/node.xz .device/node_modules.tar.xz .device/ops. Env: BATCHES (1,64), STEPS (5), SHAPE
# (.device/ops/l4.json: LLaMA-3-8B dims, 4 layers), BASE (1: also time the baseline addon).
# A fast kernel that fails its tests is switched off (its env switch) before any timing.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-/tmp/comet-out}
mkdir -p "$OUT"
source device/unpack.sh
set +e
for a in addon addon-base; do [ -f .device/ops/$a.tar.xz ] && mkdir -p /tmp/$a && tar -xJf .device/ops/$a.tar.xz -C /tmp/$a; done
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
export COMET_ATTN_FAST=${COMET_ATTN_FAST:-1}  # bench and tier-3 tests on the fast kernels
SHAPE=${SHAPE:-.device/ops/l4.json}; BATCHES=${BATCHES:-1,16,32,64}; STEPS=${STEPS:-5}
el() { echo $(( $(date +%s) - T0 )); }
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "=== tests (cuda) [$(el) s]"
COMET_TEST_CUDA=1 timeout 150 node node_modules/vitest/vitest.mjs run test/ops.test.ts > "$OUT/ops.log" 2>&1; echo "rc=$?"
grep -E "×|Tests |AssertionError|expected" "$OUT/ops.log" | head -30
echo "--- f32 GEMM kernels forced onto the small matmul shapes" >> "$OUT/ops.log"
COMET_GEMM_F32=f32 COMET_TEST_CUDA=1 timeout 60 node node_modules/vitest/vitest.mjs run test/ops.test.ts -t "cuda.*matmul f32" >> "$OUT/ops.log" 2>&1; echo "f32-forced rc=$?"
grep -E "×|Tests " "$OUT/ops.log" | tail -3
# (the "bit-equal" cases are the simulator-exact kernel's, ops_attention_exact.cu: not switched here)
if grep -E "×" "$OUT/ops.log" | grep -v "bit-equal" | grep -qE "attention kv4|KV4 attention|ragged"; then  # the ring, then the path
  COMET_ATTN_TC_PIPE=0 COMET_TEST_CUDA=1 timeout 90 node node_modules/vitest/vitest.mjs run test/ops.test.ts -t "cuda.*attention" > "$OUT/ops-nopipe.log" 2>&1
  if grep -E "×" "$OUT/ops-nopipe.log" | grep -qv "bit-equal"; then export COMET_ATTN_TC=0; echo "attention (tensor cores) failed: COMET_ATTN_TC=0"
  else export COMET_ATTN_TC_PIPE=0; echo "attention ring failed, registers pass: COMET_ATTN_TC_PIPE=0"; fi
fi
if grep -qE "×.*matmul f32 T=(12|16|20|32) " "$OUT/ops.log"; then export COMET_GEMV_MAX_T=8; echo "gemv chunk failed: COMET_GEMV_MAX_T=8"; fi
if grep -qE "×.*matmul f32 T=(40|256|128) " "$OUT/ops.log"; then export COMET_GEMM_F32_TILE=old; echo "8x8 tile failed: COMET_GEMM_F32_TILE=old"; fi
if grep -qE "×.*rmsnorm_quant" "$OUT/ops.log"; then export COMET_RMSNORM_QUANT_LEGACY=1; echo "rmsnorm_quant failed: legacy kernel"; fi
echo "=== cuda e2e [$(el) s]"
COMET_TEST_CUDA=1 timeout 150 node node_modules/vitest/vitest.mjs run test/e2e.test.ts -t "on cuda" > "$OUT/e2e.log" 2>&1; echo "rc=$?"
grep -E "✓|×|Tests |first difference" "$OUT/e2e.log" | head -12

bench() {  # $1 name, $2 addon dir, $3 timeout (s)
  echo "=== bench e2e $1 [$(el) s]"
  COMET_CUDA_ADDON=/tmp/$2/comet_cuda.node COMET_E2E_CLIP_SEARCH=0 timeout ${3:-110} node bin/comet.js bench e2e --shape "$SHAPE" \
    --backend cuda --batches "$BATCHES" --steps "$STEPS" --ctx 1024 --in-len 128 --out-len 16 --mem-budget ${MEM:-8} --no-baseline \
    --out /tmp/res-$1 > /dev/null 2> "$OUT/bench-$1.log"
  echo "rc=$?"; grep -E "decode batch|ttft|error|Error" "$OUT/bench-$1.log" | head -8
  cp /tmp/res-$1/*.md "$OUT/$1.md" 2>/dev/null
}
bench new addon
# A/B of one switch on the same addon (e.g. AB=COMET_ATTN_TC_PIPE=0), 4 layers, batches 1 and 64
if [ -n "${AB:-}" ]; then (export $AB; SHAPE=.device/ops/l4.json BATCHES=1,64 bench ab addon 90); fi
[ "${BASE:-1}" = 1 ] && [ -d /tmp/addon-base ] && [ $(el) -lt ${BASE_BEFORE_S:-200} ] && bench base addon-base
for f in new ab base; do [ -f "$OUT/$f.md" ] && { echo "--- $f"; sed -n "/Per-op GPU time/,/^Method/p" "$OUT/$f.md" | grep "^|"; }; done
echo "done [$(el) s]"
