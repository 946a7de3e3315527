#!/usr/bin/env bash
# v7 device session (2026-12-02; its library still had v5 as variant 4, now in cuda/lab/, so `full` / `quick` with
# --compare-variant 4 need that build): run from the repo root on the GPU machine with .device/gemm/ carried
# (libcomet_cuda.so + bench/gemm from the gemm worktree). Usage (as run then: the script and bench.py copied into .device/gemm/): bash .device/gemm/device_v7.sh <what...>
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
LIB=$D/addon/libcomet_cuda.so
[ -f "$LIB" ] || { mkdir -p $D/addon && tar -xJf $D/addon.tar.xz -C $D/addon; }
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
    smoke) timeout 25 $B one --M 256 --N 4096 --K 4096 --variant 6 && echo SMOKE_OK;;
    check) timeout 120 $B check --variants 0,6 2>&1 | tee "$O/check.txt" | tail -25;;
    checkall) timeout 200 $B check 2>&1 | tee "$O/check_all.txt" | tail -25;;
    quick) timeout 130 $B bench --shapes 2,3 --ms 64,256,1024,4096 --compare-variant 4 --out "$O/quick" 2>&1 | tee "$O/quick.txt";;
    full) timeout 200 $B bench --compare-variant 4 --out "$O/full" 2>&1 | tee "$O/full.txt" | grep -E "M=|wrote" | cut -c1-230;;
    memcheck) timeout 90 compute-sanitizer --tool memcheck --print-limit 20 $B check --small --variants 6 2>&1 | tee "$O/memcheck.txt" | tail -4;;
    racecheck) timeout 60 compute-sanitizer --tool racecheck --print-limit 20 $B check --small --variants 6 2>&1 | tee "$O/racecheck.txt" | tail -6;;
    ncu)  # the rows that miss their goal: prefill (M = 1024) and M = 64, L3-8B gate_up
      for M in 1024 64; do
        timeout 45 ncu --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
          --section MemoryWorkloadAnalysis --metrics smsp__pcsamp_warps_issue_stalled_long_scoreboard,smsp__pcsamp_warps_issue_stalled_barrier,smsp__pcsamp_warps_issue_stalled_wait,smsp__pcsamp_warps_issue_stalled_math_pipe_throttle \
          -k regex:gemm_v7 --launch-skip 1 --launch-count 1 $B one --M $M --N 28672 --variant 6 > "$O/ncu_v7_M$M.txt" 2>&1
        echo "--- ncu M=$M"; grep -E "gemm_|Duration|Executed Ipc|Issue Slots|Pipe|Warp Cycles|No Eligible|Eligible Warps|Compute \(SM\)|Memory Throughput|DRAM Through|L2 Cache Through|L1/TEX Cache Through|Stall|stall" "$O/ncu_v7_M$M.txt" | cut -c1-160 | head -30
      done;;
    cross) timeout 60 $B bench --shapes 0,1,2,3,4,5,6,7 --ms 32,64 --compare-variant 1 --out "$O/m32" 2>&1 | tee "$O/m32.txt" | grep -E "M=" ;;
    gate)  # greedy tokens on CUDA == the simulator in CUDA's GEMM order, B = 128 models, prompts of ~20 to ~130 tokens
      N=/tmp/nodebin/node; mkdir -p /tmp/nodebin; [ -x $N ] || { xz -dc .device/node.xz > $N.tmp && chmod +x $N.tmp && mv $N.tmp $N; }
      export COMET_CUDA_ADDON=$D/addon/comet_cuda.node
      [ -f $D/wl28m.comet ] || xz -dk $D/wl28m.comet.xz
      S1="Once upon a time, there was a little girl named Lily."
      S2="Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog."
      S3="$S2 One day, Lily saw a big red ball under a tree. She ran to the tree and picked up the ball. Her dog barked and wagged his tail. Lily threw the ball and the dog ran after it. They played all day until the sun went down and Mom called them home for dinner."
      W1="The city is the capital of the province and the largest city in the region, with a population of"
      W2="The river rises in the mountains north of the city and flows south through a wide valley before it reaches the sea. In the nineteenth century the valley was an important centre of the wool trade, and several of the towns along the river grew rapidly after the railway arrived in 1850. Today the region is known for"
      timeout 80 $N $D/comet.mjs eval verify --backend cuda --model $D/s260k-b128.comet --prompt "$S1" --prompt "$S2" --prompt "$S3" --steps 32 --explain 2>&1 | tee "$O/gate_s260k_b128.txt" | cut -c1-200
      timeout 120 $N $D/comet.mjs eval verify --backend cuda --model $D/wl28m.comet --prompt "$W1" --prompt "$W2" --prompt "The" --steps 32 --explain 2>&1 | tee "$O/gate_wl28m.txt" | cut -c1-200;;
  esac
done
