// The demo page: load a model (server list or a picked file) with a progress bar, then chat with it through
// comet/web's engine, streaming, with Stop, sampling controls and live numbers.
// The engine runs in a Web Worker (comet/web's default); ?worker=0 runs it on the page's thread.
// URL parameters (shareable, and what the browser tests use): ?model=URL&tokenizer=URL&backend=sim|webgpu&prompt=TEXT&autoload=1&worker=0
import { createEngine, deleteCachedModel, detectWebGPU, listCachedModels, type GpuProbe, type LoadProgress, type WebBackendName, type WebEngine } from '../src/web.ts';

interface DemoModel { id: string; label: string; url: string; tokenizer?: string; bytes: number; prompt?: string }

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const ui = {
  gpuStatus: $('gpu-status'), noGpu: $('no-webgpu'), noGpuReason: $('no-webgpu-reason'), useSim: $<HTMLButtonElement>('use-sim'),
  modelSelect: $<HTMLSelectElement>('model-select'), backend: $<HTMLSelectElement>('backend'), load: $<HTMLButtonElement>('load'),
  file: $<HTMLInputElement>('file'), progress: $<HTMLProgressElement>('progress'), progressText: $('progress-text'), error: $('error'),
  prompt: $<HTMLTextAreaElement>('prompt'), temperature: $<HTMLInputElement>('temperature'), topP: $<HTMLInputElement>('top-p'),
  maxTokens: $<HTMLInputElement>('max-tokens'), generate: $<HTMLButtonElement>('generate'), stop: $<HTMLButtonElement>('stop'),
  output: $('output'), shownPrompt: $('shown-prompt'), generated: $('generated'), finish: $('finish'),
  cached: $('cached'),
  stat: (k: string) => $(`stat-${k}`),
};
const params = new URLSearchParams(location.search);

let probe: GpuProbe | undefined;
let engine: WebEngine | undefined;
let generation: AbortController | undefined;
let loading: AbortController | undefined;

type State = 'starting' | 'idle' | 'loading' | 'ready' | 'generating';
function setState(s: State): void {
  document.body.dataset.state = s;
  const busy = s === 'loading' || s === 'starting';
  ui.load.disabled = busy || s === 'generating';
  ui.file.disabled = busy || s === 'generating';
  ui.useSim.disabled = busy || s === 'generating';
  ui.generate.disabled = s !== 'ready';
  ui.stop.disabled = s !== 'generating';
}

function showError(msg: string | undefined): void {
  ui.error.hidden = !msg;
  ui.error.textContent = msg ?? '';
}

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** 1.5 MiB */
function size(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${u[i]}`;
}
/** 1.5 MiB (1,572,864 B) */
const bytes = (n: number) => (n < 1024 ? size(n) : `${size(n)} (${n.toLocaleString('en-US')} B)`);
const rate = (tokens: number, ms: number) => (ms > 0 && tokens > 0 ? `${((tokens * 1000) / ms).toFixed(1)} tok/s` : '–');

// ---- device ----

function showNoGpu(reason: string): void {
  ui.noGpu.hidden = false;
  ui.noGpuReason.textContent = reason;
  (ui.backend.querySelector('option[value=webgpu]') as HTMLOptionElement).disabled = true;
  ui.backend.value = 'sim';
}

function renderGpu(p: GpuProbe): void {
  ui.stat('adapter').textContent = p.adapter ?? 'none';
  ui.stat('features').textContent = [...p.features, ...p.wgslFeatures].join(', ') || 'none';
  // the ones COMET's kernels care about: f16 arithmetic, subgroup reductions, timers, packed int8 dot products
  const have = new Set([...p.features, ...p.wgslFeatures]);
  ui.stat('key-features').replaceChildren(...['shader-f16', 'subgroups', 'timestamp-query', 'packed_4x8_integer_dot_product'].flatMap((f, i) => {
    const s = document.createElement('span');
    s.className = have.has(f) ? 'ok' : 'feat-off';
    s.textContent = f === 'packed_4x8_integer_dot_product' ? 'dot4I8Packed' : f;
    s.title = have.has(f) ? 'available' : 'not available';
    return i ? [' · ', s] : [s];
  }));
  if (p.ok) {
    ui.gpuStatus.innerHTML = '';
    const b = document.createElement('span');
    b.className = 'ok';
    b.textContent = `WebGPU adapter: ${p.adapter}`;
    ui.gpuStatus.append(b, ` · ${p.features.length} features · ${p.limits!.maxStorageBuffersPerShaderStage} storage buffers per stage`);
    if (p.software) ui.gpuStatus.append(document.createElement('br'), 'This adapter emulates a GPU on the CPU: WebGPU runs correctly but far slower than the simulator backend, which is selected.');
  } else {
    ui.gpuStatus.textContent = p.adapter ? `WebGPU adapter: ${p.adapter} (not usable)` : 'No WebGPU adapter.';
    showNoGpu(p.reason!);
  }
}

// ---- loading ----

function onProgress(p: LoadProgress): void {
  const frac = p.total ? Math.min(1, p.loaded / p.total) : p.phase === 'compile' ? 1 : undefined;
  if (frac === undefined) ui.progress.removeAttribute('value');
  else ui.progress.value = frac;
  const amount = p.phase === 'verify'
    ? `${p.loaded} / ${p.total} tensors`
    : p.total ? `${size(p.loaded)} / ${size(p.total)}` : size(p.loaded);
  const label = { download: 'Downloading', cache: 'Reading from the browser cache', read: 'Reading the file', verify: 'Checking', upload: 'Uploading to the device', compile: 'Compiling', ready: 'Ready' }[p.phase];
  const cap = (t: string) => t.charAt(0).toUpperCase() + t.slice(1);
  ui.progressText.textContent = p.phase === 'ready' ? p.message : p.phase === 'compile' ? `${cap(p.message)}…`
    : `${label}: ${amount}${frac !== undefined ? ` (${Math.round(frac * 100)}%)` : ''}`;
}

async function load(model: string | File, tokenizer: string | File | undefined): Promise<void> {
  loading?.abort();
  generation?.abort();
  engine?.close();
  engine = undefined;
  const ac = (loading = new AbortController());
  showError(undefined);
  setState('loading');
  ui.progress.value = 0;
  ui.finish.textContent = '';
  for (const k of ['model-bytes', 'kv-bytes', 'backend']) ui.stat(k).textContent = '–';
  const backend = ui.backend.value as WebBackendName;
  try {
    const e = await createEngine(model, { backend, tokenizer, onProgress, maxBatch: 1, signal: ac.signal, worker: params.get('worker') !== '0' });
    if (ac.signal.aborted) return e.close();
    engine = e;
    const { memory: m, config: c } = e.info;
    ui.stat('model-bytes').textContent = bytes(m.modelBytes);
    ui.stat('kv-bytes').textContent = `${bytes(m.kvBytes)} · ${m.kvPages} pages of ${m.pageSize} tokens, ${e.info.kvDType}`;
    ui.stat('backend').textContent = `${e.info.backend} · ${e.info.format} · ${c.nLayers} layers, dim ${c.dim}, vocab ${c.vocabSize}, context ${c.seqLen} · ${e.mode === 'worker' ? 'in a Worker' : 'on the page thread'}`;
    ui.maxTokens.max = String(c.seqLen);
    // a lost GPU device ends this engine: say so, and let the user load again (a new engine, a new device)
    void e.lost.then((err) => { if (engine === e) engineLost(err); });
    setState('ready');
    void renderCached();
  } catch (err) {
    if (ac.signal.aborted) return;
    ui.progress.value = 0;
    ui.progressText.textContent = 'no model loaded';
    const msg = errorText(err);
    if (backend === 'webgpu' && (err as { code?: string }).code === 'no_device') showNoGpu(msg);
    showError(`Could not load the model. ${msg}`);
    setState('idle');
  } finally {
    if (loading === ac) loading = undefined;
  }
}

function engineLost(err: Error): void {
  generation?.abort();
  engine?.close();
  engine = undefined;
  ui.progress.value = 0;
  ui.progressText.textContent = 'no model loaded';
  showError(`${err.message}. Press Load to start the model again.`);
  setState('idle');
}

/** The models this browser keeps (OPFS, or the Cache API), each with a Delete button. */
async function renderCached(): Promise<void> {
  const list = await listCachedModels().catch(() => []);
  ui.cached.replaceChildren(...list.map((m) => {
    const li = document.createElement('li'), del = document.createElement('button');
    li.textContent = `${m.url.replace(location.origin, '').replace(/^.*\/models\//, 'models/')} · ${size(m.bytes)} · ${m.where === 'opfs' ? 'OPFS' : 'Cache API'} `;
    del.type = 'button';
    del.textContent = 'Delete';
    del.addEventListener('click', () => void deleteCachedModel(m.url).then(renderCached));
    li.append(del);
    return li;
  }));
  if (!list.length) ui.cached.textContent = 'none';
}

/** The model's suggested prompt replaces the text box's content until the user types there. */
let promptEdited = false;
function suggestPrompt(): void {
  const m = models.find((x) => x.url === ui.modelSelect.value);
  if (m?.prompt && !promptEdited) ui.prompt.value = m.prompt;
}

function loadSelected(): void {
  const m = models.find((x) => x.url === ui.modelSelect.value);
  void load(ui.modelSelect.value, m?.tokenizer ?? (ui.modelSelect.value.endsWith('.comet') ? undefined : params.get('tokenizer') ?? undefined));
}

function loadFiles(files: File[]): void {
  if (files.length === 0) return;
  const isTok = (f: File) => /^(tok.*|tokenizer)\.bin$/i.test(f.name);
  const model = files.find((f) => f.name.endsWith('.comet')) ?? files.filter((f) => !isTok(f)).sort((a, b) => b.size - a.size)[0] ?? files[0];
  // a llama2.c checkpoint needs its tokenizer: the one picked with it, else the demo's tok512.bin (stories260K's)
  const tok = model.name.endsWith('.comet') ? undefined : files.find((f) => f !== model && isTok(f)) ?? 'models/tok512.bin';
  void load(model, tok);
}

// ---- generation ----

async function generate(): Promise<void> {
  if (!engine) return;
  const ac = (generation = new AbortController());
  setState('generating');
  showError(undefined);
  ui.shownPrompt.textContent = ui.prompt.value;
  ui.generated.textContent = '';
  ui.finish.textContent = '';
  const t0 = performance.now();
  let tFirst = 0, chunks = 0;
  let usage: { prompt_tokens: number; completion_tokens: number } | undefined, finish = '';
  const show = (now: number) => {
    ui.stat('prefill').textContent = usage && tFirst ? `${rate(usage.prompt_tokens, tFirst - t0)} · ${usage.prompt_tokens} tokens in ${(tFirst - t0).toFixed(0)} ms` : tFirst ? `first token after ${(tFirst - t0).toFixed(0)} ms` : '–';
    const n = usage?.completion_tokens ?? chunks;
    ui.stat('decode').textContent = rate(n - 1, now - tFirst);
    ui.stat('tokens').textContent = usage ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} generated` : `${chunks} generated`;
  };
  try {
    const stream = await engine.chat.completions.create({
      messages: [{ role: 'user', content: ui.prompt.value }],
      stream: true, stream_options: { include_usage: true },
      temperature: Number(ui.temperature.value), top_p: Number(ui.topP.value), max_tokens: Number(ui.maxTokens.value),
    }, { signal: ac.signal });
    for await (const c of stream) {
      const now = performance.now();
      const choice = c.choices[0];
      if (choice?.delta.content) {
        if (!tFirst) tFirst = now;
        chunks++;
        ui.generated.append(choice.delta.content);
        ui.output.scrollTop = ui.output.scrollHeight;
      }
      if (choice?.finish_reason) finish = choice.finish_reason;
      if (c.usage) usage = c.usage;
      show(now);
    }
    ui.finish.textContent = finish === 'length' ? 'Stopped at the token limit.' : 'The model ended the text.';
  } catch (err) {
    if ((err as Error).name === 'AbortError') ui.finish.textContent = 'Stopped.';
    else if ((err as { code?: string }).code === 'device_lost') return engineLost(err as Error);
    else showError(`Generation failed. ${errorText(err)}`);
  } finally {
    show(performance.now());
    if (generation === ac) generation = undefined;
    setState(engine ? 'ready' : 'idle');
    // the engine's own count (in the Worker): a Stop shows up here as a cancelled request
    void engine?.stats().then((s) => { ui.stat('requests').textContent = `${s.requests.finished} finished · ${s.requests.cancelled} stopped · ${s.requests.failed} failed`; }, () => {});
  }
}

// ---- start ----

let models: DemoModel[] = [];

async function start(): Promise<void> {
  setState('starting');
  ui.load.addEventListener('click', loadSelected);
  ui.useSim.addEventListener('click', () => { ui.backend.value = 'sim'; loadSelected(); });
  ui.prompt.addEventListener('input', () => { promptEdited = true; });
  ui.modelSelect.addEventListener('change', suggestPrompt);
  ui.file.addEventListener('change', () => loadFiles([...(ui.file.files ?? [])]));
  ui.generate.addEventListener('click', () => void generate());
  ui.stop.addEventListener('click', () => generation?.abort());
  ui.prompt.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !ui.generate.disabled) void generate(); });

  void renderCached();
  probe = await detectWebGPU();
  renderGpu(probe);
  try {
    const r = await fetch('models/index.json', { cache: 'no-store' });
    if (r.ok) models = await r.json();
  } catch { /* a static copy without the list: only ?model= and picked files */ }
  const wanted = params.get('model');
  if (wanted && !models.some((m) => m.url === wanted)) models.push({ id: wanted, label: wanted, url: wanted, tokenizer: params.get('tokenizer') ?? undefined, bytes: 0 });
  if (params.get('prompt') !== null) { ui.prompt.value = params.get('prompt')!; promptEdited = true; }
  for (const m of models) ui.modelSelect.add(new Option(m.bytes ? `${m.label} · ${size(m.bytes)}` : m.label, m.url));
  if (wanted) ui.modelSelect.value = wanted;
  suggestPrompt();
  const b = params.get('backend');
  if (b === 'sim' || (b === 'webgpu' && probe.ok)) ui.backend.value = b;
  else if (!probe.ok || probe.software) ui.backend.value = 'sim';
  setState('idle');
  const blocked = ui.backend.value === 'webgpu' && !probe.ok;
  if (params.get('autoload') === '1' && models.length && !blocked && !(b === 'webgpu' && !probe.ok)) loadSelected();
}

void start().catch((e) => {
  showError(`The page failed to start. ${errorText(e)}`);
  setState('idle');
});
