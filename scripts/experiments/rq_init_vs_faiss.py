"""Compare our residual k-means start with faiss's ResidualQuantizer, step by step.

Ours (qinco_codec.rq_init) against faiss trained greedily (beam 1) with plain k-means per step
(train_type 0: the same algorithm) and with its progressive-dimension k-means (train_type 1); the
MSE after every step on the training vectors and on vectors none of them saw, as Markdown tables.
With --beam B (> 1) every method is trained for and encoded by a beam of B: ours is
rq_init.beam_residual_kmeans, faiss's ResidualQuantizer has max_beam_size = B in training and
encoding (its default use), and the MSE after m steps is that of a B-beam search over the first m.

    python scripts/experiments/rq_init_vs_faiss.py --train out/minilm384/train.npy --base out/minilm384/base.npy --M 16
    python scripts/experiments/rq_init_vs_faiss.py --train out/minilm384/train.npy --base out/minilm384/base.npy --M 16 --beam 5
"""
import argparse
import time

import faiss
import numpy as np
import torch

from qinco_codec.rq_init import beam_residual_kmeans, beam_step, nearest, residual_kmeans


def prefix_errors(x, codebooks):
    """MSE after each step of greedy encoding of x with these codebooks."""
    r, errs = x.clone(), []
    for cb in codebooks:
        idx, _ = nearest(r, cb)
        r -= cb[idx]
        errs.append(float(r.square().sum(1).mean()))
    return errs


def beam_prefix_errors(x, codebooks, beam):
    """MSE after each step of a beam search of x with these codebooks (the best hypothesis)."""
    r, e, errs = x.unsqueeze(1).clone(), (x * x).sum(1, keepdim=True), []
    for cb in codebooks:
        r, e = beam_step(r, e, cb, min(beam, r.shape[1] * len(cb)))
        errs.append(float(e[:, 0].mean()))
    return errs


def faiss_codebooks(xt, M, K, iters, train_type, beam=1):
    rq = faiss.ResidualQuantizer(xt.shape[1], M, int(np.log2(K)))
    rq.max_beam_size, rq.train_type = beam, train_type
    rq.cp.niter = iters
    rq.train(xt.numpy())
    return [torch.from_numpy(c) for c in faiss.vector_to_array(rq.codebooks).reshape(M, K, xt.shape[1])]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--K", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10, help="k-means iterations (ours: 10)")
    ap.add_argument("--n-eval", type=int, default=5000)
    ap.add_argument("--beam", type=int, default=1, help="beam of training and encoding (1: greedy)")
    args = ap.parse_args()
    xt = torch.from_numpy(np.ascontiguousarray(np.load(args.train), dtype=np.float32))
    xb = torch.from_numpy(np.ascontiguousarray(np.load(args.base)[:args.n_eval], dtype=np.float32))
    runs, seconds = {}, {}
    B = args.beam
    ours = ((lambda: residual_kmeans(xt, args.M, args.K, args.iters, 0)) if B == 1 else
            (lambda: beam_residual_kmeans(xt, args.M, args.K, B, args.iters, 0)))
    for name, fit in (("ours", ours),
                      ("faiss RQ, plain k-means", lambda: faiss_codebooks(xt, args.M, args.K, args.iters, 0, B)),
                      ("faiss RQ, progressive-dim", lambda: faiss_codebooks(xt, args.M, args.K, args.iters, 1, B))):
        t0 = time.perf_counter()
        runs[name] = fit()
        seconds[name] = time.perf_counter() - t0
    names = list(runs)
    print(f"{len(xt):,} training vectors of d={xt.shape[1]}, {len(xb):,} held-out; K={args.K}, "
          f"{args.iters} k-means iterations, " + ("greedy" if B == 1 else f"beam {B}") + "; seconds: "
          + ", ".join(f"{n} {s:.0f}" for n, s in seconds.items()))
    for split, x in (("training vectors", xt), ("held-out vectors", xb)):
        table = {n: prefix_errors(x, runs[n]) if B == 1 else beam_prefix_errors(x, runs[n], B)
                 for n in names}
        print(f"\nMSE on the {split}\n\n| step | " + " | ".join(names) + " | ours / plain |")
        print("|---" * (len(names) + 2) + "|")
        for m in range(args.M):
            print(f"| {m + 1} | " + " | ".join(f"{table[n][m]:.4f}" for n in names)
                  + f" | {table['ours'][m] / table[names[1]][m]:.3f} |")


if __name__ == "__main__":
    main()
