#!/usr/bin/env python3
"""The instruction mix and the stall reasons of one profiled GEMM launch, per k-tile and warp, from ncu's per-SASS-line
CSV (`ncu --import X.ncu-rep --page source --csv --print-source sass`, gzipped or not): what NOTES-gemm.md's v8 section
reads (483 instructions per consumer warp per k-tile, 256 of them the epilogue; stalls wait 21%, barrier 16%, ...).

  python3 bench/gemm/ncu_mix.py bench/results/gemm-2026-12-03-h200-s7-lab/call2_ncu_I_source.csv.gz \
      --ktiles 57344 --warps 8

--ktiles: CTAs x k-tiles per CTA of the launch (8B gate_up at M = 1024: 1,792 CTAs x 32); --warps: consumer warps per
CTA (the per-k-tile counts are divided by both). Opcodes are grouped by their first dot-separated part.
"""
import argparse
import collections
import csv
import gzip
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--ktiles", type=float, required=True)
    ap.add_argument("--warps", type=float, default=8)
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    f = gzip.open(a.csv, "rt") if a.csv.endswith(".gz") else open(a.csv)
    rows = list(csv.reader(f))
    head = next(i for i, r in enumerate(rows) if "Source" in r and "Instructions Executed" in r)
    h, body = rows[head], rows[head + 1:]
    ie, src = h.index("Instructions Executed"), h.index("Source")
    stalls = [i for i, c in enumerate(h) if c.startswith("stall_") and "Not Issued" not in c]
    mix, st = collections.Counter(), collections.Counter()
    for r in body:
        if len(r) <= max(ie, src):
            continue
        words = r[src].split()
        if not words:
            continue
        op = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
        mix[op.split(".")[0]] += int(r[ie] or 0)
        for i in stalls:
            st[h[i]] += int(r[i] or 0)
    per = a.ktiles * a.warps
    total = sum(mix.values()) / per
    print(f"{total:.0f} instructions per warp per k-tile")
    for op, n in mix.most_common(a.top):
        print(f"  {op:12} {n / per:7.1f}")
    s = sum(st.values()) or 1
    print("stall samples:", ", ".join(f"{c[6:]} {100 * n / s:.1f}%" for c, n in st.most_common(8)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
