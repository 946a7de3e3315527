// The messages between the page (remote.ts) and the engine's Worker (worker.ts), and how errors cross: a
// structured clone keeps only an Error's message, so the class, code, HTTP status and parameter travel as data
// and are rebuilt on the page (an EngineError stays an EngineError, an abort an AbortError).
import type { ChatParams, CompletionParams, EngineStats } from '../engine/engine.ts';
import { EngineError } from '../engine/schema.ts';
import { CometError } from '../errors.ts';
import { abortError, type LoadProgress } from './cache.ts';
import type { EngineInfo, WebBackendName } from './local.ts';

/** Engine options that cross to the Worker (no functions, no backend objects). */
export interface WorkerEngineOptions {
  backend?: WebBackendName;
  maxBatch?: number; kvMemory?: number; pageSize?: number; maxQueue?: number; maxStepTokens?: number;
  modelName?: string; warmup?: boolean;
}

export type ToWorker =
  | { t: 'load'; model: Blob | Uint8Array; name: string; fromCache: boolean; tokenizer?: Blob | Uint8Array; options: WorkerEngineOptions }
  | { t: 'abort-load' }
  | { t: 'create'; id: number; kind: 'chat' | 'text'; params: ChatParams | CompletionParams }
  | { t: 'abort'; id: number }
  | { t: 'stats'; id: number };

export type FromWorker =
  | { t: 'progress'; p: LoadProgress }
  | { t: 'ready'; info: EngineInfo }
  | { t: 'load-error'; error: WireError }
  | { t: 'accepted'; id: number } // a stream: create() resolved, chunks follow
  | { t: 'chunk'; id: number; chunk: unknown }
  | { t: 'end'; id: number }
  | { t: 'result'; id: number; value: unknown } // a whole response, or stats
  | { t: 'error'; id: number; error: WireError }
  | { t: 'lost'; error: WireError };

export interface WireError { name: string; message: string; code?: string; status?: number; param?: string | null }

export function toWire(e: unknown): WireError {
  if (!(e instanceof Error)) return { name: 'Error', message: String(e) };
  const x = e as Error & { code?: string; status?: number; param?: string | null };
  return { name: x.name, message: x.message, code: x.code, status: x.status, param: x.param };
}

export function fromWire(w: WireError): Error {
  if (w.name === 'AbortError') return abortError();
  if (w.name === 'EngineError') return new EngineError(w.message, w.code ?? 'error', w.status, w.param ?? null);
  if (w.name === 'CometError') return new CometError(w.message, w.code);
  const e = new Error(w.message);
  e.name = w.name;
  return e;
}

export type { EngineStats };
