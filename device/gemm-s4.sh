#!/usr/bin/env bash
# Session 4 gemm device calls (2026-12-02, H200), run from the repo root with .device/gemm carried: tree.tgz (the gemm
# worktree: `git ls-files -co --exclude-standard | tar -czf`), addon.tar.xz (/tmp/build-gemm/Release: comet_cuda.node,
# libcomet_cuda.so, libcudart), for node tests also .device/node.xz and .device/node_modules.tar.xz (device/pack.sh).
# Usage: BUDGET=310 bash device/gemm-s4.sh <step...>   (check mindep gcheck nodetests bench table memcheck sass ncu)
set -uo pipefail
R=$(pwd); D=$R/.device/gemm; O=${OUT:-/tmp/out}; mkdir -p "$O"
W=/tmp/w; [ -d $W/bench ] || { mkdir -p $W && tar -xzf $D/tree.tgz -C $W; }
A=/tmp/addon; [ -f $A/libcomet_cuda.so ] || { mkdir -p $A && tar -xJf $D/addon.tar.xz -C $A; }
LIB=$A/libcomet_cuda.so
cd $W
B="python3 bench/gemm/bench.py --lib $LIB"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { echo $(( ${BUDGET:-310} - ($(date +%s) - T0) )); }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$O/gpu.txt"
for what in "$@"; do
  echo "=== $what $(date -u +%H:%M:%S) ($(left) s left)"
  [ "$(left)" -lt 15 ] && { echo "no time left: skipped"; continue; }
  case $what in
    check) timeout 60 $B check 2>&1 | tee "$O/check.txt" | tail -8;;
    mindep) timeout 90 $B mindep 2>&1 | tee "$O/mindep.txt" | tail -12;;
    gcheck) timeout 60 $B group-check 2>&1 | tee "$O/group_check.txt" | tail -6;;
    nodetests)  # the cross-backend tests of the W4Ax GEMM and the engine's "batched == alone" on the CUDA row
      mkdir -p .device && cp $R/.device/node.xz $R/.device/node_modules.tar.xz .device/ && source device/unpack.sh; set +e
      COMET_CUDA_ADDON=$A/comet_cuda.node COMET_TEST_CUDA=1 timeout 120 node node_modules/vitest/vitest.mjs run test/ops.test.ts \
        test/engine.test.ts -t "matmul w4|matmulMany|batched forward|a completion equals" --reporter=verbose > "$O/tests.log" 2>&1
      echo "rc=$?"; grep -E "×|FAIL|Test Files|Tests |AssertionError" "$O/tests.log" | head -30;;
    bench) timeout $(( $(left) - 5 )) $B bench --ms 16,64,256,1024,4096 --fracs 0.10 --out "$O/bench" 2>&1 | tee "$O/bench.txt" | cut -c1-200;;
    table) timeout $(( $(left) - 5 )) $B bench --out "$O/table" 2>&1 | tee "$O/table.txt" | cut -c1-200;;
    memcheck)
      timeout 60 compute-sanitizer --tool memcheck --print-limit 20 $B check --small 2>&1 | tee "$O/memcheck.txt" | tail -3
      timeout 60 compute-sanitizer --tool memcheck --print-limit 20 $B mindep --small 2>&1 | tee "$O/memcheck_mindep.txt" | tail -3;;
    sass)
      cuobjdump -sass -arch sm_90a $LIB > /tmp/sass.txt
      awk '/Function : .*gemm_v7/{on=1} /Function : /&&!/gemm_v7/{on=0} on' /tmp/sass.txt > "$O/sass_v7.txt"; wc -l "$O/sass_v7.txt";;
    ncu)  # stall samples per SASS line of v7 at M = 1024, L3-8B gate_up (the in-CTA-total NT = 64 tiles)
      timeout $(( $(left) - 5 )) ncu --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters \
        --import-source no -k regex:gemm_v7 --launch-skip 1 --launch-count 1 -o /tmp/v7prof -f $B one --M 1024 --N 28672 --variant 6 > "$O/ncu_run.txt" 2>&1
      ncu --import /tmp/v7prof.ncu-rep --page details > "$O/ncu_details.txt" 2>&1
      ncu --import /tmp/v7prof.ncu-rep --page source --csv --print-source sass > "$O/ncu_source.csv" 2>&1
      grep -E "gemm_|Duration|Issue Slots|No Eligible|Eligible Warps|Warp Cycles|Executed Ipc" "$O/ncu_details.txt" | head -12; wc -l "$O/ncu_source.csv";;
  esac
done
echo "=== done $(date -u +%H:%M:%S) ($(left) s left)"
