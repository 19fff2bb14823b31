"""Peak memory of searching a 1M-vector .qnc (issue 15: the lists, the shortlist tables and the
codes, not the decoded database).

Builds a synthetic file once: N rows of uniformly random codes for a given model (its float16
decode-only copy embedded, as qinco-compress stores it), then inverted lists added with
ivf_file.add_ivf (centroids fitted on decoded rows, every row assigned by its decoding). Then,
in a fresh process for each case, opens the file and searches Q random queries, and reports the
peak resident memory (VmHWM) before the search (imports, the file opened, the model loaded),
after building the search index (codes read, additive codebooks fitted) and after the
search, beside the size of the decoded database (N x d float32). Random codes: what is
measured is memory, not recall.

    python scripts/experiments/search_memory.py MODEL.safetensors --n 1000000 --out out/mem
"""
import argparse
import binascii
import json
import os
import subprocess
import sys
import time

import numpy as np


def vm_hwm_mib():
    """Peak resident set of this process so far (MiB), from /proc/self/status."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(model_path, path, n, nlist, seed):
    import qinco_codec
    from qinco_codec.compressor import config_summary
    from qinco_codec.formats.writer import QncWriter
    from qinco_codec.ivf_file import add_ivf
    from qinco_codec.serialize import model_to_bytes, sha256_hex

    model = qinco_codec.load_model(model_path)
    data = model_to_bytes(model, "float16", decode_only=True)
    rng = np.random.default_rng(seed)
    plain = path + ".plain.qnc"
    with QncWriter(plain, n=n, dim=model.dim, source_dtype="float32", K=model.K, M=model.M,
                   model_sha256=binascii.unhexlify(sha256_hex(data)),
                   model_config=config_summary(model), model_bytes=data, zstd_level=0) as w:
        for s in range(0, n, 65536):
            w.write_codes(rng.integers(0, model.K, (min(65536, n - s), model.M), dtype=np.uint8))
    t0 = time.time()
    summary = add_ivf(plain, nlist, out=path, quiet=False)
    os.remove(plain)
    summary["ivf_seconds"] = time.time() - t0
    return summary


def measure(path, queries, k, nprobe, shortlist, steps):
    """In this (fresh) process: peak memory before and after one search; printed as JSON."""
    import qinco_codec
    with qinco_codec.open(path) as f:
        f.model  # noqa: B018 - load it before the baseline
        before = vm_hwm_mib()
        q = np.random.default_rng(1).standard_normal((queries, f.dim)).astype(np.float32)
        t0 = time.time()
        f.search_index(steps)      # the codes read, the additive codebooks fitted, the lists
        index_seconds, index_peak = time.time() - t0, vm_hwm_mib()
        t0 = time.time()
        D, I = f.search(q, k=k, nprobe=nprobe, shortlist=shortlist, steps=steps)
        seconds = time.time() - t0
        print(json.dumps({"n": f.n, "dim": f.dim, "M": f.M, "nprobe": nprobe, "shortlist": shortlist,
                          "steps": steps, "queries": queries, "file_bytes": os.path.getsize(path),
                          "peak_mib_before_search": before, "peak_mib_after_index": index_peak,
                          "peak_mib_after_search": vm_hwm_mib(), "index_seconds": index_seconds,
                          "decoded_database_mib": f.n * f.dim * 4 / 2 ** 20,
                          "search_seconds": seconds, "found": int((I >= 0).sum())}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", default="out/search-memory")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)   # the child's own mode
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        nprobe, shortlist, steps = json.loads(args.case)
        return measure(args.measure, args.queries, 10, nprobe, shortlist, steps)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"synthetic-{args.n}.qnc")
    if not os.path.exists(path):
        print(json.dumps(build(args.model, path, args.n, args.nlist, 0)), flush=True)
    for case in ([32, 100, None], [32, 100, 8], [128, 100, None]):
        out = subprocess.run([sys.executable, __file__, "--measure", path, "--case", json.dumps(case),
                              "--queries", str(args.queries)], capture_output=True, text=True, check=True)
        print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
