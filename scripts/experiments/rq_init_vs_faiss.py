"""Compare our residual k-means start with faiss's ResidualQuantizer trained the same way.

Both are greedy with plain k-means per step (qinco_codec.rq_init against faiss with train_type 0
and beam 1); the MSE after every step is printed on the training vectors and on vectors neither saw.

A diagnostic for the RQ start of every model: it printed the per-step MSE that showed our start
falling behind faiss's after about 6 steps at d=384
(docs/experiments/2026-11-25-minilm384-probes-and-rq-start.md).

    python scripts/experiments/rq_init_vs_faiss.py --train out/minilm384/train.npy --base out/minilm384/base.npy --M 16
"""
import argparse

import faiss
import numpy as np
import torch

from qinco_codec.rq_init import nearest, residual_kmeans


def prefix_errors(x, codebooks):
    """MSE after each step of greedy encoding of x with these codebooks."""
    r, errs = torch.from_numpy(np.ascontiguousarray(x)).clone(), []
    for cb in codebooks:
        idx, _ = nearest(r, cb)
        r -= cb[idx]
        errs.append(round(float(r.square().sum(1).mean()), 4))
    return errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--M", type=int, default=16)
    ap.add_argument("--iters", type=int, default=25, help="k-means iterations (faiss's default is 25)")
    ap.add_argument("--n-eval", type=int, default=5000)
    args = ap.parse_args()
    xt, xb = np.load(args.train).astype(np.float32), np.load(args.base)[:args.n_eval].astype(np.float32)
    ours = residual_kmeans(torch.from_numpy(xt.copy()), args.M, 256, args.iters, 0)
    rq = faiss.ResidualQuantizer(xt.shape[1], args.M, 8)
    rq.max_beam_size, rq.train_type = 1, 0  # greedy, plain k-means per step: the same algorithm
    rq.cp.niter = args.iters
    rq.train(xt)
    theirs = [torch.from_numpy(c) for c in
              faiss.vector_to_array(rq.codebooks).reshape(args.M, 256, xt.shape[1])]
    for name, x in (("train", xt), ("base", xb)):
        print(f"ours  {name}: {prefix_errors(x, ours)}")
        print(f"faiss {name}: {prefix_errors(x, theirs)}")


if __name__ == "__main__":
    main()
