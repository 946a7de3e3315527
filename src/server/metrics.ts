// Prometheus text exposition (format 0.0.4) of the engine's counters and gauges.
import type { EngineStats } from '../engine/engine.ts';

export function prometheus(s: EngineStats): string {
  const out: string[] = [];
  const metric = (name: string, type: 'gauge' | 'counter', help: string, v: number | [string, number][]) => {
    out.push(`# HELP comet_${name} ${help}`, `# TYPE comet_${name} ${type}`);
    if (typeof v === 'number') out.push(`comet_${name} ${v}`);
    else for (const [labels, x] of v) out.push(`comet_${name}{${labels}} ${x}`);
  };
  metric('requests_running', 'gauge', 'Sequences in the running batch.', s.running);
  metric('requests_waiting', 'gauge', 'Requests queued for a batch slot (preempted ones included).', s.waiting);
  metric('requests_total', 'counter', 'Requests by outcome.', Object.entries(s.requests).map(([k, v]) => [`outcome="${k}"`, v]));
  metric('kv_pages_used', 'gauge', 'KV cache pages held by sequences.', s.kv.used);
  metric('kv_pages_free', 'gauge', 'KV cache pages in the pool.', s.kv.free);
  metric('kv_pages_total', 'gauge', `KV cache pages (${s.pageSize} tokens each).`, s.kv.total);
  metric('kv_pages_cached', 'gauge', 'KV pages in the prefix cache (held or idle).', s.kv.cached);
  metric('prefix_cache_pages_total', 'counter', 'Full prompt pages looked up in the prefix cache, and found.', [['result="lookup"', s.kv.lookupPages], ['result="hit"', s.kv.hitPages]]);
  metric('prefix_cache_evictions_total', 'counter', 'Idle cached KV pages taken back for new allocations.', s.kv.evictions);
  metric('step_sequences_max', 'gauge', 'The most sequences one forward step carried (decodes and prefill chunks).', s.maxStepSequences);
  metric('step_prefills_max', 'gauge', 'The most prompts one forward step carried prefill chunks of (batched prefill).', s.maxStepPrefills);
  metric('preemptions_total', 'counter', 'Sequences preempted (pages freed, recomputed later).', s.preemptions);
  metric('steps_total', 'counter', 'Batched forward steps.', s.steps);
  metric('computed_tokens_total', 'counter', 'Tokens fed to the model (prefill, decode, recomputation).', s.computedTokens);
  metric('generated_tokens_total', 'counter', 'Tokens generated.', s.generatedTokens);
  metric('tokens_per_second', 'gauge', 'Tokens generated per second over the last 10 s.', s.tokensPerSecond);
  if (s.graphs) { // decode steps replayed as CUDA graphs (src/engine/graphs.ts)
    const g = s.graphs;
    metric('decode_graphs_live', 'gauge', 'Decode-step graphs held.', g.live);
    metric('decode_graph_steps_total', 'counter', 'Decode-only steps by how they ran.', [['how="replay"', g.replays], ['how="capture"', g.captures], ['how="eager"', g.eager]]);
    metric('decode_graph_events_total', 'counter', 'Graphs evicted (LRU), failed captures, stale graphs dropped.', [['event="eviction"', g.evictions], ['event="failure"', g.failures], ['event="stale"', g.stale]]);
  }
  out.push('# HELP comet_time_to_first_token_seconds Time from queueing a request to its first generated token.',
    '# TYPE comet_time_to_first_token_seconds histogram');
  for (const [le, n] of s.ttft.buckets) out.push(`comet_time_to_first_token_seconds_bucket{le="${le}"} ${n}`);
  out.push(`comet_time_to_first_token_seconds_bucket{le="+Inf"} ${s.ttft.count}`,
    `comet_time_to_first_token_seconds_sum ${s.ttft.sum}`, `comet_time_to_first_token_seconds_count ${s.ttft.count}`);
  return out.join('\n') + '\n';
}
