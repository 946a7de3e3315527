#!/usr/bin/env bash
# Layer-by-layer vs whole-model quantization of wikillama-28M (DESIGN §8): B = 128, 15% INT8 MACs, KV4,
# calibration on the last 2048 tokens of wiki_heldout_a.txt; then perplexity on the first WINDOWS windows of 512
# (never a calibration token). Both quantizers on the simulator, each in its own process (peak RSS is per
# process); RTN and GPTQ side by side. Files with equal sha256 are evaluated once (equal bytes, equal perplexity).
# Writes bench/results/quant-layered-DATE.json.
#   bash bench/quant/run.sh [WINDOWS=16]
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-16}; M=../shared/models/wikillama-28M; T=../shared/models/texts/wiki_heldout_a.txt; D=$(date -u +%F)
tmp=$(mktemp -d); res=bench/results/quant-layered-$D.json
one() {
  local m=$1 whole layered sw sl pw pl
  whole=$(npx tsx bench/quant/whole.ts $M $T "$tmp/whole-$m.comet" $m)
  layered=$(node bin/comet.js quantize --model $M --calib $T --out "$tmp/layered-$m.comet" --weights $m --json)
  sw=$(sha256sum "$tmp/whole-$m.comet" | cut -c1-16); sl=$(sha256sum "$tmp/layered-$m.comet" | cut -c1-16)
  pl=$(node bin/comet.js eval ppl --model "$tmp/layered-$m.comet" --text $T --windows $W --json)
  if [ "$sw" = "$sl" ]; then pw='"same bytes as layered"'; else pw=$(node bin/comet.js eval ppl --model "$tmp/whole-$m.comet" --text $T --windows $W --json); fi
  echo "{\"method\":\"$m\",\"windows\":$W,\"whole\":$whole,\"layered\":$layered,\"sha16\":{\"whole\":\"$sw\",\"layered\":\"$sl\"},\"ppl\":{\"layered\":$pl,\"whole\":$pw}}" > "$tmp/$m.json"
}
one rtn & one gptq & wait
{ echo '['; cat "$tmp/rtn.json"; echo ','; cat "$tmp/gptq.json"; echo ']'; } > "$res"; rm -rf "$tmp"
echo "wrote $res"
