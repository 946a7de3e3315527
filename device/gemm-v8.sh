#!/usr/bin/env bash
# The W4Ax GEMM v8 verification in one call (2026-12-03, H200), from the repo root: the library's exactness
# (bench.py check over every variant, mindep, group-check), compute-sanitizer memcheck and racecheck on v8, the
# benchmark table beside cuBLAS FP16 / INT8 / FP8 in the same process (8 shapes x M in {1, 16, 64, 256, 1024, 4096} x
# 10% / 25% INT8 blocks), the same rows with the previous library (v7 of session 6, libG.so below) for a same-call ratio, then
# every test file with a CUDA row (ops, end to end with the .comet greedy gates, engine, decode graphs).
# Here first:
#   cmake -S cuda -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/cbuild -j2
#   mkdir -p .device/cuda-tests && tar -cJf .device/cuda-tests/addon.tar.xz -C /tmp/cbuild/Release .
#   bash device/pack.sh                      (.device/node.xz, .device/node_modules.tar.xz)
#   the previous library for `ab`: .device/g7/libs.tar.xz holding libG.so (nvcc -shared gemm_w4ax.cu gemm_w4ax_sm90.cu
#   of 53a41f3, sm_90a)
# ../shared/models must be staged first (`bash device/cuda-tests.sh stage`, its header says how). Carry .device/node.xz
# .device/node_modules.tar.xz .device/cuda-tests (without the shared parts) .device/g7. Results: $OUT/r.tgz.
# Usage: BUDGET=560 bash device/gemm-v8.sh [steps...]   (default: check memcheck race table ab tests)
set -uo pipefail
OUT=${OUT:-/tmp/comet-out}; O=$OUT/r; mkdir -p "$O"
A=/tmp/addon; [ -f $A/libcomet_cuda.so ] || { mkdir -p $A && tar -xJf .device/cuda-tests/addon.tar.xz -C $A; }
B="python3 bench/gemm/bench.py --lib $A/libcomet_cuda.so"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { echo $(( ${BUDGET:-560} - ($(date +%s) - T0) )); }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$O/gpu.txt"
for what in ${@:-check memcheck race table ab tests}; do
  echo "=== $what $(date -u +%H:%M:%S) ($(left) s left)"
  [ "$(left)" -lt 20 ] && { echo "no time left: skipped"; continue; }
  case $what in
    check)
      timeout 90 $B check 2>&1 | tee "$O/check.txt" | tail -2
      timeout 90 $B mindep 2>&1 | tee "$O/mindep.txt" | tail -2
      timeout 60 $B group-check 2>&1 | tee "$O/group_check.txt" | tail -2;;
    memcheck)
      timeout 90 compute-sanitizer --tool memcheck --print-limit 20 $B check --small 2>&1 | tee "$O/memcheck.txt" | tail -2
      timeout 90 compute-sanitizer --tool memcheck --print-limit 20 $B mindep --small 2>&1 | tee "$O/memcheck_mindep.txt" | tail -2;;
    race)
      timeout 120 compute-sanitizer --tool racecheck --racecheck-report hazard $B check --small --variants 6 2>&1 \
        | tee "$O/racecheck.txt" | tail -3;;
    table)
      timeout $(( $(left) - 10 )) $B bench --out "$O/table" > "$O/table.txt" 2>&1
      echo "rc=$? $(grep -c 'M=' "$O/table.txt") rows, $(grep -c MISMATCH "$O/table.txt") mismatch lines";;
    ab)  # the previous library, same rows, same call (10% INT8 blocks, M >= 64: the rows v8 changes)
      mkdir -p /tmp/libs && tar -xJf .device/g7/libs.tar.xz -C /tmp/libs libG.so
      timeout 90 python3 bench/gemm/bench.py --lib /tmp/libs/libG.so bench --ms 64,256,1024,4096 --fracs 0.10 --out "$O/ab_v7" \
        > "$O/ab_v7.txt" 2>&1; echo "rc=$? $(grep -c 'M=' "$O/ab_v7.txt") rows";;
    tests)
      source device/unpack.sh; set +e
      [ -d ../shared/models ] || { mkdir -p .. && cat /tmp/cuda-tests/shared.tar.xz.part* | xz -dc | tar -xf - -C ..; } \
        || echo "../shared/models: not staged (bash device/cuda-tests.sh stage)"
      export COMET_CUDA_ADDON=$A/comet_cuda.node
      FILES=$(grep -lE 'eachBackend|COMET_TEST_CUDA' test/*.test.ts)
      COMET_TEST_CUDA=1 timeout $(( $(left) - 10 )) node node_modules/vitest/vitest.mjs run $FILES --reporter=verbose > "$O/tests.log" 2>&1
      echo "rc=$?"; grep -E "×|Test Files|Tests |AssertionError|first difference" "$O/tests.log" | head -30;;
  esac
  tar -czf "$OUT/r.tgz" -C "$OUT" r 2>/dev/null
done
echo "=== done $(date -u +%H:%M:%S) ($(left) s left)"
tar -czf "$OUT/r.tgz" -C "$OUT" r && rm -rf "$O"  # one file comes back
