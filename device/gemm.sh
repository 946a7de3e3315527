#!/usr/bin/env bash
# On the GPU machine (device tool), from the repo root, with the library built on the CPU machine and carried in
# .device/gemm/libcomet_cuda.so.  Usage: bash device/gemm.sh <what...>  (sass check sanitize quick full final ...)
set -uo pipefail
LIB=${LIB:-.device/gemm/libcomet_cuda.so}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
for what in "$@"; do
  echo "=== $what $(date -u +%H:%M:%S)"
  case $what in
    sass)
      for arch in sm_90a sm_80; do
        cuobjdump -sass -arch $arch $LIB > /tmp/sass.txt
        for f in gemm_decodeILi1ELi128 gemm_decodeILi8ELi128 gemm_decode_groupILi1ELi128 gemm_decode_groupILi2ELi128 gemm_decode_groupILi4ELi128 gemm_prefillILb0ELi128 gemm_prefillILb1ELi128 gemm_prefillILb0ELi32 gemm_v7ILi128 gemm_v7ILi64 gemm_v7ILi32; do
          echo "$arch $f: $(awk -v f=$f '/Function :/{on=index($0,f)>0} on' /tmp/sass.txt | grep -oE '\b([A-Z]*GMMA[A-Za-z0-9._]*|WARPGROUP\.[A-Z.]+|WARPSYNC|IMMA\.[A-Z0-9.]+|LDG\.E\.[0-9A-Z.]+|LDS(\.[0-9U]+)?|LOP3\.LUT|SHF\.[A-Z.0-9]+|IMAD\.SHL\.U32|IMAD\.[A-Z.0-9]+|IADD3|BAR\.SYNC[A-Z.]*|LDGSTS\.[A-Z0-9.]+|I2F[A-Z0-9.]*|LDL[A-Z0-9.]*|STL[A-Z0-9.]*|FFMA|FMUL|FADD)\b' | sort | uniq -c | tr '\n' ' ')"
        done
      done | tee "$OUT/sass.txt";;
    check) python3 bench/gemm/bench.py --lib $LIB check 2>&1 | tee "$OUT/check.txt" | tail -25;;
    sanitize) compute-sanitizer --tool memcheck --print-limit 20 python3 bench/gemm/bench.py --lib $LIB check --small 2>&1 | tee "$OUT/sanitize.txt" | tail -15;;
    ncu)
      for cfg in "--M 16 --N 28672" "--M 1 --N 4096 --K 14336" "--M 64 --N 28672" "--M 1024 --N 28672 --variant 6"; do
        ncu --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section Occupancy --section MemoryWorkloadAnalysis \
          -k regex:gemm_ --launch-skip 1 --launch-count 1 python3 bench/gemm/bench.py --lib $LIB one $cfg > /tmp/ncu.txt 2>&1
        echo "--- ncu $cfg"; grep -E "gemm_|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Registers|Achieved Occupancy|Theoretical Occupancy|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|L1/TEX Hit|L2 Hit|stalled|Block Limit" /tmp/ncu.txt | cut -c1-200
        cat /tmp/ncu.txt >> "$OUT/ncu.txt"
      done 2>&1 | tee "$OUT/ncu_summary.txt";;
    quick32) python3 bench/gemm/bench.py --lib $LIB bench --B 32 --shapes 2,3 --ms 1,16,64,1024 --out /tmp/b32 2>&1 | tee "$OUT/quick32.txt";;
    ncu2)
      ncu --section SpeedOfLight --section ComputeWorkloadAnalysis --section InstructionStats --section WarpStateStats \
        -k regex:gemm_ --launch-skip 1 --launch-count 1 python3 bench/gemm/bench.py --lib $LIB one --M 1024 --N 28672 --variant 2 > "$OUT/ncu_prefill.txt" 2>&1
      grep -E "Duration|Executed Ipc|Issue Slots|Pipe|Instructions|Warp Cycles|stall" "$OUT/ncu_prefill.txt" | cut -c1-160 | head -40;;
    final)  # check every variant; bench with the auto choice if exact, else with v4 forced; sanitize + ncu of v7
      timeout 150 python3 bench/gemm/bench.py --lib $LIB check 2>&1 | tee "$OUT/check.txt" | tail -30
      if grep -q "cases bit-exact" "$OUT/check.txt" && ! grep -q MISMATCH "$OUT/check.txt"; then PV=0; NV=6; else PV=2; NV=2
        python3 bench/gemm/bench.py --lib $LIB check --variants 1,2,3 2>&1 | tee "$OUT/check_no_v7.txt" | tail -8; fi
      echo "=== bench with --prefill-variant $PV $(date -u +%H:%M:%S)"
      timeout 300 python3 bench/gemm/bench.py --lib $LIB bench --prefill-variant $PV --out "$OUT" 2>&1 | tee "$OUT/full.txt"
      echo "=== sanitize $(date -u +%H:%M:%S)"
      timeout 90 compute-sanitizer --tool memcheck --print-limit 20 python3 bench/gemm/bench.py --lib $LIB check --small 2>&1 | tee "$OUT/sanitize.txt" | tail -4
      echo "=== ncu variant $NV $(date -u +%H:%M:%S)"
      timeout 90 ncu --section SpeedOfLight --section ComputeWorkloadAnalysis --section InstructionStats --section WarpStateStats --section SchedulerStats \
        -k regex:gemm_ --launch-skip 1 --launch-count 1 python3 bench/gemm/bench.py --lib $LIB one --M 1024 --N 28672 --variant $NV > "$OUT/ncu_prefill.txt" 2>&1
      grep -E "gemm_|Duration|Executed Ipc|Issue Slots|Pipe|Warp Cycles|No Eligible|Eligible Warps|Compute \(SM\)|Memory Throughput" "$OUT/ncu_prefill.txt" | cut -c1-150 | head -30;;
    gcheck) timeout 90 python3 bench/gemm/bench.py --lib $LIB group-check 2>&1 | tee "$OUT/group_check.txt" | tail -12;;
    gsan) timeout 120 compute-sanitizer --tool memcheck --print-limit 20 python3 bench/gemm/bench.py --lib $LIB group-check --small 2>&1 | tee "$OUT/group_memcheck.txt" | tail -6;;
    gbench) timeout 200 python3 bench/gemm/bench.py --lib $LIB group-bench --out "$OUT" 2>&1 | tee "$OUT/group_bench.txt";;
    cross) timeout 150 python3 bench/gemm/bench.py --lib $LIB crossover 2>&1 | tee "$OUT/crossover.txt";;
    quick) python3 bench/gemm/bench.py --lib $LIB bench --quick --out "$OUT" 2>&1 | tee "$OUT/quick.txt";;
    full) python3 bench/gemm/bench.py --lib $LIB bench --out "$OUT" 2>&1 | tee "$OUT/full.txt";;
  esac
done
