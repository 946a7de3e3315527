// WGSL sources: shaders/<family>.wgsl, each prefixed with shaders/common.wgsl and the `dot4` of the adapter
// (dot4I8Packed where WGSL has packed_4x8_integer_dot_product, the integer fallback otherwise); norm and quant also
// with shaders/rowsum.wgsl (their shared sum of squares; not a module of its own); attention with shaders/lanes.wgsl, or
// lanes_sg.wgsl after `enable subgroups` where the device has subgroups (its 64-lane max and bfly).
// Node reads the files; a browser build passes them in (Vite: import.meta.glob('…/*.wgsl', { query: '?raw' })).

export const FAMILIES = ['common', 'rowsum', 'lanes', 'lanes_sg', 'gemm_w4ax', 'gemm_f32', 'quant', 'norm', 'rope', 'kv_append', 'attention', 'elementwise', 'embed', 'argmax', 'topk', 'rows'] as const;
export type Family = (typeof FAMILIES)[number];
export type ShaderSources = Record<Family, string>;

export async function loadShaderSources(): Promise<ShaderSources> {
  const fsName = 'node:fs/promises';
  const { readFile } = (await import(/* @vite-ignore */ fsName)) as typeof import('node:fs/promises');
  const out = {} as ShaderSources;
  for (const f of FAMILIES) out[f] = await readFile(new URL(`../../shaders/${f}.wgsl`, import.meta.url), 'utf8');
  return out;
}

/** Vite's `import.meta.glob` result ({ '/path/x.wgsl': text }) -> ShaderSources */
export function shaderSourcesFromGlob(files: Record<string, string | { default: string }>): ShaderSources {
  const out = {} as ShaderSources;
  for (const [path, v] of Object.entries(files)) {
    const name = path.replace(/^.*\//, '').replace(/\.wgsl$/, '') as Family;
    out[name] = typeof v === 'string' ? v : v.default;
  }
  for (const f of FAMILIES) if (typeof out[f] !== 'string') throw new Error(`webgpu: shader ${f}.wgsl is missing from the bundle`);
  return out;
}

export function moduleSource(src: ShaderSources, family: Family, dot4: boolean, subgroups = false): string {
  const d = dot4 ? 'fn dot4(a: u32, b: u32) -> i32 { return dot4I8Packed(a, b); }' : 'fn dot4(a: u32, b: u32) -> i32 { return dot4_plain(a, b); }';
  const rows = family === 'norm' || family === 'quant' ? `${src.rowsum}\n` : '';
  const sg = family === 'attention' && subgroups;
  const lanes = family === 'attention' ? `${sg ? src.lanes_sg : src.lanes}\n` : '';
  return `${sg ? 'enable subgroups;\nrequires subgroup_id;\n' : ''}${src.common}\n${d}\n${rows}${lanes}${src[family]}`;
}
