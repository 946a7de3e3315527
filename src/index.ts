// The package's Node entry, `import { createEngine } from 'comet'` (DESIGN §1). The browser entry is web.ts
// ('comet/web'). Everything here is the engine API and what a program needs around it: open a model (the
// embedded stories260K when none is named), serve it over HTTP, read and write model files.
//
//   const engine = await createEngine();                        // stories260K on the simulator
//   const r = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Once upon a time' }] });
//   const engine = await createEngine('model.gguf', { backend: 'cuda' });
export { createEngine, Engine, EngineError } from './engine/engine.ts';
export type {
  ChatCompletion, ChatCompletionChunk, ChatParams, Completion, CompletionChunk, CompletionParams, EngineOptions,
  EngineStats, Finish, RequestOptions, Usage,
} from './engine/engine.ts';
export type { ChatMessage } from './engine/chat-template.ts';
export { CometError } from './errors.ts';
export { defaultModelPath, openModel, type OpenModel } from './runtime/open.ts';
export { backendNames, createBackend, type BackendName } from './runtime/backends.ts';
export { createApp, startServer, type RunningServer, type ServerOptions } from './server/server.ts';
export { loadModel, type LoadedModel } from './loaders/index.ts';
export { writeGguf } from './loaders/gguf.ts';
export type { GgufWriteType } from './loaders/formats/gguf.ts';
export type { Tokenizer } from './tokenizer/tokenizer.ts';
export { loadTokenizer } from './tokenizer/index.ts';
export type { Backend } from '../backends/backend.ts';
