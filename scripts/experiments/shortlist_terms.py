"""How good is the additive shortlist, and would exact per-row norms make it better?

The additive stage (qinco_codec/search) ranks rows by ‖q − a‖² with a = Σ_m C_m[code_m] fitted
to the model's reconstructions x̂; its row term is ‖a‖². This measures, on one file's codes, the
share of each query's exact top-k (by ‖q − x̂‖² over every decoded row) that the additive
shortlist of S rows holds (so what re-ranking can find), for the row term ‖a‖² (what the engine
does) and for the exact ‖x̂‖² (4 bytes a row, computed by decoding every row once), and the
additive decoder's relative error on the rows. Exhaustive (no IVF). Nothing timed.

    python scripts/experiments/shortlist_terms.py MODEL.safetensors BASE.npy QUERIES.npy \\
        [--B 16] [--shortlists 10,20,30,50,100] [--codes CODES.npy]
"""
import argparse
import time

import numpy as np
import torch

import qinco_codec
from qinco_codec.search.engine import fit_for_codes
from qinco_codec.search.lut import lookup_tables, row_sqnorms, scan_all


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("base")
    ap.add_argument("queries")
    ap.add_argument("--B", type=int, default=None, help="encoder beam (default: the model's)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--shortlists", default="10,20,30,50,100")
    ap.add_argument("--codes", default=None, help="codes of BASE (.npy) instead of encoding it")
    args = ap.parse_args()

    model = qinco_codec.load_model(args.model)
    base = np.load(args.base).astype(np.float32)
    q = np.load(args.queries).astype(np.float32)
    t0 = time.time()
    codes = np.load(args.codes) if args.codes else model.encode(base, B=args.B)
    print(f"codes {codes.shape} ({'loaded' if args.codes else f'encoded in {time.time() - t0:.0f} s'})")
    decoded = model.decode(codes)                                        # (n, d)
    C = fit_for_codes(codes, model)                                      # (M, K, d)
    a_sq = row_sqnorms(codes, C)                                         # (n,)
    x_sq = (decoded.astype(np.float64) ** 2).sum(1).astype(np.float32)   # (n,)
    from qinco_codec.search.additive import reconstruct
    a = reconstruct(codes, C)
    err = float(((a - decoded) ** 2).sum(1).mean() / ((decoded - decoded.mean(0)) ** 2).sum(1).mean())
    print(f"additive decoder: relative error {err:.3g} against the decoded rows' variance; "
          f"mean |‖a‖² − ‖x̂‖²| / ‖x̂‖² = {np.mean(np.abs(a_sq - x_sq) / np.maximum(x_sq, 1e-12)):.3g}")
    # exact top-k over the decoded rows
    d2 = (q ** 2).sum(1)[:, None] - 2 * q @ decoded.T + x_sq[None]       # (nq, n)
    top = np.argsort(d2, 1, kind="stable")[:, :args.k]
    tables = lookup_tables(q, C)                                          # (nq, M, K)
    print(f"share of the exact top-{args.k} (over decoded rows) inside the additive shortlist:")
    print("| shortlist | row term ‖a‖² (engine) | exact ‖x̂‖² |")
    print("|---|---|---|")
    for S in map(int, args.shortlists.split(",")):
        got = []
        for terms in (a_sq, x_sq):
            rows = scan_all(tables, codes, S, terms)[1]
            got.append(np.mean([len(set(t) & set(r)) / args.k for t, r in zip(top, rows)]))
        print(f"| {S} | {got[0]:.4f} | {got[1]:.4f} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
