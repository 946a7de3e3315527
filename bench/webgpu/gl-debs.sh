#!/usr/bin/env bash
# Here (the CPU machine, Debian bookworm): the Vulkan loader and the GL dispatch libraries Dawn needs over NVIDIA's
# driver on the GPU machine, whose image has the driver's ICD but no loader (DESIGN §6), as .debs in .gl/
# (git-ignored; carry it). There device/unpack.sh unpacks them (dpkg -x into /, then ldconfig).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gl && cd .gl
apt-get download libvulkan1 libglvnd0 libgl1 libglx0 libegl1 libgles2 libopengl0 2>&1 | grep -v '^W: Download is performed unsandboxed' || true
ls -la
