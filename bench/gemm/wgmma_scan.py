#!/usr/bin/env python3
"""Does ptxas pipeline v7/v8's wgmma? Counts, per gemm_v7 / gemm_v8 function of an sm_90a cubin, the IGMMA instructions and the
WARPGROUP.ARRIVE / WARPGROUP.DEPBAR (wait) between them, from the raw SASS words (the CPU machine has no cuobjdump):
`AGGGGD` = one arrive, four wgmma in flight, one wait (pipelined); `AGDAGDAGDAGD` = a wait after every wgmma
(serialized: ptxas reused the A-fragment registers, or a C7520 "WG.AR in divergent path"). Opcodes read off
`cuobjdump -sass` of the same kernels on the GPU machine (2026-12-02): IGMMA low bits 0xdf1, WARPGROUP.* 0x9c5 with bit
47 set for DEPBAR.
  nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -cubin cuda/gemm_w4ax_sm90.cu -o /tmp/v7.cubin
  python3 bench/gemm/wgmma_scan.py /tmp/v7.cubin
"""
import re, struct, subprocess, sys

path = sys.argv[1]
data = open(path, "rb").read()
sections = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True, check=True).stdout
for line in sections.split("\n"):
    m = re.search(r"\]\s+(\.text\.\S+)\s+\S+\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
    if not m or not re.search(r"gemm_v[78]", m.group(1)):
        continue
    off, size = int(m.group(2), 16), int(m.group(3), 16)
    seq = []
    for i in range(off, off + size, 16):
        w = struct.unpack("<Q", data[i:i + 8])[0]
        if w & 0xFFF == 0xDF1:
            seq.append("G")
        elif w & 0xFFF == 0x9C5:
            seq.append("D" if (w >> 47) & 1 else "A")
    name = re.sub(r".*gemm_v([78])ILi(\d+)ELb(\d).*", r"gemm_v\1<\2, \3>", m.group(1))
    print(f"{name}: {''.join(seq)}  ({'pipelined' if ''.join(seq).count('D') <= 1 else 'SERIALIZED'})")
