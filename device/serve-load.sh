#!/usr/bin/env bash
# On the GPU machine: serving on the CUDA backend, float stories260K and a W4A4KV4 .comet, in one call.
# Here first: build the addon (device/cuda-tests.sh says how), bash device/pack.sh, then
#   mkdir -p .device/serve-load && tar -cJf .device/serve-load/addon.tar.xz -C build/Release .
#   cp model.comet .device/serve-load/s260k.comet     (comet quantize --model models/stories260K.bin ...)
# and run `bash device/serve-load.sh` there, carrying .device/node.xz .device/node_modules.tar.xz
# .device/serve-load. Results go to $OUT (exact_*.json, serve-load-*.md/.json).
set -uo pipefail
OUT=${OUT:-/tmp/comet-out}
mkdir -p "$OUT"
source device/unpack.sh
set +e # (unpack.sh sets -e)
mkdir -p /tmp/addon && tar -xJf .device/serve-load/addon.tar.xz -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for tag in f32 w4a4kv4; do
  margs=(); [ $tag = w4a4kv4 ] && margs=(--model .device/serve-load/s260k.comet)
  echo "=== $tag: batched == alone"
  timeout 150 node node_modules/tsx/dist/cli.mjs bench/serve-load/exact.ts --backend cuda "${margs[@]}" --requests 32 --max-tokens 64 > "$OUT/exact_$tag.json" 2>&1
  echo "rc=$?"; grep -E '"(exact|kvPagesLeaked|aloneTokPerS|batchedTokPerS)"|rror' "$OUT/exact_$tag.json" | head -8
  echo "=== $tag: load"
  timeout 200 node node_modules/tsx/dist/cli.mjs bench/serve-load/run.ts --backend cuda "${margs[@]}" --tag "$tag" --requests 256 --concurrency 32 --max-tokens 128 --time-limit 120 --out "$OUT" > "$OUT/load_$tag.log" 2>&1
  echo "rc=$?"; grep -E 'PerS|completed|errors|wrote|rror' "$OUT/load_$tag.log" | head -8
done
