"""Per-core rates for docs/scale-out.md ("1B vectors at 384-d and 16 B on paper"), in CPU seconds
of one thread (so that a busy machine's load does not enter): training samples per second of
qinco2-S at 16 B (epochs of 4,096 samples after the RQ start, each with a validation of 256), then
encoding vectors per second with the preset's search (A=16, B=32) and greedy (A=16, B=1).

    OMP_NUM_THREADS=1 nice python scripts/experiments/scale_out_rates.py \\
        --train out/minilm384/train.npy --base out/minilm384/base.npy
"""
import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import qinco_codec  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--preset", default="qinco2-S")
    p.add_argument("--steps", type=int, default=16)
    a = p.parse_args()
    x, base = np.load(a.train)[:20000], np.load(a.base)
    print("load", open("/proc/loadavg").read().strip(), flush=True)
    stamps = []
    result = qinco_codec.train(x, preset=a.preset, steps=a.steps, epochs=3, samples_per_epoch=4096,
                               val=256, quiet=True, threads=1, return_history=True,
                               on_epoch=lambda r: stamps.append(time.process_time()))
    for epoch, (t1, t2) in enumerate(zip(stamps[:-1], stamps[1:]), 2):
        print(f"train epoch {epoch}: {4096 / (t2 - t1):.1f} samples per CPU-second", flush=True)
    model = result.model
    for A, B, n in [(16, 32, 96), (16, 1, 1000)]:
        model.encode(base[:8], A=A, B=B)
        t = time.process_time()
        model.encode(base[:n], A=A, B=B)
        print(f"encode A={A} B={B}: {n / (time.process_time() - t):.1f} vectors per CPU-second "
              f"({n} vectors)", flush=True)
    print("load", open("/proc/loadavg").read().strip(), flush=True)


if __name__ == "__main__":
    main()
