// The import graph (testing/imports.ts): no cycles, and imports between top folders point down the layers
// (simulator ← backends ← src ← testing ← test / bench / scripts / web), so test/ and bench/ never import each
// other and the product never imports a test or a benchmark.
import { describe, expect, it } from 'vitest';
import { importCycles, importGraph, KNOWN_CYCLES, LAYERS, upwardImports } from '../testing/imports.ts';


describe('imports', () => {
  const g = importGraph();

  it('the graph is read (every top folder has files, relative imports resolve)', () => {
    for (const d of ['simulator', 'backends', 'src', 'testing', 'test', 'bench']) expect(g.files.some((f) => f.startsWith(`${d}/`)), d).toBe(true);
    expect(g.edges.get('test/imports.test.ts')).toContain('testing/imports.ts');
    expect(Object.keys(LAYERS)).toContain('testing');
  });

  it('no upward imports between top folders', () => {
    expect(upwardImports(g)).toEqual([]);
  });

  it('no import cycles', () => {
    const cycles = importCycles(g).map((c) => c.join(' <-> '));
    const stale = Object.keys(KNOWN_CYCLES).filter((k) => !cycles.includes(k));
    if (stale.length) console.warn(`test/imports.test.ts KNOWN_CYCLES entries that no longer occur (delete them): ${stale.join('; ')}`);
    expect(cycles.filter((c) => !(c in KNOWN_CYCLES))).toEqual([]);
  });

  it('the checker sees a cycle and an upward edge when there is one', () => {
    const fake = { files: ['src/a.ts', 'src/b.ts', 'simulator/c.ts'], edges: new Map([['src/a.ts', new Set(['src/b.ts'])], ['src/b.ts', new Set(['src/a.ts'])], ['simulator/c.ts', new Set(['src/a.ts'])]]) };
    expect(importCycles(fake)).toEqual([['src/a.ts', 'src/b.ts']]);
    expect(upwardImports(fake)).toEqual(['simulator/c.ts -> src/a.ts']);
  });
});
