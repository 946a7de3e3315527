// Constrained decoding: a token mask per step from XGrammar (npm @mlc-ai/web-xgrammar 0.1.27, the C++ library
// compiled to WASM, what WebLLM uses; Node and browsers). One Grammars per engine: the model's vocabulary as
// XGrammar sees it (built once, on the first structured request), and compiled grammars kept by their key.
//
// The vocabulary is given as bytes, not as the tokenizer's own piece spelling: each token's text is the bytes
// it adds to the output (Tokenizer.pieceBytes), written in GPT-2's byte-level alphabet so XGrammar maps them
// back exactly. That covers byte-fallback vocabularies (stories260K: 512 tokens, most JSON characters only
// as <0xXX> byte tokens), byte-level ones and sentencepiece alike, and the mask agrees with the text the
// engine emits. Special tokens (BOS, EOS, added control tokens: pieceBytes empty) are "" (never allowed);
// the model's stop ids are XGrammar's stop tokens (allowed exactly when the grammar can end).
//
// XGrammar reports a schema it cannot handle with a C++ abort: the module stays usable, but the message only
// reaches stderr; and a schema nested ~60 deep overflows its stack, which leaves the WASM instance broken.
// So schemas are checked first (checkSchema): Ajv (a valid JSON Schema, its $refs resolve, its patterns are
// regexes), then limits that keep compilation short (it runs on the event loop: nesting, sizes, repeats)
// and keywords XGrammar would silently ignore (not, if/then/else, uniqueItems, ...): each a 400 naming the
// field. What passes and XGrammar still refuses is a 400 saying so; an instance that breaks anyway is
// dropped and the next request loads a fresh one.
//
// Output is compact JSON (XGrammar's any_whitespace off: `{"a": 1, "b": [2, 3]}`): with whitespace free, a
// small model spends its tokens on newlines. Properties a schema does not list are not generated unless it
// allows them explicitly (XGrammar's strict mode, as vLLM and WebLLM use it): the output still validates.
import type { Tokenizer } from '../tokenizer/tokenizer.ts';
import { EngineError } from './schema.ts';

// the library's classes, as far as the engine uses them (its own .d.ts types a module it does not export)
interface XgMatcher {
  acceptToken(id: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array>; // (ceil(vocab/32),) i32; bit j of word w allows token 32w + j
  isTerminated(): boolean;
  dispose(): void;
}
interface XgCompiled { dispose(): void }
interface XgCompiler {
  compileJSONSchema(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strictMode?: boolean, maxWhitespaceCnt?: number): Promise<XgCompiled>;
  compileGrammar(ebnf: string, root?: string): Promise<XgCompiled>;
}
interface AjvLike { compile(s: object): unknown; removeSchema(s: object): unknown }
interface Xg {
  TokenizerInfo: { createTokenizerInfo(vocab: string[], type: string, prependSpace: boolean, vocabSize: number, stop: number[]): Promise<unknown> };
  GrammarCompiler: { createGrammarCompiler(info: unknown, cache: boolean): Promise<XgCompiler> };
  GrammarMatcher: { createGrammarMatcher(g: XgCompiled, stop?: number[]): Promise<XgMatcher> };
}

let xgModule: Promise<Xg> | undefined;
/** The library is a UMD bundle inside a "type": "module" package: Node's ESM loader runs it without
 *  `require`/`exports` and it throws, so Node evaluates it as the CommonJS it is, its one dynamic
 *  `import('module')` answered by `require` (a Function body has no module loader under vitest's vm);
 *  bundlers (the browser build) wrap it themselves. */
function loadXGrammar(): Promise<Xg> {
  return (xgModule ??= (async () => {
    if (typeof process !== 'undefined' && process.versions?.node) {
      const { createRequire } = await import('node:module');
      const { readFileSync } = await import('node:fs');
      const req = createRequire(import.meta.url), path = req.resolve('@mlc-ai/web-xgrammar');
      const mod = { exports: {} as Xg };
      const src = readFileSync(path, 'utf8').replace("import('module')", "Promise.resolve(require('module'))");
      new Function('exports', 'module', 'require', '__filename', src)(mod.exports, mod, req, path);
      return mod.exports;
    }
    const m = await import('@mlc-ai/web-xgrammar') as unknown as Xg & { default?: Xg };
    return m.TokenizerInfo ? m : m.default!;
  })());
}

/** GPT-2's bytes_to_unicode: byte -> the character that stands for it in a byte-level vocabulary. */
const BYTE_CHAR: string[] = (() => {
  const out: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out.push(String.fromCodePoint(printable ? b : 256 + extra++));
  }
  return out;
})();

/** What a request constrains its output to: a JSON Schema (json_object is {type: 'object'}) or an EBNF
 *  grammar (XGrammar's dialect, rule `root` first); `param` names the request field it came from, for errors. */
export type GrammarSpec = { schema: object; param: string } | { ebnf: string; param: string };

const MAX_CACHED = 64;
const LIMITS = { depth: 12, chars: 64 << 10, repeat: 1024, enum: 1024 };
// keywords XGrammar accepts and ignores: a schema with them would not bind the output
const UNSUPPORTED = ['not', 'if', 'then', 'else', 'dependentRequired', 'dependentSchemas', 'dependencies', 'uniqueItems', 'contains', 'minContains', 'maxContains'];
const REPEATS = ['minItems', 'maxItems', 'minLength', 'maxLength', 'minProperties', 'maxProperties'];

/** Limits and unsupported keywords, walking subschemas only (a property named "not" is not the keyword). */
function checkSchema(schema: unknown, param: string, depth = 0): void {
  const bad = (what: string, at = param) => { throw new EngineError(`'${at}': ${what}`, 'invalid_value', 400, at); };
  if (typeof schema === 'boolean') return;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return bad('a schema must be an object or a boolean');
  if (depth > LIMITS.depth) return bad(`schemas nest at most ${LIMITS.depth} deep`);
  const s = schema as Record<string, unknown>;
  for (const k of UNSUPPORTED) if (k in s) bad(`'${k}' is not supported by the grammar engine (the output could not be held to it)`, `${param}.${k}`);
  if (Array.isArray(s.allOf) && s.allOf.length > 1) bad("'allOf' with more than one schema is not supported by the grammar engine", `${param}.allOf`);
  for (const k of REPEATS) if (typeof s[k] === 'number' && s[k] > LIMITS.repeat) bad(`at most ${LIMITS.repeat} (compiling larger repeats takes too long)`, `${param}.${k}`);
  if (Array.isArray(s.enum) && s.enum.length > LIMITS.enum) bad(`at most ${LIMITS.enum} values`, `${param}.enum`);
  const sub = (v: unknown, at: string) => checkSchema(v, at, depth + 1);
  for (const k of ['properties', 'patternProperties', '$defs', 'definitions'])
    if (typeof s[k] === 'object' && s[k] !== null) for (const [name, v] of Object.entries(s[k] as object)) sub(v, `${param}.${k}.${name}`);
  for (const k of ['additionalProperties', 'propertyNames', 'unevaluatedProperties', 'unevaluatedItems'])
    if (typeof s[k] === 'object' && s[k] !== null) sub(s[k], `${param}.${k}`);
  if (Array.isArray(s.items)) s.items.forEach((v, i) => sub(v, `${param}.items[${i}]`));
  else if (s.items !== undefined) sub(s.items, `${param}.items`);
  for (const k of ['prefixItems', 'anyOf', 'oneOf', 'allOf'])
    if (Array.isArray(s[k])) (s[k] as unknown[]).forEach((v, i) => sub(v, `${param}.${k}[${i}]`));
}

export class Grammars {
  private compiler?: Promise<XgCompiler>;
  private readonly cache = new Map<string, Promise<XgCompiled>>(); // LRU by insertion order
  private ajv?: Promise<AjvLike>;

  constructor(private readonly tokenizer: Tokenizer, private readonly vocabSize: number, private readonly stop: number[]) {}

  /** A fresh matcher for one sequence; a 400 EngineError when the schema is invalid or cannot be compiled. */
  async matcher(spec: GrammarSpec): Promise<Matcher> {
    const xg = await loadXGrammar();
    const compiled = await this.compiled(spec);
    return new Matcher(await xg.GrammarMatcher.createGrammarMatcher(compiled, this.stop), this.vocabSize);
  }

  private compiled(spec: GrammarSpec): Promise<XgCompiled> {
    const key = 'ebnf' in spec ? `ebnf:${spec.ebnf}` : JSON.stringify(spec.schema);
    const hit = this.cache.get(key);
    if (hit) {
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const p = (async () => {
      const compiler = await (this.compiler ??= this.createCompiler());
      if (key.length > LIMITS.chars) throw new EngineError(`'${spec.param}': the schema has ${key.length} characters, at most ${LIMITS.chars}`, 'invalid_value', 400, spec.param);
      if ('schema' in spec) {
        checkSchema(spec.schema, spec.param);
        await this.ajvCheck(spec.schema, spec.param);
      }
      try {
        return await ('ebnf' in spec ? compiler.compileGrammar(spec.ebnf, 'root') : compiler.compileJSONSchema(key, false));
      } catch (e) {
        if (!/Aborted/.test(String(e))) { xgModule = undefined; this.compiler = undefined; this.cache.clear(); } // a broken instance
        const why = String((e as Error)?.message ?? e).replace(/ Build with -sASSERTIONS.*/, '');
        throw new EngineError('ebnf' in spec
          ? `'${spec.param}': the grammar engine (XGrammar) cannot parse this EBNF grammar (${why}); see XGrammar's EBNF: rules 'name ::= ...', a rule named root`
          : `'${spec.param}': the grammar engine (XGrammar) cannot compile this schema (${why}); it supports type, properties, required, items, enum, const, anyOf, $ref/$defs, pattern, lengths and ranges`, 'invalid_value', 400, spec.param);
      }
    })();
    this.cache.set(key, p);
    p.catch(() => this.cache.delete(key)); // failures are not kept
    while (this.cache.size > MAX_CACHED) {
      const [oldest, q] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      q.then((c) => c.dispose(), () => {});
    }
    return p;
  }

  /** Ajv: a valid JSON Schema (draft-07 keywords and $defs), $refs that resolve, patterns that are regexes. */
  private async ajvCheck(schema: object, param: string): Promise<void> {
    const ajv = await (this.ajv ??= import('ajv').then(({ Ajv }) => new Ajv({ strict: false, validateFormats: false, logger: false }) as AjvLike));
    try {
      ajv.compile(schema);
    } catch (e) {
      throw new EngineError(`'${param}': not a valid JSON Schema: ${(e as Error).message}`, 'invalid_value', 400, param);
    } finally {
      ajv.removeSchema(schema); // Ajv keeps what it compiled; requests' schemas are not kept
    }
  }

  private async createCompiler(): Promise<XgCompiler> {
    const xg = await loadXGrammar(), tok = this.tokenizer, stop = new Set(this.stop);
    const prev = tok.bos === 0 ? 1 : 0; // any token but BOS: pieceBytes after BOS strips a leading space
    const vocab: string[] = [];
    for (let id = 0; id < tok.vocabSize; id++) {
      if (stop.has(id) || id === tok.bos || tok.eos.includes(id)) { vocab.push(''); continue; }
      let s = '';
      for (const b of tok.pieceBytes(prev, id)) s += BYTE_CHAR[b];
      vocab.push(s);
    }
    const info = await xg.TokenizerInfo.createTokenizerInfo(vocab, 'byte_level', false, this.vocabSize, this.stop);
    return xg.GrammarCompiler.createGrammarCompiler(info, false);
  }
}

/** One sequence's grammar state. mask() before sampling, accept() after; dispose() when the sequence ends. */
export class Matcher {
  private disposed = false;
  constructor(private readonly m: XgMatcher, private readonly vocabSize: number) {}

  /** The tokens the grammar allows next: (ceil(V/32),) i32, bit j of word w for token 32w + j. */
  allowed(): Promise<Int32Array> {
    return this.m.getNextTokenBitmask();
  }

  /** Set the logits of the tokens the grammar does not allow at this point to -Infinity, in place. */
  async mask(logits: Float32Array, bits?: Int32Array): Promise<void> {
    bits ??= await this.allowed();
    const V = Math.min(logits.length, this.vocabSize);
    for (let w = 0; w < bits.length; w++) {
      const word = bits[w];
      if (word === -1) continue; // all 32 allowed
      const end = Math.min(V, (w + 1) * 32);
      for (let i = w * 32; i < end; i++) if (!((word >>> (i & 31)) & 1)) logits[i] = -Infinity;
    }
  }

  /** Advance by the sampled token; false when the grammar rejects it (a masked-out token was forced). */
  accept(id: number): boolean {
    return this.m.acceptToken(id);
  }

  get terminated(): boolean {
    return this.m.isTerminated();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.m.dispose();
  }
}
