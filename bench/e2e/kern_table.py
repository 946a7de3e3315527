#!/usr/bin/env python3
"""Per-kernel GPU time of one decode step from ncu's CSV (device/s9.sh part `kern`: `ncu --csv --metrics
gpu__time_duration.sum` over a `comet bench e2e` run). Steps end at the classifier (a kernel whose name contains END,
default gemm_f16w); the second complete step is tabulated (the first may carry one-time effects), each kernel's calls
and total, and the step's kernel sum, which against the CUDA-graph step time of the same bench is the launch overhead.
Usage: kern_table.py kern.csv [END]"""
import collections
import csv
import sys


def main() -> None:
    path, end = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else 'gemm_f16w')
    with open(path, newline='') as f:
        rows = list(csv.reader(line for line in f if line.startswith('"')))
    hdr, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    ki, vi, ui = hdr.index('Kernel Name'), hdr.index('Metric Value'), hdr.index('Metric Unit')
    scale = {'ns': 1e-3, 'nsecond': 1e-3, 'us': 1.0, 'usecond': 1.0, 'ms': 1e3, 'msecond': 1e3}
    ks = [(r[ki].split('(')[0].replace('void ', '').strip(), float(r[vi].replace(',', '')) * scale[r[ui]]) for r in body]
    ends = [i for i, (n, _) in enumerate(ks) if end in n]
    if len(ends) < 2:
        sys.exit(f'{path}: fewer than two complete steps (kernels named *{end}*: {len(ends)} of {len(ks)} rows)')
    step = ks[ends[0] + 1:ends[1] + 1]
    agg: 'collections.OrderedDict[str, list[float]]' = collections.OrderedDict()
    for n, us in step:
        a = agg.setdefault(n, [0, 0.0])
        a[0] += 1
        a[1] += us
    total = sum(us for _, us in step)
    print(f'one step: {len(step)} kernels, {total / 1e3:.3f} ms of kernel time (ncu, each kernel alone)')
    print('| kernel | calls | ms | µs a call | share |\n| --- | --- | --- | --- | --- |')
    for n, (c, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f'| {n[:70]} | {c} | {us / 1e3:.3f} | {us / c:.2f} | {100 * us / total:.0f}% |')


if __name__ == '__main__':
    main()
