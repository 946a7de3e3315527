#!/usr/bin/env bash
# The lead's GPU calls of session 10 (2026-12-03), by PARTS, in one call:
#   gemm   bench/gemm/bench.py bench at M = 1 and 16 (8 LLaMA shapes, 10% INT8 blocks) for the built library and every
#          lab library carried in .device/s10/lab/*.so.xz (A/B of decode-kernel variants in one call, cuBLAS beside each)
#   sanit  compute-sanitizer memcheck (bench.py check --small, every variant) and racecheck (the decode kernel) on the built library
#   labcheck  bench.py check (variants auto and decode), group-check and mindep of every lab library
#   ncu    ncu --set full on the decode kernel (8B gate_up and qkv at M = 1) of the built library and of LAB (a lab lib)
#   tests  every test file with a CUDA row that does not read ../shared (as device/s9.sh tests)
#   acc    `comet eval ppl --backend cuda` over all windows of wiki_heldout_a.txt for the .comet files in .device/s10/acc
#   e2e / base / webgpu / verify / kern: device/s9.sh's parts (run through it with F=.device/s10)
# Here first: the CMake Release build as .device/s10/addon.tar.xz; .device/node.xz; .device/s10/nm-slim.tar.xz.
set -uo pipefail
F=${F:-$PWD/.device/s10}  # session 11: F=$PWD/.device/s11 (same parts, another payload)
source device/session-env.sh
mkdir -p /tmp/lab; for f in $F/lab/*.so.xz; do [ -f "$f" ] && xz -dc "$f" > /tmp/lab/$(basename "$f" .xz); done
LIBS=${LIBS:-"/tmp/addon/libcomet_cuda.so $(ls /tmp/lab/*.so 2>/dev/null)"}
C="node bin/comet.js"
run_part() {
  local part=$1 L=/tmp/p/$1; mkdir -p $L
  echo "=== $part [$(since)]"
  case $part in
    gemm)
      for lib in $LIBS; do
        n=$(basename $lib .so)
        timeout ${GEMM_S:-120} python3 bench/gemm/bench.py --lib $lib bench --ms ${MS:-1,16} --fracs 0.10 --out $L/$n > $L/$n.txt 2>&1
        echo "$n rc=$?"; grep -E "^\| L3" $L/$n/*.md 2>/dev/null | awk -F'|' '{printf "%s %s M=%s ours %s fp16 %s x%s\n",$2,$3,$5,$7,$8,$11}'
        [ -n "${GROUP:-}" ] && { timeout 90 python3 bench/gemm/bench.py --lib $lib group-bench --ms 1,16 --out $L/$n-group > $L/$n-group.txt 2>&1; echo "$n group rc=$?"; grep -E "^\| " $L/$n-group/*.md 2>/dev/null | head -14; }
      done ;;
    sanit)
      B="python3 bench/gemm/bench.py --lib /tmp/addon/libcomet_cuda.so"
      timeout 120 compute-sanitizer --tool memcheck --print-limit 20 $B check --small > $L/memcheck.txt 2>&1; echo "memcheck rc=$? $(grep -E 'ERROR SUMMARY|check:' $L/memcheck.txt | tr '\n' ' ')"
      timeout 120 compute-sanitizer --tool racecheck --racecheck-report hazard $B check --small --variants 1 > $L/racecheck.txt 2>&1; echo "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|check:' $L/racecheck.txt | tr '\n' ' ')" ;;
    labcheck)
      for lib in ${LABCHECK:-$(ls /tmp/lab/*.so)}; do n=$(basename $lib .so)
        timeout 120 python3 bench/gemm/bench.py --lib $lib check --variants ${CHECK_VARIANTS:-0,1} > $L/$n-check.txt 2>&1; echo "$n check rc=$? $(tail -1 $L/$n-check.txt)"
        timeout 90 python3 bench/gemm/bench.py --lib $lib group-check > $L/$n-gcheck.txt 2>&1; echo "$n group-check rc=$? $(tail -1 $L/$n-gcheck.txt)"
        [ -n "${MINDEP:-}" ] && { timeout 90 python3 bench/gemm/bench.py --lib $lib mindep > $L/$n-mindep.txt 2>&1; echo "$n mindep rc=$? $(tail -1 $L/$n-mindep.txt)"; }
      done ;;
    ncu)
      for lib in ${NCU_LIBS:-/tmp/addon/libcomet_cuda.so} ${LAB:+/tmp/lab/$LAB.so}; do  # NCU_K/M/V: another kernel
        n=$(basename $lib .so)
        for sh in ${NCU_SHAPES:-"28672 4096" "6144 4096" "4096 14336"}; do set -- ${sh/,/ }
          timeout 90 ncu --set full --import-source yes -k regex:${NCU_K:-gemm_decode} --launch-skip 2 --launch-count 1 -o $L/$n-$1-$2 \
            python3 bench/gemm/bench.py --lib $lib one --M ${NCU_M:-1} --N $1 --K $2 --variant ${NCU_V:-1} --reps 4 > $L/ncu-$n-$1.log 2>&1
          echo "$n N=$1 K=$2 rc=$?"
          ncu --import $L/$n-$1-$2.ncu-rep --page details > $L/$n-$1-$2.txt 2>&1
          grep -E "^    (Duration|Memory Throughput|DRAM Throughput|L2 Hit Rate|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Theoretical Occupancy|Waves Per SM)" $L/$n-$1-$2.txt | sed 's/  */ /g'
          ncu --import $L/$n-$1-$2.ncu-rep --page raw --csv 2>/dev/null | gzip > $L/$n-$1-$2-raw.csv.gz
          ncu --import $L/$n-$1-$2.ncu-rep --page source --csv --print-source sass 2>/dev/null | gzip > $L/$n-$1-$2-sass.csv.gz
          rm -f $L/$n-$1-$2.ncu-rep
        done
      done ;;
    tests)
      COMET_TEST_CUDA=1 timeout ${TESTS_S:-300} node node_modules/vitest/vitest.mjs run test/ops.test.ts test/engine.test.ts \
        test/engine-graphs.test.ts test/engine-graphs-timing.test.ts test/cuda-errors.test.ts ${TEST_MORE:-} \
        --reporter=verbose > $L/tests.log 2>&1
      echo "rc=$?"; grep -E "×|✗|FAIL|Test Files|Tests |AssertionError|first difference" $L/tests.log | head -40 ;;
    acc)
      xz -dc $F/acc/wiki_heldout_a.txt.xz > /tmp/wiki_heldout_a.txt
      for f in $F/acc/*.comet.xz; do r=$(basename $f .comet.xz); xz -dc $f > /tmp/$r.comet
        ( timeout 300 $C eval ppl --backend cuda --model /tmp/$r.comet --text /tmp/wiki_heldout_a.txt --ctx 512 --json > $L/ppl-$r.json 2> $L/ppl-$r.err; echo "$r rc=$?" ) &
      done; wait
      for f in $L/ppl-*.json; do echo "$(basename $f) $(cut -c1-300 $f)"; done; tail -n 3 $L/*.err ;;
    *)
      # s9.sh writes this part's log tarball itself
      OUT=$OUT PARTS=$part F=$F bash device/s9.sh | sed -n '/^=== /,$p'; return ;;
  esac
  tar -czf "$OUT/p-$part.tgz" -C $L .
}
for part in ${PARTS:-gemm ncu}; do run_part $part; done
echo "done [$(since)]"; ls -la "$OUT"
