#!/usr/bin/env bash
# Issue 5 on the GPU machine: (1) a library built for another GPU gives a clear error, (2) .comet models give the
# same greedy tokens on CUDA as on the simulator summing in CUDA's GEMM order, (3) perplexity of every accuracy-
# table .comet over ALL windows on the CUDA backend (and over the first 16, to compare with the CPU table).
# Payload in .device/acc (made here, see bench/results/accuracy/cuda/README.md): comet.mjs (the CLI bundled by
# esbuild), addon.tar.xz (this build), addon80.tar.xz (an sm_80-only build: no code the H100 can run),
# comets.tar.xz.part* (the .comet files, xz -9 with a 256 MiB dictionary, split to fit two calls), texts/,
# wl-tok/. Node: device/unpack.sh (from .device/node.xz, or kept from an earlier call).
#   bash device/accuracy-cuda.sh stage    (first call: keeps the parts it carries in /tmp/acc)
#   bash device/accuracy-cuda.sh run      (second call)
set -uo pipefail
OUT=${OUT:-/tmp/comet-out}; A=/tmp/acc; P=.device/acc; mkdir -p "$OUT" $A/comets
source device/unpack.sh; set +e
N=/tmp/nodebin/node
cp $P/comets.tar.xz.part* $A/ 2>/dev/null
[ "${1:-run}" = stage ] && { ls -la $A; exit 0; }
T0=$(date +%s)
cat $A/comets.tar.xz.part* | xz -dc | tar -xf - -C $A/comets || echo "comets: unpack failed"
ls -la $A/comets
for v in addon addon80; do mkdir -p /tmp/$v && tar -xJf $P/$v.tar.xz -C /tmp/$v; done
C="$N $P/comet.mjs"
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee $OUT/device.txt

echo "=== 1. wrong architecture: an sm_80-only library on this GPU"
COMET_CUDA_ADDON=/tmp/addon80/comet_cuda.node timeout 60 $C run "Once upon a time" --backend cuda --steps 8 > $OUT/wrong-arch.out 2> $OUT/wrong-arch.err
echo "exit $?"; cat $OUT/wrong-arch.err | head -5
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node

echo "=== 2. greedy tokens, CUDA vs the simulator in CUDA's order"
S=$A/comets/stories260K-a1-fmpq-kv4.comet
timeout 120 $C eval verify --backend cuda --model models/stories260K.bin --steps 150 --json --prompt "" --prompt "Lily and her mom went to" --prompt "Once upon a time" --prompt "The sun was shining" > $OUT/verify-s260k-f32.jsonl; echo "s260k f32 exit $?"
timeout 120 $C eval verify --backend cuda --model $S --steps 150 --json --prompt "" --prompt "Lily and her mom went to" --prompt "Once upon a time" --prompt "The sun was shining" > $OUT/verify-s260k-comet.jsonl; echo "s260k comet exit $?"
for m in fmpq-kv4 best32-kv4 w4a4; do
  timeout 200 $C eval verify --backend cuda --model $A/comets/wikillama-28M-a1-$m.comet --steps 64 --json --prompt "Music is" --prompt "The city is located" --prompt "The first" --prompt "The history of" > $OUT/verify-wl-$m.jsonl &
done
wait; grep -c '"equal":true' $OUT/verify-*.jsonl; grep -h '"equal":false' $OUT/verify-*.jsonl | cut -c1-300

echo "=== 3. perplexity on CUDA, all windows [$(( $(date +%s) - T0 )) s]"
ev() { # comet text windows-flag tag
  timeout 300 $C eval ppl --backend cuda --model $A/comets/$1.comet --text $P/texts/$2 --ctx 512 --json $3 > $OUT/ppl-$1-$2-$4.json 2> $OUT/ppl-$1-$2-$4.err
}
ROWS="w4a4 w4a4-reorder fmpq fmpq-kv4 fmpq-gptq-kv4 w4a8kv4 best-kv4 best32-kv4"
for r in $ROWS; do ev wikillama-28M-a1-$r wiki_heldout_a.txt "--windows 16" w16; done
for r in $ROWS; do ev wikillama-28M-a1-$r wiki_heldout_a.txt "" all & done; wait
echo "wiki_heldout_a done [$(( $(date +%s) - T0 )) s]"
for r in $ROWS; do ev wikillama-28M-a1-$r wikitext2_test_raw_nonblank_crlf.txt "" all & done; wait
echo "wikitext2 done [$(( $(date +%s) - T0 )) s]"
for f in $OUT/ppl-*.json; do echo "$(basename $f) $(cut -c1-400 $f)"; done | sed 's/"text":"[^"]*",//'
tail -2 $OUT/ppl-*.err | head -20
