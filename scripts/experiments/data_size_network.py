"""MSE against training-set size and network size at a fixed compute (issue 13: data or compute?).

Trains the default preset's network and smaller ones (narrower projections and hidden layers, or
one step network shared by all steps) for the same number of epochs of the same size (so the
same optimiser steps, whatever the training-set size) on nested seeded samples of a training
set, and measures each model on held-out vectors with its default encoder. Also records the
training-batch MSE of the last epoch, the validation MSE of the RQ start and the best one (the
gaps say how much training gained and how much the network fits its training vectors), the parameter count and the float16 decode-only model bytes.
One JSON line per (n, shape) to --out; existing lines are kept and skipped (resumable).

    OMP_WAIT_POLICY=PASSIVE nice .venv/bin/python scripts/experiments/data_size_network.py \\
        --train out/minilm384-curve/train75k.npy --eval out/minilm384-curve/eval25k.npy \\
        --sizes 12500,75000 --shapes narrow,shared --epochs 20 --steps 16 \\
        --out docs/experiments/2026-12-03-data-size-minilm384/shapes.jsonl
"""
import argparse
import json
import os
import time

import numpy as np

from qinco_codec.bench.common import sample_training

# Shape overrides of the default preset (qinco2-XS: embed 64, hidden 128, L=2, a network per step).
SHAPES = {
    "default": {},
    "narrow": {"embed": 32, "hidden": 64},
    "shared": {"share_steps": True},
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--eval-size", type=int, default=10_000)
    ap.add_argument("--sizes", required=True, help="training-set sizes, comma-separated")
    ap.add_argument("--shapes", default="default,narrow,shared")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from qinco_codec import train
    from qinco_codec.serialize import model_to_bytes

    torch.set_num_threads(args.threads)
    pool = np.load(args.train, mmap_mode="r")
    held = np.ascontiguousarray(np.load(args.eval, mmap_mode="r")[:args.eval_size], dtype=np.float32)
    done = set()
    if os.path.exists(args.out):
        done = {(r["n_train"], r["shape"]) for r in map(json.loads, open(args.out))}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    for n in (int(s) for s in args.sizes.split(",")):
        x = np.ascontiguousarray(sample_training(pool, n, 0), dtype=np.float32)
        for shape in args.shapes.split(","):
            if (n, shape) in done:
                continue
            t0 = time.time()
            model, history = train(x, steps=args.steps, epochs=args.epochs, seed=0, quiet=True,
                                   return_history=True, **SHAPES[shape])
            seconds = time.time() - t0
            codes = model.encode(held)
            mse = float(((model.decode(codes) - held) ** 2).sum(1).mean())
            last = history[-1] if history else {}
            row = {"n_train": n, "shape": shape, "overrides": SHAPES[shape], "epochs": sum(1 for h in history if "train_mse" in h),
                   "train_seconds": round(seconds, 1), "mse_heldout": mse,
                   "train_batch_mse_last": last.get("train_mse"),
                   "start_val_mse": history[0]["val_mse"] if history else None, "best_val_mse": min(
                       (h["val_mse"] for h in history if h.get("val_mse") is not None), default=None),
                   "params": sum(p.numel() for p in model.parameters()),
                   "bytes_f16_decode_only": len(model_to_bytes(model, weight_dtype="float16", decode_only=True))}
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
