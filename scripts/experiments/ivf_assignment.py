"""Which vector of a row to put in an inverted list at compress time: its original or its decoding?

One set of coarse centroids (k-means on the GloVe-50 training vectors) and one compressed file;
the file is rewritten twice with an ivf section (SPEC.md 5.3), rows assigned from the original
vectors and from the decoded ones, and searched (QncFile.search) at several nprobe against the
exact neighbours of the original vectors. README, "Inverted lists", reports the result.

    python scripts/experiments/ivf_assignment.py MODEL.safetensors [--n 100000] [--nlist 256]
"""
import argparse
import pathlib
import tempfile
import time

import numpy as np

import qinco_codec
from qinco_codec import datasets
from qinco_codec.formats.ivf import IvfSection
from qinco_codec.ivf_file import rewrite_with_ivf
from qinco_codec.search.ivf import assign, train_coarse


def recall_at(I, gt, k):
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, gt)]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--n", type=int, default=100_000, help="base vectors")
    ap.add_argument("--nlist", type=int, default=256)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    base = datasets.glove50("base")[:args.n]
    queries = datasets.glove50("query")[:1000]
    d2 = (queries ** 2).sum(1)[:, None] - 2 * queries @ base.T + (base ** 2).sum(1)[None]
    gt = np.argsort(d2, 1)[:, :10]
    centroids = train_coarse(datasets.glove50("train")[:100_000], args.nlist, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        plain = pathlib.Path(tmp) / "plain.qnc"
        t0 = time.time()
        qinco_codec.compress(base, plain, args.model, quiet=True, report=False)
        print(f"compressed {args.n:,} vectors in {time.time() - t0:.0f} s")
        with qinco_codec.open(plain) as f:
            decoded = f.decode()
        for how, vectors in (("original", base), ("decoded", decoded)):
            path = pathlib.Path(tmp) / f"{how}.qnc"
            rewrite_with_ivf(plain, path, IvfSection(centroids, assign(vectors, centroids)))
            with qinco_codec.open(path) as f:
                cells = []
                for nprobe in [*args.nprobe, args.nlist]:
                    _, I = f.search(queries, k=10, nprobe=nprobe)
                    cells.append(f"nprobe={nprobe}: R@1 {recall_at(I, gt, 1):.3f} "
                                 f"10-R@10 {recall_at(I, gt, 10):.4f}")
            print(f"{how:8s} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
