#!/usr/bin/env bash
# The lead's GPU calls by PARTS, in warm calls back to back (sessions 5-6; session 5 named it session5.sh):
#   stage     keeps what later calls need that does not fit beside node (64 MiB a call): .device/stage/* (xz files:
#             shared-min.tar.xz = the ../shared/models the quantizer's checks read) -> /tmp/stage
#   gptqk     GPTQ's device kernels one by one at the small and LLaMA-3-8B shapes (bench/quant/gptq_kernels.py)
#   t17       COMET_TEST_CUDA=1 test/ops.test.ts test/quant-layered.test.ts (the exact f32 GEMM, GPTQ on the device)
#   quantdiag issue 17: wikillama-28M quantized with GPTQ on CUDA (`comet quantize --backend cuda`), its sha-256
#             (equal to the simulator-made file's, made on the CPU machine, when calibration is exact) and its
#             16-window perplexity on CUDA; with a simulator-made file staged (wl-sim-gptq.comet.xz) the two are
#             compared tensor by tensor (bench/quant/diff-comet.ts)
#   acc       issue 15: the accuracy table's KV4 rows (acc.tar.xz staged) evaluated on CUDA, all windows and 16
#   probe8b   device/quant-llama3.sh with LAYERS (default 2): per-layer time and phase seconds of the 8B shape
#   full8b    device/quant-llama3.sh, all 32 layers (or in steps: synth8b, quant8b, verify8b, each taking what is left
#             of LIMIT_S); bg:PART runs PART in the background until the next `wait`
#   ncu       ncu on attn_kv4_mma inside `comet bench e2e --shape llama3-8b` (batch BATCH, default 256; context 1024)
#   race      compute-sanitizer racecheck on the W4Ax GEMM's v7 (bench/gemm/bench.py check --small --variants 6)
# Here first: the addon in .device/quant/addon.tar.xz and the rest of .device/quant (device/quant-llama3.sh),
#   mkdir -p .device/stage && tar -cf - -C ../shared models/wikillama-28M models/texts models/hf | xz -T2 > .device/stage/shared-min.tar.xz
# Carry (stage) .device/stage; (the rest) .device/node.xz .device/node_modules.tar.xz .device/quant.
# Logs: $OUT/p-<part>.tgz and a summary on stdout.
set -uo pipefail
T0=$(date +%s); OUT=${OUT:-/tmp/comet-out}; F=$PWD/.device/quant; S=/tmp/stage
mkdir -p "$OUT" $S
since() { echo "$(( $(date +%s) - T0 )) s"; }
if [ "${PARTS:-}" = stage ]; then
  cp .device/stage/* $S/ && ls -la $S; exit 0
fi
source device/unpack.sh; set +e
# ../shared/models: what the quantizer and its tests read (staged shared-min.tar.xz)
if [ ! -d ../shared/models ]; then
  mkdir -p ../shared
  [ -f $S/shared-min.tar.xz ] && xz -dc $S/shared-min.tar.xz | tar -xf - -C ../shared || echo "../shared/models: not staged (PARTS=stage first)"
fi
mkdir -p /tmp/addon && tar -xJf "$F/addon.tar.xz" -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node PYTHONUNBUFFERED=1
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
C="node bin/comet.js"; TSX="node node_modules/tsx/dist/cli.mjs"
M=../shared/models/wikillama-28M; TX=../shared/models/texts/wiki_heldout_a.txt
pack() { tar -czf "$OUT/p-$1.tgz" -C "/tmp/p/$1" . ; }
ACC_ROWS="fmpq-kv4 fmpq-gptq-kv4 w4a8kv4 best-kv4 best32-kv4"
[ -f /tmp/acc/wikillama-28M-a1-best32-kv4.comet ] || [ ! -f $S/acc.tar.xz ] || { mkdir -p /tmp/acc && xz -dc $S/acc.tar.xz | tar -xf - -C /tmp/acc; }
acc_run() {  # all windows and 16 windows of every KV4 row, the rows side by side (each is host-bound)
  local L=/tmp/p/acc; mkdir -p $L
  for r in $ACC_ROWS; do
    ( f=/tmp/acc/wikillama-28M-a1-$r.comet
      timeout 60 $C eval ppl --backend cuda --model $f --text $TX --ctx 512 --windows 16 --json > $L/ppl16-$r.json 2> $L/ppl16-$r.err
      timeout 400 $C eval ppl --backend cuda --model $f --text $TX --ctx 512 --json > $L/pplall-$r.json 2> $L/pplall-$r.err ) &
  done; wait
}
run_part() {
  local part=$1 L=/tmp/p/$1; mkdir -p "$L"
  echo "=== $part [$(since)]"
  case $part in
    quantdiag)
      /usr/bin/time -f "%e s wall, %M KB peak" timeout 120 $C quantize --model $M --calib $TX --out /tmp/wl-cuda-gptq.comet \
        --weights gptq --backend cuda --json > $L/q-cuda-gptq.json 2> $L/q-cuda-gptq.err; echo "quantize rc=$? $(tail -1 $L/q-cuda-gptq.err)"
      echo "CUDA-made GPTQ sha256 $(sha256sum /tmp/wl-cuda-gptq.comet | cut -c1-16)"
      timeout 60 $C eval ppl --model /tmp/wl-cuda-gptq.comet --text $TX --windows 16 --backend cuda --json > $L/ppl-cuda-gptq.json 2>&1
      echo "CUDA-made GPTQ, 16 windows on CUDA: $(grep -o '"ppl":[0-9.]*' $L/ppl-cuda-gptq.json)"
      if [ -f $S/wl-sim-gptq.comet.xz ]; then
        xz -dc $S/wl-sim-gptq.comet.xz > /tmp/wl-sim-gptq.comet
        timeout 60 $TSX bench/quant/diff-comet.ts /tmp/wl-sim-gptq.comet /tmp/wl-cuda-gptq.comet > $L/diff.md 2>&1
        grep -E "w4 \|" $L/diff.md | awk -F'|' '{print $2, $4, $5, $6}' | head -60
      fi ;;
    gptqk)
      timeout 60 python3 bench/quant/gptq_kernels.py --lib /tmp/addon/libcomet_cuda.so --shapes small 2>&1 | tee $L/small.txt
      timeout ${GPTQK_S:-200} python3 bench/quant/gptq_kernels.py --lib /tmp/addon/libcomet_cuda.so --shapes ${GPTQK_SHAPES:-8b} --json $L/gptqk.json 2>&1 | tee $L/8b.txt ;;
    acc-bg) acc_run > /tmp/p/acc-bg.log 2>&1 & ACC_PID=$! ;;
    acc)
      [ -n "${ACC_PID:-}" ] && wait $ACC_PID || acc_run
      for r in $ACC_ROWS; do echo "$r: 16w $(grep -o '"ppl":[0-9.]*' /tmp/p/acc/ppl16-$r.json) all $(grep -o '"ppl":[0-9.]*\|"windows":[0-9]*' /tmp/p/acc/pplall-$r.json | tr '\n' ' ')"; done
      L=/tmp/p/acc ;;
    t17)  # the CUDA rows of the tests this session's issue-17 changes touch: the exact f32 GEMM, GPTQ on the device
      COMET_TEST_CUDA=1 timeout 200 node node_modules/vitest/vitest.mjs run test/ops.test.ts test/quant-layered.test.ts --reporter=verbose > $L/tests.log 2>&1
      echo "rc=$?"; grep -E "✗|×|FAIL|Test Files|Tests |AssertionError" $L/tests.log | head -30 ;;
    probe8b) OUT=$L LAYERS=${LAYERS:-2} bash device/quant-llama3.sh ;;
    full8b) OUT=$L LAYERS=32 QUANT_S=${QUANT_S:-540} bash device/quant-llama3.sh ;;
    synth8b) OUT=/tmp/p/full8b LAYERS=32 STEPS=synth bash device/quant-llama3.sh ;;
    quant8b)  # what is left of the call's limit (LIMIT_S) goes to the quantizer
      OUT=/tmp/p/full8b LAYERS=32 STEPS="quantize run" QUANT_S=$(( ${LIMIT_S:-590} - $(date +%s) + T0 - 75 )) bash device/quant-llama3.sh
      L=/tmp/p/full8b; part=full8b ;;
    verify8b) OUT=/tmp/p/full8b LAYERS=32 STEPS=verify VERIFY_S=$(( ${LIMIT_S:-590} - $(date +%s) + T0 - 15 )) bash device/quant-llama3.sh
      L=/tmp/p/full8b; part=full8b ;;
    ncu)
      timeout 180 ncu --target-processes all -k regex:attn_kv4_mma --launch-skip 64 --launch-count 1 --set full -o $L/attn \
        $C bench e2e --shape llama3-8b --batches ${BATCH:-256} --no-baseline --throughput 0 --steps 2 --out $L/e2e > $L/ncu.log 2>&1
      echo "ncu rc=$?"; tail -3 $L/ncu.log
      ncu --import $L/attn.ncu-rep --page details > $L/attn-details.txt 2>&1
      ncu --import $L/attn.ncu-rep --page raw --csv > $L/attn-raw.csv 2>&1
      grep -E "Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Registers Per|Warp Cycles Per Issued|Issue Slots Busy|No Eligible|Theoretical Occupancy|Block Limit" $L/attn-details.txt | head -30
      rm -f $L/attn.ncu-rep ;;
    race)
      timeout 150 compute-sanitizer --tool racecheck --racecheck-report hazard --print-limit 20 \
        python3 bench/gemm/bench.py --lib /tmp/addon/libcomet_cuda.so check --small --variants 6 > $L/racecheck.txt 2>&1
      echo "rc=$?"; tail -4 $L/racecheck.txt ;;
  esac
  [ "$part" = acc-bg ] || pack "$part"
}
BG=(); mkdir -p /tmp/p
for part in ${PARTS:-quantdiag acc}; do
  case $part in
    bg:*) run_part "${part#bg:}" > /tmp/p/${part#bg:}.bg.log 2>&1 & BG+=($!) ;;
    wait) wait "${BG[@]}"; BG=(); cat /tmp/p/*.bg.log 2>/dev/null; rm -f /tmp/p/*.bg.log ;;
    *) run_part "$part" ;;
  esac
done
echo "done after $(since)"
