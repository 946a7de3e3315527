#!/usr/bin/env bash
# On the GPU machine (one `run` call; issue 21): WebGPU (Dawn, Vulkan over the NVIDIA driver) decode beside CUDA at
# batch 1, LLaMA-3.2-1B shape, with the WebGPU step's profile (host phases, per-kernel GPU time); then the same
# decode with the CPU adapters' serial attention and KV-append kernels (decode only, no CUDA) for their profile.
# Run from the repository root the call sent, which carries .device/node.xz .device/node_modules.tar.xz .gl/*.deb
# and $W (default .device/webgpu): tree.tgz (this worktree's files) and addon.tar.xz (the CUDA addon, Release):
#   mkdir -p /tmp/w && tar -xzf .device/webgpu/tree.tgz -C /tmp/w && bash /tmp/w/bench/webgpu/h200.sh   (SERIAL=0: no serial part)
# (logs and JSON under $OUT)
set -uo pipefail
W=$PWD/${W:-.device/webgpu}; OUT=${OUT:-/tmp/comet-out}; mkdir -p "$OUT"
mkdir -p /tmp/w/.device /tmp/w/.gl && cp .device/node.xz .device/node_modules.tar.xz /tmp/w/.device/ && cp .gl/*.deb /tmp/w/.gl/ || exit 3
mkdir -p /tmp/addon && tar -xJf "$W/addon.tar.xz" -C /tmp/addon || exit 4
cd /tmp/w && source device/unpack.sh; set +e
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
run() { local name=$1 limit=$2; shift 2
  local t0=$SECONDS; timeout "$limit" node node_modules/tsx/dist/cli.mjs bench/webgpu/decode.ts "$@" --out "$OUT" > "$OUT/$name.log" 2>&1
  echo "$name rc=$? ($((SECONDS - t0)) s)"; grep -vE '^\{"shape"' "$OUT/$name.log" | grep -vE '^\s+(embed|rows|rope|add) ' | tail -40; }
run decode 130 --shape llama3.2-1b --steps 128
[ "${SERIAL:-1}" = 1 ] && run serial 55 --shape llama3.2-1b --steps 32 --no-cuda --decode-only --kernels serial
grep -E '^\{"shape"' "$OUT/decode.log"
