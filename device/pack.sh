#!/usr/bin/env bash
# Pack what the GPU machine needs to run our TypeScript (it has no Node.js and no network):
#   .device/node.xz          this machine's node binary
#   .device/node_modules.tar.xz   node_modules without other platforms' binaries and dev-only giants
# Name `.device` in the device tool's `carry`, then on the device run `bash device/unpack.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .device
[ -f .device/node.xz ] || xz -T2 -c "$(command -v node)" > .device/node.xz
tar -cJf .device/node_modules.tar.xz \
  --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' \
  --exclude='node_modules/webgpu/dist/linux-arm64' \
  --exclude='node_modules/@typescript' --exclude='node_modules/typescript' \
  --exclude='node_modules/playwright-core' \
  --exclude='node_modules/lightningcss-linux-x64-gnu' \
  node_modules
du -sh .device/*
