#!/usr/bin/env bash
# On the GPU machine: unpack node and node_modules packed by device/pack.sh; put node on PATH with
#   source device/unpack.sh
# node_modules only when its tarball was carried (a call running an esbuild bundle carries node alone); node is
# kept in /tmp/nodebin for later calls to the same machine.
set -e
mkdir -p /tmp/nodebin
[ -x /tmp/nodebin/node ] || { xz -dc .device/node.xz > /tmp/nodebin/node.tmp; chmod +x /tmp/nodebin/node.tmp; mv /tmp/nodebin/node.tmp /tmp/nodebin/node; }
[ -d node_modules ] || [ ! -f .device/node_modules.tar.xz ] || tar -xJf .device/node_modules.tar.xz
export PATH=/tmp/nodebin:$PATH
# Vulkan loader for WebGPU (Dawn) over NVIDIA's driver, when .gl/ debs were carried (device README)
if ls .gl/*.deb >/dev/null 2>&1; then for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig; fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
