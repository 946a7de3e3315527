// Finding a WebGPU device in both worlds: `navigator.gpu` in a browser, npm `webgpu` (Dawn) in Node.
// The Node path needs a Vulkan driver; on our CPU machines that is Chromium's SwiftShader (DESIGN §6).
import { CometError } from '../errors.ts';

export interface GpuContext {
  device: GPUDevice;
  /** held so the Dawn instance and adapter live as long as the device (GC of them kills Dawn's threads) */
  gpu: GPU;
  adapter: GPUAdapter;
  adapterName: string;
  /** WGSL has dot4I8Packed (language feature packed_4x8_integer_dot_product) */
  dot4: boolean;
  /** the device has the `subgroups` feature and WGSL the subgroup_id builtin: the KV4 attention's lane reductions use
   *  them (shaders/lanes_sg.wgsl; else lanes.wgsl) */
  subgroups: boolean;
  /** the smaller of the adapter's and the device's limits (an app or a test may narrow what the adapter says) */
  limits: { storageBuffers: number; workgroupStorage: number; maxBinding: number; maxBuffer: number };
  /** set once the device is lost (GPU reset, driver update, tab in the background too long, device.destroy()):
   *  every later read fails with a 'device_lost' CometError; the app creates a new engine (a new device) */
  lost?: { reason: string; message: string };
  /** resolves when the device is lost */
  whenLost: Promise<{ reason: string; message: string }>;
  /** the first uncaptured GPU error (validation, out of memory, internal), thrown by the next read */
  error?: string;
}

const SWIFTSHADER_HINT =
  'WebGPU in Node (npm `webgpu`, Dawn) needs a Vulkan driver. Without a GPU, use Chromium\'s SwiftShader: ' +
  '`apt-get install -y chromium libvulkan1`, then set VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json ' +
  'XDG_RUNTIME_DIR=/tmp (or `source .ci/webgpu-env.sh`). On an NVIDIA machine set ' +
  'VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json with libvulkan1 installed.';

async function nodeGpu(dawn: string[]): Promise<GPU> {
  const name = 'webgpu'; // a variable: bundlers must not pull Dawn into a browser build
  let mod: { create: (opts: string[]) => GPU; globals: Record<string, unknown> };
  try {
    mod = await import(/* @vite-ignore */ name);
  } catch (e) {
    throw new CometError(`webgpu: cannot load the npm package 'webgpu' (Dawn for Node): ${(e as Error).message}`, 'no_device');
  }
  // GPUBufferUsage, GPUMapMode, ... as in a browser
  for (const [k, v] of Object.entries(mod.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  // timestamps at full precision: Dawn rounds them for the web's sake (timing attacks), which hides a kernel's
  // microseconds from the benchmarks (bench/webgpu); a Node process has no such page to protect
  return mod.create([...dawn, 'disable-dawn-features=timestamp_quantization']);
}

/** The error every request gets once the device is lost. */
export const deviceLost = (l: { reason: string; message: string }) =>
  new CometError(`webgpu: the GPU device was lost (${l.reason}${l.message ? `: ${l.message.replace(/\.$/, '')}` : ''}); this engine cannot continue: create it again`, 'device_lost');

let shared: Promise<GpuContext> | undefined;

/** One device per process (pipelines and buffers are cached on it). */
export function getGpu(): Promise<GpuContext> {
  shared ??= openGpu().then((ctx) => (current = ctx)).catch((e) => { shared = undefined; throw e; });
  return shared;
}

/** A device of its own (getGpu's is the one a process shares). `dawn`: extra options of Dawn's Node binding, e.g.
 *  `enable-dawn-features=disable_robustness` (bench/webgpu: what WGSL's bounds checks cost); ignored in a browser. */
export async function openGpu(dawn: string[] = []): Promise<GpuContext> {
  const inBrowser = typeof navigator !== 'undefined' && !!(navigator as Navigator).gpu;
  const gpu = inBrowser ? navigator.gpu : await nodeGpu(dawn);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter)
    throw new CometError(inBrowser
      ? 'webgpu: navigator.gpu gave no adapter (Chromium: --enable-unsafe-webgpu; headless: serve the page from http://127.0.0.1)'
      : `webgpu: no WebGPU adapter. ${SWIFTSHADER_HINT}`, 'no_device');
  const L = adapter.limits;
  const device = await adapter.requestDevice({
    // timestamp-query: benchmarks (bench/webgpu); subgroups: the attention's reductions (GpuContext.subgroups)
    requiredFeatures: (['timestamp-query', 'subgroups'] as const).filter((f) => adapter.features.has(f)),
    requiredLimits: {
      maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
      maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
      maxBufferSize: L.maxBufferSize,
      maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
    },
  });
  const info = adapter.info;
  const wgsl = (gpu as GPU & { wgslLanguageFeatures?: ReadonlySet<string> }).wgslLanguageFeatures;
  const ctx: GpuContext = {
    device, gpu, adapter,
    adapterName: [info?.vendor, info?.architecture, info?.device, info?.description].filter(Boolean).join(' ') || 'unknown adapter',
    dot4: !!wgsl?.has('packed_4x8_integer_dot_product'),
    subgroups: device.features.has('subgroups') && !!wgsl?.has('subgroup_id'),
    limits: {
      storageBuffers: device.limits.maxStorageBuffersPerShaderStage,
      workgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
      maxBinding: Math.min(L.maxStorageBufferBindingSize, device.limits.maxStorageBufferBindingSize),
      maxBuffer: Math.min(L.maxBufferSize, device.limits.maxBufferSize),
    },
    whenLost: device.lost.then((i) => {
      ctx.lost = { reason: i.reason ?? 'unknown', message: i.message ?? '' };
      if (shared && current === ctx) shared = undefined; // the next getGpu() asks for a new device
      return ctx.lost;
    }),
  };
  // Errors no scope caught go to the request that reads next (a clear error there), not to the console.
  device.addEventListener?.('uncapturederror', (ev) => {
    ctx.error ??= (ev as GPUUncapturedErrorEvent).error.message;
  });
  return ctx;
}

let current: GpuContext | undefined;
