"""Quality of a model on vectors: reconstruction error at every prefix rate, and search recall.

MSE is the squared L2 error summed over dimensions and averaged over vectors, in the data's own
units. Relative MSE divides it by the mean squared distance of the vectors to their mean (the
error of storing nothing but the mean). Cosine is the mean cosine similarity of each vector and
its reconstruction. `prefix_quality` is what a .qnc file's quality report holds (SPEC.md 5.2). R@k is the fraction of queries whose true nearest
neighbour (gt[:, 0]) is among the k nearest decoded vectors, found by exact search (`knn`, the
one nearest-neighbour search of the package: the GloVe ground truth comes from it too).
"""
import numpy as np
import torch

from .errors import InputError
from .validation import as_float_matrix

SEARCH_FLOATS = 1 << 25   # float64 distances computed at once (256 MB): bounds the query block


def mse(x, recon):
    """Mean over rows of the squared L2 error."""
    return float(((np.asarray(x, dtype=np.float64) - recon) ** 2).sum(1).mean()) if len(x) else 0.0


def cosine(x, recon):
    """Mean over rows of the cosine similarity of x and recon; a pair with a zero row counts 1
    when both rows are zero, else 0."""
    if not len(x):
        return 0.0
    x = np.asarray(x, dtype=np.float64)
    recon = np.asarray(recon, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(recon, axis=1)
    both_zero = (~x.any(1)) & (~recon.any(1))
    cos = np.where(norms > 0, (x * recon).sum(1) / np.where(norms > 0, norms, 1.0),
                   both_zero.astype(np.float64))
    return float(cos.mean())


def report_steps(M):
    """The prefix lengths a quality report measures: every power of two below M, then M."""
    steps, m = [], 1
    while m < M:
        steps.append(m)
        m *= 2
    return steps + [M]


def prefix_quality(model, x, codes, device="auto", offsets=None):
    """Per prefix length m of report_steps(codes' columns), the error of decoding x's codes from
    their first m columns: a list of {steps, bytes_per_vector, mse, rel_mse, cosine}. With
    `offsets` (n, d), x and the codes are of residuals to them (IVF-QINCo): the figures are of
    the vectors x + offsets and their reconstructions decode + offsets."""
    if offsets is not None:
        x = x + offsets
    var = variance(x) if len(x) else 0.0
    rows = []
    for m in report_steps(codes.shape[1]):
        recon = model.decode(codes[:, :m], device=device)
        if offsets is not None:
            recon += offsets
        err = mse(x, recon)
        rows.append({"steps": m, "bytes_per_vector": m * model.bytes_per_code, "mse": err,
                     "rel_mse": err / var if var else 0.0, "cosine": cosine(x, recon)})
    return rows


def variance(x):
    """Mean squared distance of the rows of x to their mean."""
    x = np.asarray(x, dtype=np.float64)
    return float(((x - x.mean(0)) ** 2).sum(1).mean())


def knn(database, queries, k):
    """Row numbers (nq, k) of the k exact L2 nearest database rows of each query, nearest first,
    ties broken by the smaller row number.

    Candidates are found with float64 matrix products (torch, for speed), then re-ranked with
    directly computed float64 distances, so that equal vectors get equal distances and neither
    the order nor the result depends on how the BLAS library (or the thread count) splits the
    product.
    """
    if not 1 <= k <= len(database):
        raise InputError(f"k must be between 1 and the {len(database)} base vectors, got {k}")
    base64 = torch.from_numpy(np.ascontiguousarray(database, dtype=np.float64))
    base_norms = (base64 * base64).sum(1)
    block = max(1, min(1024, SEARCH_FLOATS // len(database)))
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + block], dtype=np.float64))
        approx = (q * q).sum(1, keepdim=True) - 2 * q @ base64.T + base_norms
        kth = approx.topk(k, dim=1, largest=False).values[:, -1:]
        within = (approx <= kth + 1e-9 * (1 + kth.abs())).numpy()
        for row, candidates in enumerate(within):
            ids[start + row] = _rerank(database, queries[start + row], np.flatnonzero(candidates), k)
    return ids


def _rerank(database, query_row, candidates, k):
    """The k candidates nearest to `query_row` by exact float64 distance, then by row number."""
    diff = database[candidates].astype(np.float64) - np.asarray(query_row, dtype=np.float64)
    distances = (diff * diff).sum(1)
    return candidates[np.lexsort((candidates, distances))[:k]]


def recalls(decoded, queries, gt, ks=(1, 10)):
    """{R@k: fraction of queries whose gt[:, 0] is among the k nearest decoded vectors}."""
    found = knn(decoded, queries, min(max(ks), len(decoded)))
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
