#!/usr/bin/env bash
# On the GPU machine (device tool), from the repo root, with the library built on the CPU machine and carried in
# .device/gemm/libcomet_cuda.so.  Usage: bash bench/gemm/device_run.sh <what...>  (sass check sanitize quick full)
set -uo pipefail
LIB=.device/gemm/libcomet_cuda.so
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
        for f in gemm_decodeILi1ELi128 gemm_decodeILi8ELi128 gemm_prefillILb0ELi128 gemm_prefillILb1ELi128 gemm_prefillILb0ELi32; do
          echo "$arch $f: $(awk -v f=$f '/Function :/{on=index($0,f)>0} on' /tmp/sass.txt | grep -oE '\b(IMMA\.[A-Z0-9.]+|LDG\.E\.[0-9A-Z.]+|LDS(\.[0-9U]+)?|LDGSTS\.[A-Z0-9.]+|I2F[A-Z0-9.]*|LDL[A-Z0-9.]*|STL[A-Z0-9.]*|FFMA|FMUL|FADD)\b' | sort | uniq -c | tr '\n' ' ')"
        done
      done | tee "$OUT/sass.txt";;
    check) python3 bench/gemm/bench.py --lib $LIB check 2>&1 | tee "$OUT/check.txt" | tail -25;;
    sanitize) compute-sanitizer --tool memcheck --print-limit 20 python3 bench/gemm/bench.py --lib $LIB check --small 2>&1 | tee "$OUT/sanitize.txt" | tail -15;;
    ncu)
      for cfg in "--M 16 --N 28672" "--M 1 --N 4096 --K 14336" "--M 64 --N 28672" "--M 1024 --N 28672 --variant 2"; do
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
    quick) python3 bench/gemm/bench.py --lib $LIB bench --quick --out "$OUT" 2>&1 | tee "$OUT/quick.txt";;
    full) python3 bench/gemm/bench.py --lib $LIB bench --out "$OUT" 2>&1 | tee "$OUT/full.txt";;
  esac
done
