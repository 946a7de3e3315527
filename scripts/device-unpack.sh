#!/usr/bin/env bash
# On the GPU machine: unpack node and node_modules packed by scripts/device-pack.sh; put node on PATH with
#   source scripts/device-unpack.sh
set -e
mkdir -p /tmp/nodebin
[ -x /tmp/nodebin/node ] || { xz -dc .device/node.xz > /tmp/nodebin/node; chmod +x /tmp/nodebin/node; }
[ -d node_modules ] || tar -xJf .device/node_modules.tar.xz
export PATH=/tmp/nodebin:$PATH
# Vulkan loader for WebGPU (Dawn) over NVIDIA's driver, when .gl/ debs were carried (device README)
if ls .gl/*.deb >/dev/null 2>&1; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
