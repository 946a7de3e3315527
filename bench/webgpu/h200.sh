#!/usr/bin/env bash
# On the GPU machine, in one `run` call (issue 21, item 4): decode tokens/s at batch 1 of a LLaMA-3.2-1B-shape
# W4A4KV4 model (random weights, bench/webgpu/decode.ts) on WebGPU (Dawn in Node, Vulkan over the NVIDIA driver)
# beside the CUDA backend, same process, same weights; then the WebGPU step's profile (host phases, each kernel's
# GPU time, dispatches per step) and the W4Ax matvec at the model's shapes against the WGSL copy bandwidth.
# Here first (the CPU machine):
#   bash device/pack.sh                     .device/node.xz, .device/node_modules.tar.xz (node and node_modules)
#   bash bench/webgpu/gl-debs.sh            .gl/*.deb (the Vulkan loader; device/unpack.sh installs them there)
#   mkdir -p .device/webgpu && cp <a Release build of the addon of this tree, as tar.xz of build/Release> .device/webgpu/addon.tar.xz
#     (cmake -S cuda -B /tmp/cbuild -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/cbuild -j2 &&
#      tar -cJf .device/webgpu/addon.tar.xz -C /tmp/cbuild/Release .; without it .device/cuda-tests/addon.tar.xz is used)
# There, from the repository root of the call's tree, carrying .device/node.xz .device/node_modules.tar.xz .device/webgpu .gl:
#   bash bench/webgpu/h200.sh                     (STEPS=128; SERIAL=1 adds the CPU adapters' kernels' profile)
# Logs and the JSON go to $OUT (webgpu-decode-<date>-llama3.2-1b.json: the numbers of bench/results/webgpu-decode-*.md).
# Then (FLOOR=0 skips them) bench/webgpu/floor.ts: the dispatch floor, the streaming rate, the matvec at 1B and 8B shapes
# and the model of the step above (webgpu-floor-<date>.{json,md}); and decode again, WebGPU only, on a device with Dawn's
# disable_robustness (what WGSL's bounds checks cost the step; its greedy tokens against the first run's).
set -uo pipefail
OUT=${OUT:-/tmp/comet-out}; mkdir -p "$OUT"
ADDON=.device/webgpu/addon.tar.xz; [ -f $ADDON ] || ADDON=.device/cuda-tests/addon.tar.xz
source device/unpack.sh; set +e
# the NVIDIA Vulkan ICD: the image's (unpack.sh's default), else wherever the driver put it
if [ ! -f "$VK_DRIVER_FILES" ]; then
  f=$(ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json /usr/local/nvidia/share/vulkan/icd.d/*.json 2>/dev/null | head -1)
  [ -n "$f" ] && export VK_DRIVER_FILES=$f
fi
echo "Vulkan ICD: $VK_DRIVER_FILES $( [ -f "$VK_DRIVER_FILES" ] && echo found || echo MISSING); loader: $(ldconfig -p | grep -c 'libvulkan.so.1 ') libvulkan.so.1"
if [ -n "${COMET_CUDA_ADDON:-}" ] && [ -f "$COMET_CUDA_ADDON" ]; then
  echo "CUDA addon: $COMET_CUDA_ADDON (from the caller)"
elif [ -f $ADDON ]; then
  mkdir -p /tmp/addon && tar -xJf $ADDON -C /tmp/addon && export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
  echo "CUDA addon: $ADDON ($(date -u -r $ADDON +%FT%TZ))"
else echo "CUDA addon: none carried (the CUDA column will say why it did not run)"; fi
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
run() { local name=$1 limit=$2 script=$3; shift 3
  local t0=$SECONDS; timeout "$limit" node node_modules/tsx/dist/cli.mjs bench/webgpu/$script.ts "$@" --out "$OUT" > "$OUT/$name.log" 2>&1
  echo "== $name rc=$? ($((SECONDS - t0)) s)"; grep -vE '^\{"shape"' "$OUT/$name.log" | tail -${TAIL:-40}; }
run decode ${DECODE_S:-300} decode --shape llama3.2-1b --steps "${STEPS:-128}"
grep -E '^\{"shape"' "$OUT/decode.log"
[ "${SERIAL:-0}" = 1 ] && run serial 120 decode --shape llama3.2-1b --steps 32 --no-cuda --decode-only --kernels serial
DEC=$(ls "$OUT"/webgpu-decode-*-llama3.2-1b.json 2>/dev/null | head -1)
if [ "${FLOOR:-1}" = 1 ]; then
  TAIL=100 run floor ${FLOOR_S:-150} floor ${DEC:+--decode "$DEC"}
  run robust ${ROBUST_S:-150} decode --shape llama3.2-1b --steps 64 --no-cuda --decode-only --dawn-toggles disable_robustness ${DEC:+--same-as "$DEC"}
fi
ls -la "$OUT"
