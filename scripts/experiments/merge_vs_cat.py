"""qinco_codec.merge against `cat` of the same shards (docs/scale-out.md, "Merging").

Writes SHARDS shards of ROWS rows x 16 codes (K=256, random codes: raw planes, as a trained
quantizer's near-uniform codes mostly are) into DIR, then times, ROUNDS times: `cat` of the shards
into one file plus an fsync of it (merge fsyncs its output), `cat` to /dev/null, and
qinco_codec.merge in this process. Prints the load average beside each round. The page cache is
warm after the first write (nothing here drops it).

    nice python scripts/experiments/merge_vs_cat.py /tmp/mergebench --shards 4 --rows 5242880
"""
import argparse
import hashlib
import os
import subprocess
import time

import numpy as np

import qinco_codec
from qinco_codec.formats import QncWriter


def make_shards(directory, shards, rows, chunk_rows=65536):
    rng, paths = np.random.default_rng(0), []
    for i in range(shards):
        path = os.path.join(directory, f"s{i}.qnc")
        with QncWriter(path, n=rows, dim=384, source_dtype="float32", K=256, M=16,
                       model_sha256=hashlib.sha256(b"m").digest(), model_config={},
                       chunk_rows=chunk_rows, zstd_level=0) as w:
            for lo in range(0, rows, chunk_rows * 4):
                w.write_codes(rng.integers(0, 256, (min(chunk_rows * 4, rows - lo), 16),
                                           dtype=np.uint8))
        paths.append(path)
    return paths


def timed(command):
    t = time.monotonic()
    subprocess.run(command, shell=True, check=True)
    return time.monotonic() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--rows", type=int, default=5 * 65536 * 16)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    paths = make_shards(a.dir, a.shards, a.rows)
    size = sum(os.path.getsize(x) for x in paths) / 1e6
    listed = " ".join(paths)
    out, merged = os.path.join(a.dir, "cat.out"), os.path.join(a.dir, "merged.qnc")
    print(f"{a.shards} shards, {size:.1f} MB")
    for _ in range(a.rounds):
        for f in (out, merged):
            if os.path.exists(f):
                os.remove(f)
        load = open("/proc/loadavg").read().split()[:3]
        cat = timed(f"cat {listed} > {out}; sync {out}")
        null = timed(f"cat {listed} > /dev/null")
        s = qinco_codec.merge(paths, merged)
        print(f"load {' '.join(load)}: cat+fsync {cat:.2f} s ({size / cat:.0f} MB/s), cat>/dev/null "
              f"{null:.2f} s ({size / null:.0f} MB/s), merge {s['seconds']:.2f} s "
              f"({size / s['seconds']:.0f} MB/s, {s['chunks_copied']} chunks copied)", flush=True)


if __name__ == "__main__":
    main()
