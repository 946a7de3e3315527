#!/usr/bin/env bash
# On the GPU machine: every test file that has a CUDA row (`npm run test:cuda`: ops, end to end, engine, decode
# graphs, CUDA errors), then `comet run` on the simulator and on CUDA (texts equal), then compute-sanitizer's
# memcheck / racecheck on `comet run`. Logs go to $OUT (tests.log, run_*.txt, memcheck_*.log, racecheck_run.log).
# Here first:
#   cmake -S cuda -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/cbuild -j2
#   bash device/pack.sh                                   (.device/node.xz, .device/node_modules.tar.xz)
#   mkdir -p .device/cuda-tests && tar -cJf .device/cuda-tests/addon.tar.xz -C /tmp/cbuild/Release .
#   tar -cf - -C .. shared/models | xz -9 | split -b 30M - .device/cuda-tests/shared.tar.xz.part
# The tests read ../shared/models as on CI (the golden outputs, tinyllamas, wikillama-28M: ~45 MB packed), which
# with node does not fit one call's carry: call 1 `bash device/cuda-tests.sh stage` carrying .device/cuda-tests
# (the parts are kept in /tmp/cuda-tests), call 2 `bash device/cuda-tests.sh` carrying .device/node.xz
# .device/node_modules.tar.xz and .device/cuda-tests without the parts.
set -uo pipefail
OUT=${OUT:-/tmp/comet-out}; P=.device/cuda-tests; K=/tmp/cuda-tests
mkdir -p "$OUT" $K
cp $P/shared.tar.xz.part* $K/ 2>/dev/null
[ "${1:-run}" = stage ] && { ls -la $K; exit 0; }
source device/unpack.sh
set +e  # unpack.sh sets -e; this script goes on past a failing step
[ -d ../shared/models ] || { mkdir -p .. && cat $K/shared.tar.xz.part* | xz -dc | tar -xf - -C ..; } || echo "../shared/models: unpack failed"
mkdir -p /tmp/addon && tar -xJf $P/addon.tar.xz -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
step() { echo "=== $*"; }

step "tests with a CUDA row"
FILES=$(grep -lE 'eachBackend|COMET_TEST_CUDA' test/*.test.ts)
COMET_TEST_CUDA=1 timeout ${TESTS_S:-420} node node_modules/vitest/vitest.mjs run $FILES --reporter=verbose > "$OUT/tests.log" 2>&1; echo "rc=$?"
grep -E "×|Test Files|Tests |AssertionError|first difference" "$OUT/tests.log" | head -40

step "comet run, greedy, sim vs cuda"
for b in sim cuda; do
  timeout 120 node bin/comet.js run "Once upon a time" --backend $b --temperature 0 --steps 150 > "$OUT/run_$b.txt" 2> "$OUT/run_$b.err"
  echo "$b rc=$? $(tail -1 "$OUT/run_$b.err")"
done
cmp "$OUT/run_sim.txt" "$OUT/run_cuda.txt" && echo "comet run: cuda text == sim text"
step "comet run, sampled with top-k 40 (the device's top-k lists), sim vs cuda"
for b in sim cuda; do
  timeout 120 node bin/comet.js run "Once upon a time" --backend $b --temperature 0.8 --top-k 40 --seed 5 --steps 150 > "$OUT/runk_$b.txt" 2> "$OUT/runk_$b.err"
  echo "$b rc=$? $(tail -1 "$OUT/runk_$b.err")"
done
cmp "$OUT/runk_sim.txt" "$OUT/runk_cuda.txt" && echo "comet run --top-k 40: cuda text == sim text"

[ "${SANITIZE:-1}" = 0 ] && exit 0  # SANITIZE=0: tests and the sim/cuda run only
step "memcheck: comet run on cuda (greedy, then top-k sampling)"
timeout 120 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
  node bin/comet.js run "Once upon a time" --backend cuda --temperature 0 --steps 40 > "$OUT/memcheck_run.log" 2>&1
echo "rc=$?"; grep -E "ERROR SUMMARY|Invalid|error" "$OUT/memcheck_run.log" | head -10
timeout 120 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
  node bin/comet.js run "Once upon a time" --backend cuda --temperature 0.8 --top-k 40 --steps 20 > "$OUT/memcheck_runk.log" 2>&1
echo "rc=$?"; grep -E "ERROR SUMMARY|Invalid|error" "$OUT/memcheck_runk.log" | head -10

step "racecheck: comet run on cuda"
timeout 120 compute-sanitizer --tool racecheck --target-processes all --error-exitcode 9 \
  node bin/comet.js run "Once upon a time" --backend cuda --temperature 0 --steps 20 > "$OUT/racecheck_run.log" 2>&1
echo "rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$OUT/racecheck_run.log" | head -5
