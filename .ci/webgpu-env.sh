# Sourced by .ci/run before the tests: the WebGPU tests (test/webgpu-*.test.ts, the webgpu rows of
# test/ops.test.ts, test/browser/webgpu-browser.test.ts) run on Chromium's SwiftShader Vulkan driver
# (DESIGN.md §6): Dawn (npm `webgpu`) loads libvulkan.so.1, which finds SwiftShader through VK_ICD_FILENAMES.
# Without an adapter those tests fail with a message saying why; they never skip.
need=()
[ -f /usr/lib/chromium/vk_swiftshader_icd.json ] || need+=(chromium)
ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' || need+=(libvulkan1)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
export COMET_TEST_WEBGPU=1
