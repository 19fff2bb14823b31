"""Quality of a model on vectors: reconstruction error at every prefix rate, and search recall.

MSE is the squared L2 error summed over dimensions and averaged over vectors, in the data's own
units. Relative MSE divides it by the mean squared distance of the vectors to their mean (the
error of storing nothing but the mean). R@k is the fraction of queries whose true nearest
neighbour (gt[:, 0]) is among the k nearest decoded vectors, found by exhaustive search.
"""
import numpy as np
import torch

from .validation import as_float_matrix

SEARCH_BLOCK = 1024


def mse(x, recon):
    """Mean over rows of the squared L2 error."""
    return float(((np.asarray(x, dtype=np.float64) - recon) ** 2).sum(1).mean()) if len(x) else 0.0


def variance(x):
    """Mean squared distance of the rows of x to their mean."""
    x = np.asarray(x, dtype=np.float64)
    return float(((x - x.mean(0)) ** 2).sum(1).mean())


def knn(database, queries, k):
    """Indices (nq, k) of the k nearest database rows of each query (exact L2, torch)."""
    db = torch.from_numpy(np.ascontiguousarray(database, dtype=np.float32))
    db_sq = (db * db).sum(1)
    out = []
    for s in range(0, len(queries), SEARCH_BLOCK):
        q = torch.from_numpy(np.ascontiguousarray(queries[s:s + SEARCH_BLOCK], dtype=np.float32))
        d = db_sq - 2.0 * (q @ db.T)
        out.append(torch.topk(d, min(k, len(db)), dim=1, largest=False).indices)
    return torch.cat(out).numpy()


def recalls(decoded, queries, gt, ks=(1, 10)):
    """{R@k: fraction of queries whose gt[:, 0] is among the k nearest decoded vectors}."""
    found = knn(decoded, queries, max(ks))
    truth = np.asarray(gt)[:, :1]
    return {f"R@{k}": float((found[:, :k] == truth).any(1).mean()) for k in ks}


def evaluate(model, x, queries=None, gt=None, A=None, B=None, steps=None, device="auto", codes=None):
    """Per-prefix quality of `model` on x: a list of dicts with steps, bytes, mse, rel_mse and,
    when queries and gt are given, R@1 and R@10. Codes are computed once at the full rate (or
    passed in) and every prefix decodes their first m columns, as a reader of a .qnc would."""
    x = as_float_matrix(x, dim=model.dim)
    if codes is None:
        codes = model.encode(x, A=A, B=B, device=device)
    var = variance(x)
    rows = []
    for m in steps or range(1, codes.shape[1] + 1):
        recon = model.decode(codes[:, :m], device=device)
        err = mse(x, recon)
        row = {"steps": m, "bytes": m * model.bytes_per_code, "mse": err, "rel_mse": err / var if var else 0.0}
        if queries is not None and gt is not None:
            row.update(recalls(recon, as_float_matrix(queries, dim=model.dim, name="queries"), gt))
        rows.append(row)
    return rows
