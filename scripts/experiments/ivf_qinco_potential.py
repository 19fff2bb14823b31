"""What would IVF-QINCo (codes of the residual to the row's coarse centroid) buy at 8 B?

faiss IVF-RQ passes its own exhaustive ceiling because its codes are residuals to the list's
centroid: the list a row sits in carries log2(nlist) bits no code byte pays for. Our lists only
filter rows. This measures, without any file format, what the same trick gives a QINCo model:
k-means centroids on the training set, a model trained on the training residuals x - c(x), the
base encoded as residuals and decoded as c + x̂, then an exact search over those reconstructions
(every row: the ceiling an IVF search approaches as nprobe grows) against the plain model of the
same rate trained the same way on x. Recall against the ground truth of the original vectors.

    python scripts/experiments/ivf_qinco_potential.py --data-dir out/minilm384 --bytes 8 \\
        --nlist 1024 --epochs 20 --out docs/experiments/2026-12-03-ivf-qinco-potential.json
"""
import argparse
import json
import os
import time

import numpy as np


def recalls(recon, queries, gt, ks=(1, 10, 100)):
    """R@k: share of queries whose true nearest neighbour (gt[:, 0]) is in the k nearest rows of
    recon (exact L2 over every row)."""
    import torch
    q, x = torch.from_numpy(queries), torch.from_numpy(recon)
    d2 = (q * q).sum(1, keepdim=True) - 2 * q @ x.T + (x * x).sum(1)[None]
    top = torch.topk(d2, max(ks), dim=1, largest=False).indices.numpy()
    return {f"R@{k}": float((top[:, :k] == gt[:, :1]).any(1).mean()) for k in ks}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="out/minilm384")
    ap.add_argument("--bytes", type=int, default=8)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch

    from qinco_codec import train
    from qinco_codec.search.ivf import assign, train_coarse

    torch.set_num_threads(args.threads)
    load = lambda name: np.ascontiguousarray(np.load(os.path.join(args.data_dir, name)))
    xt, xb, xq, gt = load("train.npy"), load("base.npy"), load("query.npy"), load("gt.npy")
    t0 = time.time()
    centroids = train_coarse(xt, args.nlist, seed=0)                      # (nlist, d)
    ct, cb = centroids[assign(xt, centroids)], centroids[assign(xb, centroids)]
    result = {"nlist": args.nlist, "bytes": args.bytes, "epochs": args.epochs,
              "n_train": len(xt), "n_base": len(xb), "n_queries": len(xq),
              "coarse_seconds": time.time() - t0,
              "centroid_only": {"mse": float(((xb - cb) ** 2).sum(1).mean()), **recalls(cb, xq, gt)}}
    for name, fit_on, offset_b in (("plain", xt, 0.0), ("residual", xt - ct, cb)):
        t0 = time.time()
        model = train(np.ascontiguousarray(fit_on, dtype=np.float32), steps=args.bytes,
                      epochs=args.epochs, seed=0, quiet=True)
        seconds = time.time() - t0
        target = xb - offset_b
        recon = model.decode(model.encode(np.ascontiguousarray(target, dtype=np.float32))) + offset_b
        result[name] = {"train_seconds": seconds, "val_mse": model.config.trained["val_mse"],
                        "mse": float(((xb - recon) ** 2).sum(1).mean()),
                        **recalls(np.ascontiguousarray(recon, dtype=np.float32), xq, gt)}
        print(name, json.dumps(result[name]), flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
