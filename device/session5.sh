#!/usr/bin/env bash
# Session 5 lead calls on the GPU machine (2026-12-02, H200), by PARTS, in warm calls back to back:
#   stage     keeps what the later calls need that does not fit beside node (64 MiB a call): ../shared/models
#             (.device/cuda-tests/shared.tar.xz.part*), .device/s5stage/* (xz files) -> /tmp/s5stage
#   quantdiag issue 17: the simulator-made GPTQ wikillama-28M file (made on the CPU machine: the accuracy table's
#             fmpq-gptq-kv4 row, the same weights as `comet quantize --weights gptq --backend sim`) and a CUDA-made one (`comet quantize --backend cuda`, same command) evaluated on CUDA (16 windows),
#             and compared tensor by tensor (bench/quant/diff-comet.ts)
#   acc       issue 15: the accuracy table's KV4 rows (bench/accuracy/run.ts quantize, CPU; acc.tar.xz) evaluated
#             on CUDA over all windows of wiki_heldout_a.txt and over the first 16
#   probe8b   device/quant-llama3.sh with LAYERS (default 2): time per layer of the 8B shape
#   full8b    device/quant-llama3.sh, all 32 layers
#   ncu       ncu on attn_kv4_mma inside `comet bench e2e --shape llama3-8b` (batch BATCH, default 256; context 1024)
#   race      compute-sanitizer racecheck on the W4Ax GEMM's v7 (bench/gemm/bench.py check --small --variants 6)
# Here first: the addon in .device/final/addon.tar.xz (device/final.sh), .device/quant (device/quant-llama3.sh),
#   mkdir -p .device/s5stage; tar -cf - -C bench/results/accuracy/work <the KV4 rows' .comet> | xz -9 > .device/s5stage/acc.tar.xz
# Carry (stage, two calls: 64 MiB each) .device/cuda-tests/shared.tar.xz.parta*, then .device/s5stage; (the rest) .device/node.xz
#   .device/node_modules.tar.xz .device/final .device/quant.   Logs: $OUT/s5-<part>.tgz and a summary on stdout.
set -uo pipefail
T0=$(date +%s); OUT=${OUT:-/tmp/comet-out}; F=$PWD/.device/final; S=/tmp/s5stage
mkdir -p "$OUT" $S
since() { echo "$(( $(date +%s) - T0 )) s"; }
if [ "${PARTS:-}" = stage ]; then
  mkdir -p /tmp/cuda-tests; cp .device/cuda-tests/shared.tar.xz.part* /tmp/cuda-tests/ 2>/dev/null; cp .device/s5stage/* $S/ 2>/dev/null
  ls -la /tmp/cuda-tests $S; exit 0
fi
source device/unpack.sh; set +e
[ -d ../shared/models ] || { mkdir -p .. && cat /tmp/cuda-tests/shared.tar.xz.part* | xz -dc | tar -xf - -C ..; } || echo "../shared/models: unpack failed"
mkdir -p /tmp/addon && tar -xJf "$F/addon.tar.xz" -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node PYTHONUNBUFFERED=1
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
C="node bin/comet.js"; TSX="node node_modules/tsx/dist/cli.mjs"
M=../shared/models/wikillama-28M; TX=../shared/models/texts/wiki_heldout_a.txt
pack() { tar -czf "$OUT/s5-$1.tgz" -C "/tmp/s5/$1" . ; }
ACC_ROWS="fmpq-kv4 fmpq-gptq-kv4 w4a8kv4 best-kv4 best32-kv4"
[ -f /tmp/acc/wikillama-28M-a1-best32-kv4.comet ] || { mkdir -p /tmp/acc && xz -dc $S/acc.tar.xz | tar -xf - -C /tmp/acc; }
acc_run() {  # all windows and 16 windows of every KV4 row, the rows side by side (each is host-bound)
  local L=/tmp/s5/acc; mkdir -p $L
  for r in $ACC_ROWS; do
    ( f=/tmp/acc/wikillama-28M-a1-$r.comet
      timeout 60 $C eval ppl --backend cuda --model $f --text $TX --ctx 512 --windows 16 --json > $L/ppl16-$r.json 2> $L/ppl16-$r.err
      timeout 400 $C eval ppl --backend cuda --model $f --text $TX --ctx 512 --json > $L/pplall-$r.json 2> $L/pplall-$r.err ) &
  done; wait
}
for part in ${PARTS:-quantdiag acc}; do
  L=/tmp/s5/$part; mkdir -p "$L"
  echo "=== $part [$(since)]"
  case $part in
    quantdiag)
      ln -sf /tmp/acc/wikillama-28M-a1-fmpq-gptq-kv4.comet /tmp/wl-sim-gptq.comet
      /usr/bin/time -f "%e s wall, %M KB peak" timeout 120 $C quantize --model $M --calib $TX --out /tmp/wl-cuda-gptq.comet \
        --weights gptq --backend cuda --json > $L/q-cuda-gptq.json 2> $L/q-cuda-gptq.err; echo "quantize rc=$? $(tail -1 $L/q-cuda-gptq.err)"
      for w in sim cuda; do
        timeout 60 $C eval ppl --model /tmp/wl-$w-gptq.comet --text $TX --windows 16 --backend cuda --json > $L/ppl-$w-gptq.json 2>&1
        echo "$w-made GPTQ, 16 windows on CUDA: $(grep -o '"ppl":[0-9.]*' $L/ppl-$w-gptq.json)"
      done
      timeout 60 $TSX bench/quant/diff-comet.ts /tmp/wl-sim-gptq.comet /tmp/wl-cuda-gptq.comet > $L/diff.md 2>&1
      grep -E "w4 \|" $L/diff.md | awk -F'|' '{print $2, $4, $5, $6}' | head -60 ;;
    acc-bg) acc_run > /tmp/s5/acc-bg.log 2>&1 & ACC_PID=$! ;;
    acc)
      [ -n "${ACC_PID:-}" ] && wait $ACC_PID || acc_run
      for r in $ACC_ROWS; do echo "$r: 16w $(grep -o '"ppl":[0-9.]*' /tmp/s5/acc/ppl16-$r.json) all $(grep -o '"ppl":[0-9.]*\|"windows":[0-9]*' /tmp/s5/acc/pplall-$r.json | tr '\n' ' ')"; done
      L=/tmp/s5/acc ;;
    probe8b) OUT=$L LAYERS=${LAYERS:-2} bash device/quant-llama3.sh ;;
    full8b) OUT=$L LAYERS=32 QUANT_S=${QUANT_S:-540} bash device/quant-llama3.sh ;;
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
done
echo "done after $(since)"
