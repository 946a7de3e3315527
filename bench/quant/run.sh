#!/usr/bin/env bash
# Layer-by-layer vs whole-model quantization of wikillama-28M (DESIGN §8): B = 128, 15% INT8 MACs, KV4,
# calibration on the last 2048 tokens of wiki_heldout_a.txt; then perplexity of each file on its first
# WINDOWS windows of 512 (never a calibration token). Both quantizers on the simulator, each in its own process
# (peak RSS is per process). Writes bench/results/quant-layered-DATE.{json,md}.
#   bash bench/quant/run.sh [WINDOWS=16]
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-16}; M=../shared/models/wikillama-28M; T=../shared/models/texts/wiki_heldout_a.txt; D=$(date -u +%F)
tmp=$(mktemp -d); res=bench/results/quant-layered-$D.json
echo '[' > "$res.tmp"
for m in rtn gptq; do
  whole=$(npx tsx bench/quant/whole.ts $M $T "$tmp/whole-$m.comet" $m)
  layered=$(node bin/comet.js quantize --model $M --calib $T --out "$tmp/layered-$m.comet" --weights $m --json)
  sw=$(sha256sum "$tmp/whole-$m.comet" | cut -c1-16); sl=$(sha256sum "$tmp/layered-$m.comet" | cut -c1-16)
  pw=$(node bin/comet.js eval ppl --model "$tmp/whole-$m.comet" --text $T --windows $W --json)
  pl=$(node bin/comet.js eval ppl --model "$tmp/layered-$m.comet" --text $T --windows $W --json)
  echo "{\"method\":\"$m\",\"windows\":$W,\"whole\":$whole,\"layered\":$layered,\"sha16\":{\"whole\":\"$sw\",\"layered\":\"$sl\"},\"ppl\":{\"whole\":$pw,\"layered\":$pl}}," >> "$res.tmp"
done
sed -i '$ s/,$//' "$res.tmp"; echo ']' >> "$res.tmp"; mv "$res.tmp" "$res"; rm -rf "$tmp"
echo "wrote $res"
