# Sourced by the lead's per-session device scripts (device/s9.sh, device/s10.sh) after they set F (their payload folder
# under .device/): the call's clock and output folder, node and node_modules (F/nm-slim.tar.xz, else device/unpack.sh's
# full tarball), the carried CUDA addon of this tree unpacked into /tmp/addon and named in COMET_CUDA_ADDON, the GPU.
T0=$(date +%s); OUT=${OUT:-/tmp/comet-out}
mkdir -p "$OUT" /tmp/p
since() { echo "$(( $(date +%s) - T0 )) s"; }
[ -d node_modules ] || [ ! -f "$F/nm-slim.tar.xz" ] || tar -xJf "$F/nm-slim.tar.xz"
source device/unpack.sh; set +e
mkdir -p /tmp/addon && tar -xJf "$F/addon.tar.xz" -C /tmp/addon
export COMET_CUDA_ADDON=/tmp/addon/comet_cuda.node PYTHONUNBUFFERED=1
date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
