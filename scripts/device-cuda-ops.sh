#!/usr/bin/env bash
# On the GPU machine: the CUDA backend's checks, in one call (the device README: few, full calls).
# Here first:  cmake -S cuda -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/cbuild -j
#              bash scripts/device-pack.sh
#              mkdir -p .device/cuda-ops && tar -cJf .device/cuda-ops/addon.tar.xz -C /tmp/cbuild/Release .
# Then run `bash scripts/device-cuda-ops.sh` there, carrying .device/node.xz .device/node_modules.tar.xz
# .device/cuda-ops. Logs go to $OUT (ops.log, e2e.log, run_*.txt, memcheck_*.log).
set -uo pipefail
OUT=${OUT:-/tmp/comet-out}
mkdir -p "$OUT"
source scripts/device-unpack.sh
set +e  # device-unpack.sh sets -e; this script goes on past a failing step
mkdir -p /tmp/addon && tar -xJf .device/cuda-ops/addon.tar.xz -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
step() { echo "=== $*"; }

step ops tests
COMET_TEST_CUDA=1 timeout 300 node node_modules/vitest/vitest.mjs run test/ops.test.ts test/cuda-errors.test.ts > "$OUT/ops.log" 2>&1; echo "rc=$?"
grep -E "✓|✗|×|FAIL|Tests|passed|failed" "$OUT/ops.log" | grep -v "^ *✓" | head -40

step end to end
COMET_TEST_CUDA=1 timeout 300 node node_modules/vitest/vitest.mjs run test/cuda-e2e.test.ts > "$OUT/e2e.log" 2>&1; echo "rc=$?"
grep -E "✓|✗|×|FAIL|Tests|AssertionError|Expected|Received|first difference|differ|teacher" "$OUT/e2e.log" | head -40
if ! grep -q "2 passed" "$OUT/e2e.log"; then  # diagnosis: pin the GEMM variant
  for v in "COMET_GEMM_FORCE=2"; do
    step "end to end with $v"
    env $v COMET_TEST_CUDA=1 timeout 200 node node_modules/vitest/vitest.mjs run test/cuda-e2e.test.ts > "$OUT/e2e_$v.log" 2>&1
    grep -E "×|Tests|first difference|teacher" "$OUT/e2e_$v.log" | head -12
  done
fi

step comet run, greedy, sim vs cuda
for b in sim cuda; do
  timeout 120 node bin/comet.js run "Once upon a time" --backend $b --temperature 0 --steps 150 > "$OUT/run_$b.txt" 2> "$OUT/run_$b.err"
  echo "$b rc=$? $(tail -1 "$OUT/run_$b.err")"
done
cmp "$OUT/run_sim.txt" "$OUT/run_cuda.txt" && echo "comet run: cuda text == sim text"

step memcheck: comet run on cuda
timeout 120 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
  node bin/comet.js run "Once upon a time" --backend cuda --temperature 0 --steps 40 > "$OUT/memcheck_run.log" 2>&1
echo "rc=$?"; grep -E "ERROR SUMMARY|Invalid|error" "$OUT/memcheck_run.log" | head -10

step memcheck: op tests on cuda
COMET_TEST_CUDA=1 timeout 150 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 9 \
  node node_modules/vitest/vitest.mjs run test/ops.test.ts -t cuda > "$OUT/memcheck_ops.log" 2>&1
echo "rc=$?"; grep -E "ERROR SUMMARY|Invalid|Tests " "$OUT/memcheck_ops.log" | sort | uniq -c | head -10

step racecheck: comet run on cuda
timeout 120 compute-sanitizer --tool racecheck --target-processes all --error-exitcode 9 \
  node bin/comet.js run "Once upon a time" --backend cuda --temperature 0 --steps 20 > "$OUT/racecheck_run.log" 2>&1
echo "rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$OUT/racecheck_run.log" | head -5
