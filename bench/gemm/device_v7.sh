#!/usr/bin/env bash
# v7 device session (2026-12-02): run from the repo root on the GPU machine with .device/gemm/ carried
# (libcomet_cuda.so + bench/gemm from the gemm worktree). Usage: bash .device/gemm/device_v7.sh <what...>
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
LIB=$D/libcomet_cuda.so
B="python3 $D/bench.py --lib $LIB"
O=${OUT:-/tmp/out}
mkdir -p "$O"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$O/gpu.txt"
for what in "$@"; do
  echo "=== $what $(date -u +%H:%M:%S)"
  case $what in
    sass)
      cuobjdump -sass -arch sm_90a "$LIB" > /tmp/sass.txt
      for f in gemm_v7ILi128 gemm_v7ILi64 gemm_v7ILi32 gemm_v5; do
        echo "$f: $(awk -v f=$f '/Function :/{on=index($0,f)>0} on' /tmp/sass.txt | grep -oE '\b([A-Z]*GMMA[A-Za-z0-9._]*|WARPGROUP\.[A-Z.]+|USETMAXREG[A-Z.]*|SYNCS\.[A-Z.0-9]+|LDGSTS\.[A-Z0-9.]+|LDL[A-Z0-9.]*|STL[A-Z0-9.]*|BAR\.[A-Z.]+)\b' | sort | uniq -c | tr '\n' ' ')"
      done | tee "$O/sass.txt";;
    smoke) timeout 40 $B one --M 256 --N 4096 --K 4096 --variant 6 && echo SMOKE_OK;;
    check) timeout 120 $B check --variants 0,6 2>&1 | tee "$O/check.txt" | tail -25;;
    checkall) timeout 200 $B check 2>&1 | tee "$O/check_all.txt" | tail -25;;
    quick) timeout 130 $B bench --shapes 2,3 --ms 64,256,1024,4096 --compare-variant 4 --out "$O/quick" 2>&1 | tee "$O/quick.txt";;
    full) timeout 280 $B bench --compare-variant 4 --out "$O/full" 2>&1 | tee "$O/full.txt";;
    memcheck) timeout 90 compute-sanitizer --tool memcheck --print-limit 20 $B check --small --variants 6 2>&1 | tee "$O/memcheck.txt" | tail -4;;
    racecheck) timeout 120 compute-sanitizer --tool racecheck --print-limit 20 $B check --small --variants 6 2>&1 | tee "$O/racecheck.txt" | tail -6;;
    ncu)
      timeout 120 ncu --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
        --section MemoryWorkloadAnalysis -k regex:gemm_v7 --launch-skip 1 --launch-count 1 $B one --M 1024 --N 28672 --variant 6 > "$O/ncu_v7.txt" 2>&1
      grep -E "gemm_|Duration|Executed Ipc|Issue Slots|Pipe|Warp Cycles|No Eligible|Eligible Warps|Compute \(SM\)|Memory Throughput|Stall|stall|L1/TEX|Shared" "$O/ncu_v7.txt" | cut -c1-160 | head -40;;
  esac
done
