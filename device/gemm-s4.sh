#!/usr/bin/env bash
# Session 4 gemm device calls (2026-12-02, H200), run from the repo root with .device/gemm carried: tree.tgz (the gemm
# worktree: `git ls-files -co --exclude-standard | tar -czf`), addon.tar.xz (/tmp/build-gemm/Release: comet_cuda.node,
# libcomet_cuda.so, libcudart), for node tests also .device/node.xz and .device/node_modules.tar.xz (device/pack.sh).
# Call 2 also carries libs.tar.xz: gemm-only sm_90a builds of the lab steps (lib1 = call 1's build; A .. F: the steps of
# NOTES-gemm.md "session 4", built by `nvcc -shared gemm_w4ax.cu gemm_w4ax_sm90.cu`), compared by `ab` in one process
# each, on the same GPU. Outputs go to $OUT/r and are packed into $OUT/r.tgz after each step (a call returns few files).
# GEMM_DIR=.device/gemm-next selects another carried folder (the s4/gemm-next candidate).
# Usage: BUDGET=310 bash device/gemm-s4.sh <step...>   (check mindep gcheck nodetests bench table memcheck sass ncu ab)
set -uo pipefail
R=$(pwd); D=$R/${GEMM_DIR:-.device/gemm}; O=${OUT:-/tmp/out}; mkdir -p "$O"
O0=$O; O=$O/r; mkdir -p $O
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
    ab)  # the lab steps, each: exactness (check, mindep) unless only timed, then the bench rows it can change
      mkdir -p /tmp/libs && tar -xJf $D/libs.tar.xz -C /tmp/libs
      # (unquoted default: one word per library; call 2 quoted it and ran the first library only)
      for spec in ${AB:-1:64,256,1024,4096:t C:1,16,64,256,1024,4096:v B:1,16,64,256,1024,4096:v D:64,256,1024,4096:v E:64,256,1024,4096:v F:64,256,1024,4096:t G:1,16,64,256,1024,4096:t}; do
        X=${spec%%:*}; r=${spec#*:}; MS=${r%%:*}; V=${r##*:}; L="python3 bench/gemm/bench.py --lib /tmp/libs/lib$X.so"
        [ "$(left)" -lt 20 ] && { echo "lib$X: no time left"; continue; }
        if [ $V = v ]; then
          echo "lib$X $(timeout 30 $L check 2>&1 | tail -1) | $(timeout 30 $L mindep 2>&1 | tee "$O/mindep_$X.txt" | tail -1)"
        fi
        timeout 60 $L bench --ms $MS --fracs 0.10 --out "$O/ab_$X" > "$O/ab_$X.txt" 2>&1
        echo "lib$X bench rc=$? $(grep -c 'M=' "$O/ab_$X.txt") rows, $(grep -c MISMATCH "$O/ab_$X.txt") mismatch lines"
      done
      python3 - "$O" <<'PY'
import re, sys, glob, os
o = sys.argv[1]; t = {}
for f in sorted(glob.glob(o + "/ab_*.txt")):
    X = os.path.basename(f)[3:-4]
    for l in open(f):
        m = re.search(r"(\S+)\s+(\S+)\s+K=\s*\d+ N=\s*\d+ M=\s*(\d+) int8=10% \| ours (\S+) fp16 (\S+)", l)
        if m: t.setdefault((m[1], m[2], int(m[3])), {})[X] = (float(m[4]), float(m[5]))
libs = sorted({x for v in t.values() for x in v})
print("model layer M | " + " ".join(f"{x:>7}" for x in libs) + " | ms (fp16 of the first)")
for k in sorted(t, key=lambda k: (k[2], k[0], k[1])):
    print(f"{k[0]} {k[1]} {k[2]} | " + " ".join(f"{t[k][x][0]:7.4f}" if x in t[k] else "      -" for x in libs) + f" | {list(t[k].values())[0][1]:.4f}")
PY
      ;;
    ncu)  # stall samples per SASS line of v7 at M = 1024, L3-8B gate_up (the in-CTA-total NT = 64 tiles)
      timeout $(( $(left) - 5 )) ncu --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section SourceCounters \
        --import-source no -k regex:gemm_v7 --launch-skip 1 --launch-count 1 -o /tmp/v7prof -f $B one --M 1024 --N 28672 --variant 6 > "$O/ncu_run.txt" 2>&1
      ncu --import /tmp/v7prof.ncu-rep --page details > "$O/ncu_details.txt" 2>&1
      ncu --import /tmp/v7prof.ncu-rep --page source --csv --print-source sass > "$O/ncu_source.csv" 2>&1
      grep -E "gemm_|Duration|Issue Slots|No Eligible|Eligible Warps|Warp Cycles|Executed Ipc" "$O/ncu_details.txt" | head -12; wc -l "$O/ncu_source.csv";;
  esac
  tar -czf $O0/r.tgz -C $O0 r 2>/dev/null
done
echo "=== done $(date -u +%H:%M:%S) ($(left) s left)"
tar -czf $O0/r.tgz -C $O0 r && mv $O /tmp/r_sent  # only r.tgz and a few files come back
