#!/bin/bash
# Run every accuracy job on a many-core machine that has no Node.js (the GPU machine: 16 cores), in one go.
# Payload dirs (made by hand here, see the report): node.zst + zstd (+ liblz4) + run.mjs (run.ts bundled by
# esbuild) + models/ (wikillama-28M, tinyllamas, texts), possibly split over two calls ("unpack" then "all").
#   device.sh <payload dir> unpack          decompress node, copy models into /tmp/acc
#   device.sh <payload dir> all <seconds>   quantize (one process per model, α and row group) while workers
#                                           evaluate whatever is ready; workers share the job list by mkdir claims
set -u
P=$1; PHASE=$2; SECS=${3:-540}
A=/tmp/acc; mkdir -p $A/out $A/claims
if [ -f $P/node.zst ] && [ ! -x $A/node ]; then LD_LIBRARY_PATH=$P $P/zstd -d -q -f $P/node.zst -o $A/node.tmp && chmod +x $A/node.tmp && mv $A/node.tmp $A/node; fi
[ -d $P/models ] && cp -r $P/models $A/
cp $P/run.mjs $A/run.mjs
$A/node --version || exit 1
[ "$PHASE" = unpack ] && exit 0
END=$(( $(date +%s) + SECS )); N=$(nproc)
ARGS="--shared $A/models --out $A/out --claim-dir $A/claims"
R="timeout $SECS $A/node --max-old-space-size=6000 $A/run.mjs"
Q="w4a8kv4,w4a4,w4a4-reorder,fmpq,fmpq-kv4"; G="fmpq-gptq-kv4"; K1="fmpq-f05,fmpq-f10,fmpq-f20,fmpq-f30"; K2="fmpq-b64-kv4,fmpq-b64-gptq-kv4"
(for a in 1 16 128; do $R quantize stories260K $a $ARGS; done) > $A/out/q-s.log 2>&1 &
for spec in "1 $Q" "1 $G" "1 $K1" "1 $K2" "16 $Q" "16 $G" "128 $Q" "128 $G"; do
  set -- $spec; $R quantize wikillama-28M $1 $2 $ARGS > $A/out/q-$1-${2%%,*}.log 2>&1 &
done
for i in $(seq 1 $((N - 9))) $(seq 1 9 | sed 's/^/late/'); do
  ( [[ $i == late* ]] && sleep 150
    while [ $(date +%s) -lt $END ]; do
      timeout $(( END - $(date +%s) )) $A/node --max-old-space-size=6000 $A/run.mjs eval 0/1 $ARGS >> $A/out/e-$i.log 2>&1; [ $? = 3 ] && break; sleep 5
    done ) &
done
wait
wc -l < $A/out/results.jsonl
[ -n "${OUT:-}" ] && cp $A/out/results.jsonl $OUT/ && (cd $A/out && tar czf $OUT/logs.tgz *.log)
