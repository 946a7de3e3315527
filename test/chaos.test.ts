// Server chaos on loopback (issue 10): a small fixed sample of testing/chaos.ts (bench/chaos/run.ts runs
// 900 requests). `comet serve` (sim backend, embedded stories260K, a KV pool small enough to preempt) gets valid
// greedy requests, malformed and oversize ones, clients that disconnect at random points, raw sockets cut inside
// the headers or the body, and bursts past the queue limit. Afterwards it must still answer /health, hold no KV
// page, not have grown in memory, and every valid request that was not cancelled (or refused with 503) must have
// got exactly the text it gets alone.
import { describe, expect, it } from 'vitest';
import { DEFAULTS, runChaos } from '../testing/chaos.ts';

describe('server chaos (loopback, bounded)', () => {
  it('valid, malformed, oversize, disconnecting and bursting clients: exact texts, no leak, no crash', async () => {
    const r = await runChaos({ ...DEFAULTS, seed: 7, requests: 40, rounds: 2, deadlineS: 100, requestTimeoutMs: 30_000 });
    expect(r.failures).toEqual([]);
    expect(r.crashes).toBe(0);
    expect(r.leaks).toBe(0);
    expect(r.health).toBe(true);
    expect(r.kv.free).toBe(r.kv.total);
    // the sample covers what it claims to
    for (const k of ['exact', 'cancelled', 'rejected_as_expected', 'queue_full', 'raw_cut']) expect(r.outcomes[k] ?? 0, k).toBeGreaterThan(0);
    expect(r.serverRequests.cancelled ?? 0).toBeGreaterThan(0);
    for (const f of ['schema', 'tool']) // schema-constrained and forced-tool requests were among the exact ones
      expect(Object.entries(r.counts).filter(([k]) => k.endsWith(`-${f}`)).reduce((a, [, o]) => a + (o.exact ?? 0), 0), f).toBeGreaterThan(0);
  }, 120_000);
});
