"""Streamed decoding of a large .qnc: rate, and where the time goes (reading vs decoding).

Writes a .qnc of N vectors (default 1M, d=384, qinco2-S, M=16: 16 bytes per vector) holding
random codes and an untrained-but-perturbed model (decoding costs the same whatever the codes
and weights), then decodes it three ways at full rate and at a prefix:
  1. `iter_decode` with the background reader (prefetch) on,
  2. the same with prefetch off (reading and decoding in turn),
  3. the `qinco-decompress` command (progress bar, output .npy written to disk).

    python scripts/examples/bench_stream_decode.py --device cpu --n 1000000
    python scripts/examples/bench_stream_decode.py --device cuda --n 1000000
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import qinco_codec
from qinco_codec.compressor import config_summary
from qinco_codec.formats import QncWriter
from qinco_codec.model import QincoModel
from qinco_codec.serialize import model_to_bytes, sha256_hex


def make_file(path, n, dim, preset, M, chunk_rows, seed=0):
    model = QincoModel.from_preset(preset, dim, M)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    data = model_to_bytes(model)
    rng = np.random.default_rng(seed)
    with QncWriter(path, n=n, dim=dim, source_dtype="float32", K=model.K, M=M,
                   model_sha256=bytes.fromhex(sha256_hex(data)), model_config=config_summary(model),
                   model_bytes=data, chunk_rows=chunk_rows, zstd_level=None) as w:
        for s in range(0, n, chunk_rows):
            w.write_codes(rng.integers(0, model.K, (min(chunk_rows, n - s), M), dtype=np.uint8))
    return model


def stream(path, nbytes, device, prefetch, batch_size):
    with qinco_codec.open(path) as f:
        f.decode(steps=nbytes, rows=slice(0, min(f.n, 4096)), device=device)  # warm-up, model load
        t0 = time.perf_counter()
        rows = sum(len(b) for b in f.iter_decode(steps=nbytes, batch_size=batch_size,
                                                   device=device, prefetch=prefetch))
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        s = f.stream_stats
    return {"rows": rows, "wall": wall, "rate": rows / wall, "read": s["read_seconds"],
            "decode": s["decode_seconds"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--preset", default="qinco2-S")
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--chunk-rows", type=int, default=65536)
    ap.add_argument("--batch-size", type=int, default=65536)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--prefix-bytes", type=int, default=8)
    ap.add_argument("--dir", default=None, help="where to write the .qnc and .npy (default: a temp dir)")
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if device == "auto":
        device = "cpu"
    work = args.dir or tempfile.mkdtemp(prefix="qinco-stream-")
    path = os.path.join(work, "stream.qnc")
    t0 = time.perf_counter()
    model = make_file(path, args.n, args.dim, args.preset, args.M, args.chunk_rows)
    print(f"# wrote {path}: n={args.n:,} dim={args.dim} {args.preset} M={args.M} "
          f"({os.path.getsize(path):,} bytes) in {time.perf_counter() - t0:.1f} s; "
          f"{model.num_parameters(decoding_only=True):,} decoding parameters; device {device}, "
          f"{torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""))
    print(f"{'bytes/vec':>9} {'prefetch':>8} {'vectors/s':>12} {'wall s':>8} {'read s':>8} {'decode s':>9}")
    for nbytes in (args.M, args.prefix_bytes):
        for prefetch in (True, False):
            r = stream(path, nbytes, device, prefetch, args.batch_size)
            print(f"{nbytes:>9} {str(prefetch):>8} {r['rate']:>12,.0f} {r['wall']:>8.2f} "
                  f"{r['read']:>8.2f} {r['decode']:>9.2f}", flush=True)
    if not args.skip_cli:
        out = os.path.join(work, "decoded.npy")
        cmd = [sys.executable, "-m", "qinco_codec.cli.decompress", path, out, "--device", device]
        print("# " + " ".join(["qinco-decompress", path, out, "--device", device]), flush=True)
        subprocess.run(cmd, check=True)
        os.remove(out)
    if not args.dir:
        os.remove(path)
        os.rmdir(work)


if __name__ == "__main__":
    main()
