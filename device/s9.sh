#!/usr/bin/env bash
# The lead's GPU calls of session 9 (2026-12-03), by PARTS, in one call or warm calls back to back:
#   attn     test/ops.test.ts, the CUDA rows of the KV4 attention (the contract bit for bit at LLaMA shapes, ragged
#            decode batches and prefill chunks, split and one-block modes) and of the quantizers / norms
#   tests    every test file with a CUDA row that does not read ../shared (ops, engine, engine graphs and their timing,
#            CUDA errors; TEST_MORE=test/server-features.test.ts with the full node_modules): the engine's captured steps and streams on the GPU
#   e2e      `comet bench e2e --shape llama3-8b --no-baseline` at BATCHES (default 1,16,64,256): its greedy gate
#            (stories260K .bin / .comet and a B = 32 W4A4KV4 .comet), decode steps and the per-op table (no FP16
#            ratio is claimed from this part)
#   verify   `comet eval verify --backend cuda` (greedy tokens vs the simulator) on wikillama-28M W4A4KV4
#            (.device/s9/wl.comet.xz: comet quantize --model ../shared/models/wikillama-28M, xz; head_dim 64) and the
#            two stories260K .comet files
#   race     compute-sanitizer racecheck, then memcheck, on the CUDA attention rows of test/ops.test.ts
#   ncu      ncu on attn_kv4_mma inside the same bench (batch BATCH, default 256; context 1024): details, and the
#            per-SASS-line and per-source-line counters (attn-sass.csv.gz, attn-cuda.csv.gz)
#   kern     ncu's gpu__time_duration of every W4A4KV4-step kernel of `comet bench e2e` at batch BATCH (kern.csv;
#            ~300 s: the synthetic model is quantized and the f32 gate runs under ncu first, unprofiled)
#   base     `comet bench e2e --shape llama3-8b` with the PyTorch baselines after it in the same call
#            (bench/e2e/torch_fast.py: compiled FP16, INT4 weight-only, FP8), batches 1,16,64,256, decode and TTFT (no
#            throughput run)
#   webgpu   bench/webgpu/h200.sh (WebGPU beside CUDA, batch 1, LLaMA-3.2-1B shape; STEPS, default 128)
# Here first:
#   cmake -S cuda -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/cbuild -j2
#   mkdir -p .device/s9 && tar -cJf .device/s9/addon.tar.xz -C /tmp/cbuild/Release .
# Carry .device/node.xz .device/s9 and node_modules as .device/node_modules.tar.xz or (to leave room for the
# wikillama .comet under the 64 MiB carry) the slimmer .device/s9/nm-slim.tar.xz; webgpu: also .gl. Logs:
# $OUT/p-<part>.tgz, summary on stdout.
set -uo pipefail
F=${F:-$PWD/.device/s9}
source device/session-env.sh
C="node bin/comet.js"
run_part() {
  local part=$1 L=/tmp/p/$1; mkdir -p $L
  echo "=== $part [$(since)]"
  case $part in
    attn)
      COMET_TEST_CUDA=1 timeout 200 node node_modules/vitest/vitest.mjs run test/ops.test.ts \
        -t "ops on cuda.*(attention|quantiz|rmsnorm|silu|rope|kv)" --reporter=verbose > $L/ops.log 2>&1
      echo "rc=$?"; grep -E "×|✗|FAIL|Tests |differ|AssertionError" $L/ops.log | head -30 ;;
    tests)
      COMET_TEST_CUDA=1 timeout ${TESTS_S:-300} node node_modules/vitest/vitest.mjs run test/ops.test.ts test/engine.test.ts \
        test/engine-graphs.test.ts test/engine-graphs-timing.test.ts test/cuda-errors.test.ts ${TEST_MORE:-} \
        --reporter=verbose > $L/tests.log 2>&1
      echo "rc=$?"; grep -E "×|✗|FAIL|Test Files|Tests |AssertionError|first difference" $L/tests.log | head -40 ;;
    race)
      for tool in racecheck memcheck; do
        COMET_TEST_CUDA=1 timeout ${RACE_S:-150} compute-sanitizer --tool $tool --target-processes all --error-exitcode 9 \
          node node_modules/vitest/vitest.mjs run test/ops.test.ts -t "ops on cuda.*attention" > $L/$tool.log 2>&1
        echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|Tests |hazard" $L/$tool.log | head -8
      done ;;
    e2e)
      COMET_E2E_CLIP_SEARCH=0 timeout ${E2E_S:-240} $C bench e2e --shape llama3-8b --backend cuda \
        --batches ${BATCHES:-1,16,64,256} --steps 10 --throughput 0 --no-baseline \
        --check models/stories260K.comet $F/s260k-w4a4kv4.comet --out $L/res > /dev/null 2> $L/bench.log
      echo "rc=$?"; grep -vE "^\s*$" $L/bench.log | tail -12; cat $L/res/*.md 2>/dev/null | grep -E "^\| (batch|[0-9]|attentionKv4|gemm|addRms|silu|rope|quant|\*\*)" ;;
    ncu)
      timeout 200 ncu --target-processes all -k regex:attn_kv4_mma --launch-skip 64 --launch-count 1 --set full -o $L/attn \
        $C bench e2e --shape llama3-8b --batches ${BATCH:-256} --no-baseline --throughput 0 --steps 2 --out $L/e2e > $L/ncu.log 2>&1
      echo "ncu rc=$?"; tail -3 $L/ncu.log
      ncu --import $L/attn.ncu-rep --page details > $L/attn-details.txt 2>&1
      grep -E "Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Theoretical Occupancy|Block Limit|Dynamic Shared" $L/attn-details.txt | head -30
      ncu --import $L/attn.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > $L/attn-sass.csv.gz
      ncu --import $L/attn.ncu-rep --page source --csv --print-source cuda 2>/dev/null | gzip > $L/attn-cuda.csv.gz
      ls -la $L/*.gz; rm -f $L/attn.ncu-rep ;;
    kern)
      # every kernel's own duration (serialized by ncu, caches and clocks left alone) over the first KERN_N launches
      # of a bench at batch BATCH: the step's kernel sum against its graph time is the launch-gap overhead
      timeout ${KERN_S:-420} ncu --target-processes all --metrics gpu__time_duration.sum -k regex:"${KERN_RE:-row_quant|gemm_decode|gemm_v8|v8_pack|rope_kv_append_kv4|attn_kv4|silu_mul_quant|gemm_f16w}" --cache-control none \
        --clock-control none --csv --launch-count ${KERN_N:-1500} $C bench e2e --shape llama3-8b --batches ${BATCH:-1} \
        --no-baseline --throughput 0 --steps 2 --out $L/e2e > $L/kern.csv 2> $L/kern.err
      echo "kern rc=$?"; wc -l $L/kern.csv; tail -2 $L/kern.err
      python3 bench/e2e/kern_table.py $L/kern.csv | tee $L/kern.md | head -30 ;;
    base)
      COMET_E2E_CLIP_SEARCH=0 COMET_E2E_BASELINE_TIMEOUT=${BASELINE_S:-200} timeout ${BASE_S:-330} $C bench e2e --shape llama3-8b \
        --backend cuda --batches 1,16,64,256 --steps 10 --throughput 0 --check models/stories260K.comet $F/s260k-w4a4kv4.comet \
        --out $L/res > /dev/null 2> $L/bench.log
      echo "rc=$?"; grep -vE "^\s*$" $L/bench.log | tail -14; cat $L/res/*.md 2>/dev/null | grep -E "^\| (batch|[0-9]|attentionKv4|gemm|addRms|silu|rope|quant|\*\*)" ;;
    verify)
      for m in /tmp/wl.comet $F/s260k-w4a4kv4.comet models/stories260K.comet; do
        [ -f $m ] || { [ -f $F/wl.comet.xz ] && xz -dc $F/wl.comet.xz > /tmp/wl.comet; }
        [ -f $m ] || continue
        timeout 120 $C eval verify --model $m --backend cuda --steps 32 > $L/verify_$(basename $m).log 2>&1
        echo "verify $(basename $m) rc=$?"; tail -3 $L/verify_$(basename $m).log
      done ;;
    webgpu)
      OUT=$L bash bench/webgpu/h200.sh > $L/h200.log 2>&1; echo "rc=$?"; grep -E "^== |tok|ms|×" $L/h200.log | head -30 ;;
  esac
  tar -czf "$OUT/p-$part.tgz" -C $L .
}
for part in ${PARTS:-attn tests e2e verify race}; do run_part $part; done
echo "done [$(since)]"; ls -la "$OUT"
